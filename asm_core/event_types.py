"""The event-type catalogue and one typed payload schema per type.

Plain Python (no Django): the executor, the in-memory store and the Django event store
(``events.services.event_append``) all validate through ``validate_event``.
``events.types`` re-exports this module.

Invariants:

- ``EventType`` holds the seed's 25 types (spec section 2.1, ``SEED_EVENT_TYPES``) plus
  four asm additions: ``session_compacted``, ``session_forked``, ``events_pruned`` and
  ``run_requeued`` (the reaper put a run whose worker was lost back in the queue).
- Every type has exactly one category (``EVENT_CATEGORY``) and one pydantic payload model
  (``PAYLOAD_SCHEMAS``); both mappings are complete, which is checked at import time.
- Payload models allow extra keys (adapters add provider aliases, the router adds
  ``routed_provider``, ``routing_attempt``, ``routing_candidates``, ``failover_from``,
  ``failover_reason``), but declared fields are strictly typed: a string field rejects an
  int, an int field rejects a bool or a float, a bool field rejects ``0``/``1``.
- ``validate_event`` returns the caller's dict unchanged (never the model dump), so what is
  stored is exactly what was emitted.
- ``session_*`` types are session-scoped (``run_id`` null). ``events_pruned`` is a log
  maintenance event, so its category is ``session`` (there is no separate "maintenance"
  category), but it carries the ``run_id`` of the run whose events it stands for, so
  per-run readers see it in the gap's place.

Catalogue (``*`` = required; other fields optional and nullable; "seed" = one of the 25
seed types, "asm" = an asm addition; "never" = never emitted upstream):

======================== ========= ======================== ================================
Type                     Category  Emitted by               Payload (``data``)
======================== ========= ======================== ================================
session_created          session   session create (seed)    provider: str
session_started          session   session activate (seed)  (none declared)
session_paused           session   session pause (never)    reason: str
session_resumed          session   session resume (never)   reason: str
session_completed        session   session complete (seed)  (none declared)
session_failed           session   session fail (seed)      error_code*: str,
                                                            error_message*: str
session_cancelled        session   session cancel (never)   reason: str
session_compacted        session   compaction (asm)         summary*: str, from_sequence*,
                                                            to_sequence*: int>=0, from <= to
session_forked           session   session fork (asm)       source_session_id*: str,
                                                            at_sequence*: int>=0
events_pruned            session   retention (asm)          run_id*: str, from_sequence*,
                                                            to_sequence*, pruned_count*:
                                                            int>=0, from <= to,
                                                            pruned_type*, reason*: str,
                                                            stream: dict
run_started              run       adapters; audit          model, agent_id, run_status: str
run_completed            run       adapters; audit          stop_reason: str,
                                                            token_usage: dict
run_failed               run       executor; adapters       error_code*: str,
                                                            error_message: str
run_cancelled            run       executor; adapters       reason: str
run_timeout              run       executor (timeout)       timeout_ms: int>=0
run_requeued             run       reaper (asm)             attempt*: int>=0 (the lost one),
                                                            reason*: str
message_sent             message   executor (per input)     role*: str, content*: str
message_received         message   adapters (full reply)    content*: str,
                                                            role: str = "assistant"
message_streamed         message   adapters (per chunk)     delta*: str, content: str
tool_call_started        tool      adapters                 tool_call_id*, tool_name*: str,
                                                            tool_input*: any
tool_call_completed      tool      adapters                 tool_call_id*, tool_name*: str,
                                                            tool_output*: any,
                                                            tool_input: any
tool_call_failed         tool      adapters                 tool_call_id*, tool_name*: str,
                                                            is_error: bool = true,
                                                            tool_output: any,
                                                            error: str | dict
error_occurred           error     adapters; audit          error_code*, error_message*: str
error_recovered          error     (never)                  error_code: str
token_usage_updated      usage     adapters; audit          input_tokens, output_tokens,
                                                            cache_read_input_tokens,
                                                            cache_creation_input_tokens,
                                                            total_tokens: int>=0
turn_completed           usage     (never)                  turn: int>=0
workspace_snapshot_taken workspace executor (workspace)     label*, backend*, ref*: str
workspace_diff_computed  workspace executor (workspace)     files_changed*, insertions*,
                                                            deletions*: int>=0,
                                                            has_patch*: bool
policy_violation         policy    executor (policy)        policy*, kind*, action*: str,
                                                            details*: dict
======================== ========= ======================== ================================

Terminal run events (``TERMINAL_RUN_EVENT_TYPES``): run_completed, run_failed,
run_cancelled, run_timeout.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from asm_core.errors import AsmError, ErrorCode

__all__ = [
    "EVENT_CATEGORY",
    "PAYLOAD_SCHEMAS",
    "SEED_EVENT_TYPES",
    "TERMINAL_RUN_EVENT_TYPES",
    "ErrorOccurredPayload",
    "ErrorRecoveredPayload",
    "EventCategory",
    "EventPayload",
    "EventType",
    "EventsPrunedPayload",
    "MessageReceivedPayload",
    "MessageSentPayload",
    "MessageStreamedPayload",
    "PolicyViolationPayload",
    "RunCancelledPayload",
    "RunCompletedPayload",
    "RunFailedPayload",
    "RunRequeuedPayload",
    "RunStartedPayload",
    "RunTimeoutPayload",
    "SessionCancelledPayload",
    "SessionCompactedPayload",
    "SessionCompletedPayload",
    "SessionCreatedPayload",
    "SessionFailedPayload",
    "SessionForkedPayload",
    "SessionPausedPayload",
    "SessionResumedPayload",
    "SessionStartedPayload",
    "TokenUsageUpdatedPayload",
    "ToolCallCompletedPayload",
    "ToolCallFailedPayload",
    "ToolCallStartedPayload",
    "TurnCompletedPayload",
    "WorkspaceDiffComputedPayload",
    "WorkspaceSnapshotTakenPayload",
    "event_types_in",
    "validate_event",
]


class EventType(StrEnum):
    # session
    SESSION_CREATED = "session_created"
    SESSION_STARTED = "session_started"
    SESSION_PAUSED = "session_paused"
    SESSION_RESUMED = "session_resumed"
    SESSION_COMPLETED = "session_completed"
    SESSION_FAILED = "session_failed"
    SESSION_CANCELLED = "session_cancelled"
    SESSION_COMPACTED = "session_compacted"  # asm addition
    SESSION_FORKED = "session_forked"  # asm addition
    EVENTS_PRUNED = "events_pruned"  # asm addition (category session)
    # run
    RUN_STARTED = "run_started"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_TIMEOUT = "run_timeout"
    RUN_REQUEUED = "run_requeued"  # asm addition
    # message
    MESSAGE_SENT = "message_sent"
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_STREAMED = "message_streamed"
    # tool
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    TOOL_CALL_FAILED = "tool_call_failed"
    # error
    ERROR_OCCURRED = "error_occurred"
    ERROR_RECOVERED = "error_recovered"
    # usage
    TOKEN_USAGE_UPDATED = "token_usage_updated"  # noqa: S105 (not a password)
    TURN_COMPLETED = "turn_completed"
    # workspace
    WORKSPACE_SNAPSHOT_TAKEN = "workspace_snapshot_taken"
    WORKSPACE_DIFF_COMPUTED = "workspace_diff_computed"
    # policy
    POLICY_VIOLATION = "policy_violation"


class EventCategory(StrEnum):
    SESSION = "session"
    RUN = "run"
    MESSAGE = "message"
    TOOL = "tool"
    ERROR = "error"
    USAGE = "usage"
    WORKSPACE = "workspace"
    POLICY = "policy"


_ET = EventType
_EC = EventCategory

EVENT_CATEGORY: Mapping[EventType, EventCategory] = types.MappingProxyType(
    {
        _ET.SESSION_CREATED: _EC.SESSION,
        _ET.SESSION_STARTED: _EC.SESSION,
        _ET.SESSION_PAUSED: _EC.SESSION,
        _ET.SESSION_RESUMED: _EC.SESSION,
        _ET.SESSION_COMPLETED: _EC.SESSION,
        _ET.SESSION_FAILED: _EC.SESSION,
        _ET.SESSION_CANCELLED: _EC.SESSION,
        _ET.SESSION_COMPACTED: _EC.SESSION,
        _ET.SESSION_FORKED: _EC.SESSION,
        _ET.EVENTS_PRUNED: _EC.SESSION,
        _ET.RUN_STARTED: _EC.RUN,
        _ET.RUN_COMPLETED: _EC.RUN,
        _ET.RUN_FAILED: _EC.RUN,
        _ET.RUN_CANCELLED: _EC.RUN,
        _ET.RUN_TIMEOUT: _EC.RUN,
        _ET.RUN_REQUEUED: _EC.RUN,
        _ET.MESSAGE_SENT: _EC.MESSAGE,
        _ET.MESSAGE_RECEIVED: _EC.MESSAGE,
        _ET.MESSAGE_STREAMED: _EC.MESSAGE,
        _ET.TOOL_CALL_STARTED: _EC.TOOL,
        _ET.TOOL_CALL_COMPLETED: _EC.TOOL,
        _ET.TOOL_CALL_FAILED: _EC.TOOL,
        _ET.ERROR_OCCURRED: _EC.ERROR,
        _ET.ERROR_RECOVERED: _EC.ERROR,
        _ET.TOKEN_USAGE_UPDATED: _EC.USAGE,
        _ET.TURN_COMPLETED: _EC.USAGE,
        _ET.WORKSPACE_SNAPSHOT_TAKEN: _EC.WORKSPACE,
        _ET.WORKSPACE_DIFF_COMPUTED: _EC.WORKSPACE,
        _ET.POLICY_VIOLATION: _EC.POLICY,
    }
)

#: The asm additions; everything else is one of the seed's 25 types.
_ASM_EVENT_TYPES = frozenset(
    {_ET.SESSION_COMPACTED, _ET.SESSION_FORKED, _ET.EVENTS_PRUNED, _ET.RUN_REQUEUED}
)

#: The 25 event types of the seed (spec section 2.1).
SEED_EVENT_TYPES: frozenset[EventType] = frozenset(EventType) - _ASM_EVENT_TYPES

#: Event types that end a run.
TERMINAL_RUN_EVENT_TYPES: frozenset[EventType] = frozenset(
    {_ET.RUN_COMPLETED, _ET.RUN_FAILED, _ET.RUN_CANCELLED, _ET.RUN_TIMEOUT}
)


def event_types_in(category: EventCategory | str) -> list[EventType]:
    """The event types of ``category``, in declaration order (unknown category -> [])."""
    return [t for t, c in EVENT_CATEGORY.items() if c == category]


# --------------------------------------------------------------------------- payloads

NonNegInt = Annotated[int, Field(ge=0)]


class EventPayload(BaseModel):
    """Base of every payload model: extra keys allowed, declared fields strictly typed."""

    model_config = ConfigDict(extra="allow", strict=True)


class _SequenceRange(EventPayload):
    from_sequence: NonNegInt
    to_sequence: NonNegInt

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.from_sequence > self.to_sequence:
            raise ValueError("from_sequence must not be greater than to_sequence")
        return self


# session


class SessionCreatedPayload(EventPayload):
    provider: str | None = None


class SessionStartedPayload(EventPayload):
    pass


class SessionPausedPayload(EventPayload):
    reason: str | None = None


class SessionResumedPayload(EventPayload):
    reason: str | None = None


class SessionCompletedPayload(EventPayload):
    pass


class SessionFailedPayload(EventPayload):
    error_code: str
    error_message: str


class SessionCancelledPayload(EventPayload):
    reason: str | None = None


class SessionCompactedPayload(_SequenceRange):
    summary: str


class SessionForkedPayload(EventPayload):
    source_session_id: str
    at_sequence: NonNegInt


class EventsPrunedPayload(_SequenceRange):
    """Retention's marker: it stands for events ``from_sequence..to_sequence`` (inclusive) of
    run ``run_id`` and sits at ``to_sequence`` (docs/event-store.md, Retention). ``stream``
    (optional) is what the pruned chunks contributed to the transcript: ``first_sequence``
    (of the first non-empty chunk), ``metadata`` (their merged message metadata) and, when
    no later event carries the assembled text, ``text``."""

    run_id: str
    pruned_count: NonNegInt
    pruned_type: str
    reason: str
    stream: dict[str, Any] | None = None


# run


class RunStartedPayload(EventPayload):
    model: str | None = None
    agent_id: str | None = None
    run_status: str | None = None


class RunCompletedPayload(EventPayload):
    stop_reason: str | None = None
    token_usage: dict[str, Any] | None = None


class RunFailedPayload(EventPayload):
    error_code: str
    error_message: str | None = None


class RunCancelledPayload(EventPayload):
    reason: str | None = None


class RunTimeoutPayload(EventPayload):
    timeout_ms: NonNegInt | None = None


class RunRequeuedPayload(EventPayload):
    attempt: NonNegInt
    reason: str


# message


class MessageSentPayload(EventPayload):
    role: str
    content: str


class MessageReceivedPayload(EventPayload):
    content: str
    role: str = "assistant"


class MessageStreamedPayload(EventPayload):
    delta: str
    content: str | None = None


# tool


class ToolCallStartedPayload(EventPayload):
    tool_call_id: str
    tool_name: str
    tool_input: Any


class ToolCallCompletedPayload(EventPayload):
    tool_call_id: str
    tool_name: str
    tool_output: Any
    tool_input: Any = None


class ToolCallFailedPayload(EventPayload):
    tool_call_id: str
    tool_name: str
    is_error: bool = True
    tool_output: Any = None
    error: str | dict[str, Any] | None = None


# error


class ErrorOccurredPayload(EventPayload):
    error_code: str
    error_message: str


class ErrorRecoveredPayload(EventPayload):
    error_code: str | None = None


# usage


class TokenUsageUpdatedPayload(EventPayload):
    input_tokens: NonNegInt | None = None
    output_tokens: NonNegInt | None = None
    cache_read_input_tokens: NonNegInt | None = None
    cache_creation_input_tokens: NonNegInt | None = None
    total_tokens: NonNegInt | None = None


class TurnCompletedPayload(EventPayload):
    turn: NonNegInt | None = None


# workspace


class WorkspaceSnapshotTakenPayload(EventPayload):
    label: str
    backend: str
    ref: str


class WorkspaceDiffComputedPayload(EventPayload):
    files_changed: NonNegInt
    insertions: NonNegInt
    deletions: NonNegInt
    has_patch: bool


# policy


class PolicyViolationPayload(EventPayload):
    policy: str
    kind: str
    action: str
    details: dict[str, Any]


PAYLOAD_SCHEMAS: Mapping[EventType, type[EventPayload]] = types.MappingProxyType(
    {
        _ET.SESSION_CREATED: SessionCreatedPayload,
        _ET.SESSION_STARTED: SessionStartedPayload,
        _ET.SESSION_PAUSED: SessionPausedPayload,
        _ET.SESSION_RESUMED: SessionResumedPayload,
        _ET.SESSION_COMPLETED: SessionCompletedPayload,
        _ET.SESSION_FAILED: SessionFailedPayload,
        _ET.SESSION_CANCELLED: SessionCancelledPayload,
        _ET.SESSION_COMPACTED: SessionCompactedPayload,
        _ET.SESSION_FORKED: SessionForkedPayload,
        _ET.EVENTS_PRUNED: EventsPrunedPayload,
        _ET.RUN_STARTED: RunStartedPayload,
        _ET.RUN_COMPLETED: RunCompletedPayload,
        _ET.RUN_FAILED: RunFailedPayload,
        _ET.RUN_CANCELLED: RunCancelledPayload,
        _ET.RUN_TIMEOUT: RunTimeoutPayload,
        _ET.RUN_REQUEUED: RunRequeuedPayload,
        _ET.MESSAGE_SENT: MessageSentPayload,
        _ET.MESSAGE_RECEIVED: MessageReceivedPayload,
        _ET.MESSAGE_STREAMED: MessageStreamedPayload,
        _ET.TOOL_CALL_STARTED: ToolCallStartedPayload,
        _ET.TOOL_CALL_COMPLETED: ToolCallCompletedPayload,
        _ET.TOOL_CALL_FAILED: ToolCallFailedPayload,
        _ET.ERROR_OCCURRED: ErrorOccurredPayload,
        _ET.ERROR_RECOVERED: ErrorRecoveredPayload,
        _ET.TOKEN_USAGE_UPDATED: TokenUsageUpdatedPayload,
        _ET.TURN_COMPLETED: TurnCompletedPayload,
        _ET.WORKSPACE_SNAPSHOT_TAKEN: WorkspaceSnapshotTakenPayload,
        _ET.WORKSPACE_DIFF_COMPUTED: WorkspaceDiffComputedPayload,
        _ET.POLICY_VIOLATION: PolicyViolationPayload,
    }
)

del _ET, _EC

if set(EVENT_CATEGORY) != set(EventType):  # pragma: no cover
    raise RuntimeError("EVENT_CATEGORY must cover every EventType")
if set(PAYLOAD_SCHEMAS) != set(EventType):  # pragma: no cover
    raise RuntimeError("PAYLOAD_SCHEMAS must cover every EventType")
if len(SEED_EVENT_TYPES) != 25:  # pragma: no cover
    raise RuntimeError("the seed catalogue has 25 event types")

# Lookup by plain string, so the hot path does not construct an enum member.
_SCHEMA_BY_VALUE: Mapping[str, type[EventPayload]] = types.MappingProxyType(
    {str(t): schema for t, schema in PAYLOAD_SCHEMAS.items()}
)

_MAX_ERRORS_IN_MESSAGE = 3


def validate_event(type_: str, data: object) -> dict[str, Any]:
    """Check ``data`` against the payload schema of ``type_`` and return it unchanged.

    ``None`` counts as ``{}`` (a new empty dict is returned). Raises
    ``AsmError("invalid_event_type")`` for an unknown type and
    ``AsmError("validation_error")`` (details ``{"type", "errors": [{loc, msg, type}]}``)
    when ``data`` is not a dict or does not match the schema.
    """
    schema = _SCHEMA_BY_VALUE.get(type_) if isinstance(type_, str) else None
    if schema is None:
        raise AsmError(
            ErrorCode.INVALID_EVENT_TYPE,
            f"Unknown event type: {type_!r}",
            {"type": type_ if isinstance(type_, str | None) else repr(type_)},
        )
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors: list[dict[str, Any]] = [
            {"loc": [], "msg": "Input should be a valid dictionary", "type": "dict_type"}
        ]
    else:
        try:
            schema.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                for err in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
        else:
            return data
    summary = "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or 'data'}: {err['msg']}"
        for err in errors[:_MAX_ERRORS_IN_MESSAGE]
    )
    if len(errors) > _MAX_ERRORS_IN_MESSAGE:
        summary += f"; and {len(errors) - _MAX_ERRORS_IN_MESSAGE} more"
    raise AsmError(
        ErrorCode.VALIDATION_ERROR,
        f"Invalid payload for event type {type_}: {summary}",
        {"type": str(type_), "errors": errors},
    )
