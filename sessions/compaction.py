"""Session compaction on request (`POST /api/v1/sessions/{id}/compact`).

The plan is `runs.continuation.compaction_plan`, the same one a run's automatic compaction
uses (docs/continuity.md); this service only validates, reads through the ORM store and
writes the event.

Invariants:
- At most ONE event is written, a session-level `session_compacted` (`reason: "manual"`,
  the actor in its metadata); nothing else changes (the log is append-only, the compacted
  events stay readable).
- A running run's events (from its first event on) are neither compacted nor counted: the
  run is still adding to them.
- Nothing (more) to compact writes nothing and says so (`compacted` false).
- Bad input (`keep_messages` not an int in 0..10000, `summary` not a non-blank string of at
  most 100,000 characters) is `validation_error` and writes nothing; an unknown session is
  `session_not_found`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction

from asm_core.errors import AsmError, ErrorCode, session_not_found
from events.models import Event
from events.services import event_append_many
from runs.continuation import (
    CompactionPlan,
    compaction_event,
    compaction_plan,
    continuation_events,
)
from runs.store import DjangoSessionStore
from sessions.models import Session
from sessions.services import Actor, actor_metadata

#: Messages kept verbatim after a compaction when the caller does not say.
DEFAULT_KEEP_MESSAGES = 10
MAX_KEEP_MESSAGES = 10_000
MAX_SUMMARY_CHARS = 100_000


@dataclass(frozen=True)
class CompactionResult:
    compacted: bool
    event: Event | None = None
    plan: CompactionPlan | None = None


def _validate(keep_messages: object, summary: object) -> tuple[int, str | None]:
    if (
        not isinstance(keep_messages, int)
        or isinstance(keep_messages, bool)
        or not 0 <= keep_messages <= MAX_KEEP_MESSAGES
    ):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"keep_messages must be an integer from 0 to {MAX_KEEP_MESSAGES}",
            {"field": "keep_messages"},
        )
    if summary is None:
        return keep_messages, None
    if not isinstance(summary, str) or not summary.strip() or len(summary) > MAX_SUMMARY_CHARS:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"summary must be a non-blank string of at most {MAX_SUMMARY_CHARS} characters",
            {"field": "summary"},
        )
    return keep_messages, summary.strip()


def session_compact(
    *,
    session_id: uuid.UUID,
    keep_messages: int = DEFAULT_KEEP_MESSAGES,
    summary: str | None = None,
    actor: Actor = None,
) -> CompactionResult:
    """Compact the session's transcript, keeping the newest ``keep_messages`` messages.

    ``summary``: the caller's summary of what is compacted (else an extractive one).
    """
    keep, text = _validate(keep_messages, summary)
    with transaction.atomic():
        if not Session.objects.filter(id=session_id).exists():
            raise session_not_found(session_id)
        store = DjangoSessionStore()
        events = continuation_events(store, session_id)
        active = store.run_get_active(session_id)
        before: int | None = None
        if active is not None:
            first = store.event_list(session_id, run_id=active.id, limit=1)
            before = first[0].sequence_number if first else None
        plan = compaction_plan(
            events,
            keep_messages=keep,
            summary=text,
            exclude_run_id=active.id if active is not None else None,
            before=before,
            session_id=session_id,
        )
        if plan is None:
            return CompactionResult(compacted=False)
        [event] = event_append_many(
            session_id=session_id,
            events=[compaction_event(plan, reason="manual", metadata=actor_metadata(actor))],
        )
    return CompactionResult(compacted=True, event=event, plan=plan)
