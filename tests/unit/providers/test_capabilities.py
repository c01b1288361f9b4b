"""Capabilities and negotiation (spec 10.1-10.2), the cancel token, input messages, RunContext."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import (
    CancelToken,
    Capability,
    CapabilityType,
    RunContext,
    capabilities_of_type,
    has_capability,
    input_messages,
    negotiate,
    parse_requirement,
)

# --------------------------------------------------------------------------- Capability


def test_capability_types() -> None:
    assert {str(t) for t in CapabilityType} == {
        "tool",
        "resource",
        "prompt",
        "sampling",
        "file_access",
        "network_access",
        "code_execution",
        "streaming",
        "cancel",
        "resume",
        "thinking",
    }


def test_capability_to_dict_and_back() -> None:
    cap = Capability("tool", "bash", description="Runs shell commands")
    assert cap.type == CapabilityType.TOOL
    assert cap.to_dict() == {
        "type": "tool",
        "name": "bash",
        "enabled": True,
        "description": "Runs shell commands",
    }
    assert type(cap.to_dict()["type"]) is str
    assert Capability.from_dict(cap.to_dict()) == cap
    assert Capability.from_dict({"type": "resource", "name": "r"}).enabled is True


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_capability_needs_a_name(name: Any) -> None:
    with pytest.raises(AsmError) as info:
        Capability("tool", name)
    assert info.value.code == "validation_error"


@pytest.mark.parametrize("type_", [None, ""])
def test_capability_needs_a_type(type_: Any) -> None:
    with pytest.raises(AsmError) as info:
        Capability(type_, "x")
    assert info.value.code == "validation_error"


@pytest.mark.parametrize("type_", ["telepathy", "TOOL", 7])
def test_capability_unknown_type(type_: Any) -> None:
    with pytest.raises(AsmError) as info:
        Capability(type_, "x")
    assert info.value.code == "invalid_capability_type"


def test_capability_bad_enabled_or_description() -> None:
    with pytest.raises(AsmError):
        Capability("tool", "x", enabled=1)  # type: ignore[arg-type]
    with pytest.raises(AsmError):
        Capability("tool", "x", description=5)  # type: ignore[arg-type]
    with pytest.raises(AsmError) as info:
        Capability.from_dict("tool")  # type: ignore[arg-type]
    assert info.value.code == "validation_error"


def test_capability_helpers_ignore_disabled() -> None:
    caps = [
        Capability("tool", "bash"),
        Capability("tool", "edit", enabled=False),
        Capability("sampling", "s"),
    ]
    assert [c.name for c in capabilities_of_type(caps, "tool")] == ["bash"]
    assert has_capability(caps, "tool")
    assert has_capability(caps, "tool", "bash")
    assert not has_capability(caps, "tool", "edit")
    assert not has_capability(caps, "resource")


# --------------------------------------------------------------------------- negotiate

CAPS = [
    Capability("tool", "bash"),
    Capability("tool", "read"),
    Capability("streaming", "streaming"),
    Capability("sampling", "sampler", enabled=False),
]


def test_negotiate_empty_requirements_is_full() -> None:
    result = negotiate(CAPS)
    assert result.status == "full"
    assert result.supported == frozenset()
    assert result.unsupported == frozenset()
    assert result.warnings == ()


def test_negotiate_full() -> None:
    result = negotiate(CAPS, required=["tool"], optional=[CapabilityType.STREAMING])
    assert result.status == "full"
    assert result.supported == {"tool", "streaming"}
    assert result.unsupported == frozenset()
    assert result.warnings == ()
    assert result.to_dict() == {
        "status": "full",
        "supported": ["streaming", "tool"],
        "unsupported": [],
        "warnings": [],
    }


def test_negotiate_degraded_with_one_warning_per_missing_optional() -> None:
    result = negotiate(CAPS, required=["tool"], optional=["streaming", "resource", "thinking"])
    assert result.status == "degraded"
    assert result.supported == {"tool", "streaming"}
    assert result.unsupported == {"resource", "thinking"}
    assert len(result.warnings) == 2
    assert "resource" in result.warnings[0]
    assert "thinking" in result.warnings[1]
    assert all("not supported" in w for w in result.warnings)


def test_negotiate_missing_required_lists_the_types() -> None:
    with pytest.raises(AsmError) as info:
        negotiate(CAPS, required=["tool", "resource", "code_execution"], optional=["prompt"])
    err = info.value
    assert err.code == "missing_required_capability"
    assert err.message == "Missing required capabilities: code_execution, resource"
    assert err.details == {"missing": ["code_execution", "resource"]}


def test_negotiate_ignores_disabled_capabilities() -> None:
    with pytest.raises(AsmError) as info:
        negotiate(CAPS, required=["sampling"])
    assert info.value.details == {"missing": ["sampling"]}
    assert negotiate(CAPS, optional=["sampling"]).status == "degraded"


def test_negotiate_by_type_counts_duplicates_once() -> None:
    result = negotiate(CAPS, required=["tool", "tool", {"type": "tool"}])
    assert result.supported == {"tool"}


@pytest.mark.parametrize(
    ("required", "optional"),
    [(["telepathy"], []), ([], ["telepathy"]), ([{"type": "nope", "name": "x"}], [])],
)
def test_negotiate_unknown_type(required: list[Any], optional: list[Any]) -> None:
    # Checked before matching, even when the requirement would not be reached.
    with pytest.raises(AsmError) as info:
        negotiate([], required=required, optional=optional)
    assert info.value.code == "invalid_capability_type"


def test_negotiate_name_qualified_requirement() -> None:
    result = negotiate(CAPS, required=[{"type": "tool", "name": "bash"}])
    assert result.status == "full"
    assert result.supported == {"tool:bash"}

    with pytest.raises(AsmError) as info:
        negotiate(CAPS, required=[{"type": "tool", "name": "write"}])
    assert info.value.code == "missing_required_capability"
    assert info.value.details == {"missing": ["tool:write"]}

    # Disabled capability with the right name does not count.
    with pytest.raises(AsmError):
        negotiate(CAPS, required=[{"type": "sampling", "name": "sampler"}])

    # Right name, wrong type does not count either.
    with pytest.raises(AsmError):
        negotiate(CAPS, required=[{"type": "resource", "name": "bash"}])

    degraded = negotiate(CAPS, optional=[{"type": "tool", "name": "write"}, "tool"])
    assert degraded.status == "degraded"
    assert degraded.supported == {"tool"}
    assert degraded.unsupported == {"tool:write"}
    assert "tool:write" in degraded.warnings[0]


def test_negotiate_null_name_means_by_type() -> None:
    assert negotiate(CAPS, required=[{"type": "tool", "name": None}]).supported == {"tool"}


@pytest.mark.parametrize(
    "entry", [{"name": "bash"}, {"type": "tool", "name": 3}, {"type": "tool", "name": ""}, 42]
)
def test_bad_requirement_shapes(entry: Any) -> None:
    with pytest.raises(AsmError) as info:
        parse_requirement(entry)
    assert info.value.code == "validation_error"


def test_parse_requirement_forms() -> None:
    assert parse_requirement("tool") == ("tool", None)
    assert parse_requirement(CapabilityType.CANCEL) == ("cancel", None)
    assert parse_requirement({"type": "tool", "name": "bash"}) == ("tool", "bash")
    assert parse_requirement(Capability("tool", "bash")) == ("tool", "bash")


# --------------------------------------------------------------------------- CancelToken


def test_cancel_token() -> None:
    token = CancelToken()
    assert not token.cancelled
    assert token.wait(0) is False
    token.raise_if_cancelled()
    token.cancel()
    token.cancel()  # idempotent
    assert token.cancelled
    assert token.wait(10) is True
    with pytest.raises(AsmError) as info:
        token.raise_if_cancelled()
    assert (info.value.code, info.value.message) == ("cancelled", "Run was cancelled")


def test_cancel_token_wakes_a_waiter_from_another_thread() -> None:
    token = CancelToken()
    threading.Timer(0.05, token.cancel).start()
    started = time.monotonic()
    assert token.wait(5) is True
    assert time.monotonic() - started < 1


# --------------------------------------------------------------------------- input messages


def test_input_messages_from_messages() -> None:
    messages = [
        {"role": "System", "content": "be nice"},
        {"role": "USER", "content": "hi"},
        {"content": "no role"},
        {"role": "", "content": "empty role"},
        {"role": "  Assistant ", "content": "padded role"},
        {"role": "user", "content": None},
        {"role": "user", "content": ""},
        {"role": "tool", "content": {"b": 1, "a": [1, "é"]}},
        {"role": "tool", "content": [1, 2]},
        {"role": "user", "content": 42},
        {"role": "user", "content": True},
        "not a map",
        {"role": 7, "content": "non-str role"},
    ]
    assert input_messages({"messages": messages}) == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "no role"},
        {"role": "user", "content": "empty role"},
        {"role": "assistant", "content": "padded role"},
        {"role": "tool", "content": '{"b": 1, "a": [1, "é"]}'},
        {"role": "tool", "content": "[1, 2]"},
        {"role": "user", "content": "42"},
        {"role": "user", "content": "True"},
        {"role": "user", "content": "non-str role"},
    ]


def test_input_messages_from_prompt() -> None:
    assert input_messages({"prompt": "Hello"}) == [{"role": "user", "content": "Hello"}]


def test_input_messages_empty() -> None:
    assert input_messages({"prompt": ""}) == []
    assert input_messages({}) == []
    assert input_messages({"messages": []}) == []


def test_messages_take_precedence_over_prompt() -> None:
    assert input_messages({"messages": [{"role": "user", "content": "m"}], "prompt": "p"}) == [
        {"role": "user", "content": "m"}
    ]


# --------------------------------------------------------------------------- RunContext


def test_run_context_build() -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    ctx = RunContext.build(
        run_id=run_id,
        session_id=session_id,
        input={"messages": [{"role": "User", "content": "hi"}]},
        options={"adapter_opts": {"repeat": 2}, "timeout_ms": 5000},
        attempt=2,
        session_context={"transcript": []},
        session_metadata={"k": "v"},
        provider_session_id="p1",
    )
    assert ctx.run_id == run_id
    assert ctx.session_id == session_id
    assert ctx.attempt == 2
    assert ctx.messages == ({"role": "user", "content": "hi"},)
    assert ctx.adapter_opts == {"repeat": 2}
    assert ctx.timeout_ms == 5000
    assert ctx.options["timeout_ms"] == 5000
    assert ctx.session_context == {"transcript": []}
    assert ctx.session_metadata == {"k": "v"}
    assert ctx.provider_session_id == "p1"


def test_run_context_build_defaults() -> None:
    ctx = RunContext.build(run_id=uuid.uuid4(), session_id=uuid.uuid4(), input={"prompt": "x"})
    assert ctx.attempt == 1
    assert ctx.messages == ({"role": "user", "content": "x"},)
    assert ctx.options == {}
    assert ctx.adapter_opts == {}
    assert ctx.timeout_ms is None
    assert ctx.provider_session_id is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"adapter_opts": [1]}, "options.adapter_opts"),
        ({"timeout_ms": "5"}, "options.timeout_ms"),
        ({"timeout_ms": -1}, "options.timeout_ms"),
        ({"timeout_ms": True}, "options.timeout_ms"),
    ],
)
def test_run_context_build_rejects_bad_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        RunContext.build(
            run_id=uuid.uuid4(), session_id=uuid.uuid4(), input={"prompt": "x"}, options=options
        )
    assert info.value.code == "validation_error"
    assert info.value.details == {"field": field}
