"""The event-type catalogue and its payload schemas."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.event_types import (
    EVENT_CATEGORY,
    PAYLOAD_SCHEMAS,
    SEED_EVENT_TYPES,
    TERMINAL_RUN_EVENT_TYPES,
    EventCategory,
    EventType,
    event_types_in,
    validate_event,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

# Spec section 2.1, written out independently: type -> category.
SEED_CATALOGUE = {
    "session_created": "session",
    "session_started": "session",
    "session_paused": "session",
    "session_resumed": "session",
    "session_completed": "session",
    "session_failed": "session",
    "session_cancelled": "session",
    "run_started": "run",
    "run_completed": "run",
    "run_failed": "run",
    "run_cancelled": "run",
    "run_timeout": "run",
    "message_sent": "message",
    "message_received": "message",
    "message_streamed": "message",
    "tool_call_started": "tool",
    "tool_call_completed": "tool",
    "tool_call_failed": "tool",
    "error_occurred": "error",
    "error_recovered": "error",
    "token_usage_updated": "usage",
    "turn_completed": "usage",
    "workspace_snapshot_taken": "workspace",
    "workspace_diff_computed": "workspace",
    "policy_violation": "policy",
}
ASM_ADDITIONS = {
    "session_compacted": "session",
    "session_forked": "session",
    "events_pruned": "session",
    "run_requeued": "run",
}
CATALOGUE = {**SEED_CATALOGUE, **ASM_ADDITIONS}

PRUNED: dict[str, Any] = {
    "run_id": "run_1",
    "from_sequence": 1,
    "to_sequence": 10,
    "pruned_count": 10,
    "pruned_type": "message_streamed",
    "reason": "retention",
}

# The smallest valid payload of each type.
MINIMAL = {
    "session_created": {},
    "session_started": {},
    "session_paused": {},
    "session_resumed": {},
    "session_completed": {},
    "session_failed": {"error_code": "provider_error", "error_message": "boom"},
    "session_cancelled": {},
    "session_compacted": {"summary": "so far", "from_sequence": 1, "to_sequence": 40},
    "session_forked": {"source_session_id": "ses_1", "at_sequence": 0},
    "events_pruned": PRUNED,
    "run_started": {},
    "run_completed": {},
    "run_failed": {"error_code": "policy_violation"},
    "run_cancelled": {},
    "run_requeued": {"attempt": 1, "reason": "worker_lost"},
    "run_timeout": {},
    "message_sent": {"role": "user", "content": "hi"},
    "message_received": {"content": "hello"},
    "message_streamed": {"delta": "he"},
    "tool_call_started": {"tool_call_id": "t1", "tool_name": "bash", "tool_input": {}},
    "tool_call_completed": {"tool_call_id": "t1", "tool_name": "bash", "tool_output": "ok"},
    "tool_call_failed": {"tool_call_id": "t1", "tool_name": "bash"},
    "error_occurred": {"error_code": "sdk_error", "error_message": "crashed"},
    "error_recovered": {},
    "token_usage_updated": {},
    "turn_completed": {},
    "workspace_snapshot_taken": {"label": "before", "backend": "git", "ref": "abc123"},
    "workspace_diff_computed": {
        "files_changed": 2,
        "insertions": 10,
        "deletions": 3,
        "has_patch": True,
    },
    "policy_violation": {
        "policy": "prod",
        "kind": "tool_denied",
        "action": "cancel",
        "details": {"tool": "bash"},
    },
}

# Payloads with every declared field filled in (as emitters send them).
FULL = {
    "session_created": {"provider": "echo"},
    "session_paused": {"reason": "user"},
    "session_resumed": {"reason": "user"},
    "session_cancelled": {"reason": "user"},
    "run_started": {"model": "claude-haiku", "agent_id": "a1", "run_status": "running"},
    "run_completed": {"stop_reason": "end_turn", "token_usage": {"input_tokens": 3}},
    "run_failed": {"error_code": "provider_error", "error_message": "boom"},
    "run_cancelled": {"reason": "requested"},
    "run_timeout": {"timeout_ms": 1000},
    "message_received": {"content": "hello", "role": "assistant"},
    "message_streamed": {"delta": "he", "content": "he"},
    "tool_call_completed": {
        "tool_call_id": "t1",
        "tool_name": "bash",
        "tool_input": {"cmd": "ls"},
        "tool_output": {"stdout": "a\nb"},
    },
    "tool_call_failed": {
        "tool_call_id": "t1",
        "tool_name": "bash",
        "is_error": True,
        "tool_output": "denied",
        "error": "permission denied",
    },
    "error_recovered": {"error_code": "provider_timeout"},
    "token_usage_updated": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "total_tokens": 15,
    },
    "turn_completed": {"turn": 1},
}

# (type, payload) pairs that must be rejected: missing required fields and wrong types.
INVALID = [
    ("session_created", {"provider": 1}),
    ("session_failed", {"error_code": "x"}),
    ("session_failed", {"error_code": 1, "error_message": "x"}),
    ("session_compacted", {"summary": "s", "from_sequence": 1}),
    ("session_compacted", {"summary": "s", "from_sequence": 5, "to_sequence": 4}),
    ("session_compacted", {"summary": "s", "from_sequence": -1, "to_sequence": 4}),
    ("session_compacted", {"summary": 3, "from_sequence": 1, "to_sequence": 4}),
    ("session_forked", {"source_session_id": "ses_1"}),
    ("session_forked", {"source_session_id": "ses_1", "at_sequence": True}),
    ("session_forked", {"source_session_id": "ses_1", "at_sequence": "3"}),
    ("events_pruned", {"from_sequence": 1, "to_sequence": 10}),
    ("events_pruned", {**PRUNED, "pruned_count": -1}),
    ("events_pruned", {**PRUNED, "from_sequence": 11}),
    ("events_pruned", {**PRUNED, "run_id": None}),
    ("events_pruned", {**PRUNED, "stream": ["not", "a", "dict"]}),
    ("run_completed", {"stop_reason": 5}),
    ("run_completed", {"token_usage": [1, 2]}),
    ("run_failed", {}),
    ("run_failed", {"error_code": None}),
    ("run_timeout", {"timeout_ms": 1.5}),
    ("run_timeout", {"timeout_ms": -1}),
    ("message_sent", {"role": "user"}),
    ("message_sent", {"content": "hi"}),
    ("message_sent", {"role": "user", "content": 42}),
    ("message_received", {}),
    ("message_received", {"content": None}),
    ("message_streamed", {"content": "x"}),
    ("message_streamed", {"delta": 1}),
    ("tool_call_started", {"tool_call_id": "t1", "tool_name": "bash"}),
    ("tool_call_started", {"tool_call_id": 1, "tool_name": "bash", "tool_input": {}}),
    ("tool_call_completed", {"tool_call_id": "t1", "tool_name": "bash"}),
    ("tool_call_failed", {"tool_call_id": "t1"}),
    ("tool_call_failed", {"tool_call_id": "t1", "tool_name": "bash", "is_error": 1}),
    ("error_occurred", {"error_code": "x"}),
    ("error_occurred", {"error_code": "x", "error_message": None}),
    ("token_usage_updated", {"input_tokens": -1}),
    ("token_usage_updated", {"output_tokens": True}),
    ("token_usage_updated", {"total_tokens": "10"}),
    ("token_usage_updated", {"input_tokens": 1.0}),
    ("workspace_snapshot_taken", {"label": "before", "backend": "git"}),
    ("workspace_diff_computed", {"files_changed": 1, "insertions": 1, "deletions": 1}),
    (
        "workspace_diff_computed",
        {"files_changed": 1, "insertions": 1, "deletions": 1, "has_patch": "yes"},
    ),
    ("policy_violation", {"policy": "p", "kind": "k", "action": "a"}),
    ("policy_violation", {"policy": "p", "kind": "k", "action": "a", "details": "x"}),
]


def test_catalogue_is_the_seed_25_plus_four():
    assert len(SEED_CATALOGUE) == 25
    assert len(EventType) == 29
    assert {str(t) for t in EventType} == set(CATALOGUE)
    assert {str(t) for t in SEED_EVENT_TYPES} == set(SEED_CATALOGUE)


def test_categories():
    assert {str(c) for c in EventCategory} == set(CATALOGUE.values())
    assert set(EVENT_CATEGORY) == set(EventType)
    for type_, category in CATALOGUE.items():
        assert EVENT_CATEGORY[EventType(type_)] == category, type_


def test_event_types_in():
    assert event_types_in(EventCategory.WORKSPACE) == [
        EventType.WORKSPACE_SNAPSHOT_TAKEN,
        EventType.WORKSPACE_DIFF_COMPUTED,
    ]
    assert set(event_types_in("session")) == {
        EventType(t) for t, c in CATALOGUE.items() if c == "session"
    }
    assert sum(len(event_types_in(c)) for c in EventCategory) == 29
    assert event_types_in("nope") == []


def test_terminal_run_event_types():
    assert {str(t) for t in TERMINAL_RUN_EVENT_TYPES} == {
        "run_completed",
        "run_failed",
        "run_cancelled",
        "run_timeout",
    }


def test_every_type_has_a_schema_and_an_example():
    assert set(PAYLOAD_SCHEMAS) == set(EventType)
    assert set(MINIMAL) == set(CATALOGUE)
    assert set(FULL) <= set(CATALOGUE)


@pytest.mark.parametrize(("type_", "data"), sorted(MINIMAL.items()) + sorted(FULL.items()))
def test_valid_payload_passes_and_round_trips_through_json(type_, data):
    assert validate_event(type_, data) is data
    again = json.loads(json.dumps(data))
    assert validate_event(type_, again) == data


def test_enum_member_is_accepted_as_the_type():
    data = MINIMAL["message_sent"]
    assert validate_event(EventType.MESSAGE_SENT, data) is data


def test_none_means_empty():
    assert validate_event("session_started", None) == {}
    with pytest.raises(AsmError) as info:
        validate_event("message_sent", None)
    assert info.value.code == "validation_error"


def test_original_dict_is_returned_unchanged():
    data = {"content": "hello"}
    result = validate_event("message_received", data)
    assert result is data
    assert data == {"content": "hello"}  # the "assistant" default is not written back


def test_extra_keys_are_kept():
    data = {
        "delta": "hi",
        "content": "hi",
        "routed_provider": "echo",
        "routing_attempt": 1,
        "routing_candidates": ["echo", "claude"],
        "index": 0,
    }
    assert validate_event("message_streamed", data) == data


def test_extra_keys_on_empty_schemas_are_kept():
    data = {"agent_id": "a1", "anything": [1, 2]}
    assert validate_event("session_started", data) == data


@pytest.mark.parametrize(("type_", "data"), INVALID)
def test_invalid_payload_is_a_validation_error(type_, data):
    with pytest.raises(AsmError) as info:
        validate_event(type_, data)
    err = info.value
    assert err.code == "validation_error"
    assert err.message.startswith(f"Invalid payload for event type {type_}: ")
    assert err.details["type"] == type_
    assert err.details["errors"]
    for item in err.details["errors"]:
        assert set(item) == {"loc", "msg", "type"}
    json.dumps(err.to_dict())


def test_error_list_names_the_field():
    with pytest.raises(AsmError) as info:
        validate_event("message_sent", {"role": "user", "content": 42})
    assert info.value.details["errors"] == [
        {"loc": ["content"], "msg": "Input should be a valid string", "type": "string_type"}
    ]


@pytest.mark.parametrize("data", [[], "text", 3, ("a", 1)])
def test_non_dict_payload_is_a_validation_error(data):
    with pytest.raises(AsmError) as info:
        validate_event("session_started", data)
    assert info.value.code == "validation_error"
    assert info.value.details["type"] == "session_started"


@pytest.mark.parametrize("type_", ["no_such_type", "", "Message_Sent", None, 3])
def test_unknown_type_is_invalid_event_type(type_):
    with pytest.raises(AsmError) as info:
        validate_event(type_, {})
    err = info.value
    assert err.code == "invalid_event_type"
    assert err.message == f"Unknown event type: {type_!r}"
    json.dumps(err.to_dict())


def test_events_types_re_exports_the_core_catalogue():
    import asm_core.event_types as core
    import events.types as app

    assert app.EventType is core.EventType
    assert app.validate_event is core.validate_event
    assert set(app.__all__) == set(core.__all__)


def test_core_imports_without_django_settings():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys\n"
        "import asm_core, asm_core.errors, asm_core.event_types\n"
        "assert 'django.conf' not in sys.modules, 'the core imported Django'\n"
        "import django.conf as c\n"
        "assert not c.settings.configured\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
