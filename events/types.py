"""Event types and their payload schemas, for the event store and its callers.

The catalogue lives in ``asm_core.event_types`` so the plain-Python core (executor,
in-memory store, providers) can use it without Django; this module re-exports it for the
``events`` app (``event_append`` validates every payload with ``validate_event``).
"""

# The star import is the point of this module; __all__ below names what it re-exports.
from asm_core.event_types import *  # noqa: F403

__all__ = [  # noqa: F405 (names come from the star import)
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
