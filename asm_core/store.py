"""The SessionStore port (the seed's store, spec section 3) and the cursor-filter rules.

Invariants every implementation keeps (and the shared contract suite checks):
- Sequence numbers are per session, start at 1, dense and strictly increasing; a batch of k
  gets k consecutive numbers; a caller cannot choose them.
- Event ids are globally unique: appending a stored id returns the stored event (with its
  original session and sequence number) and changes nothing.
- Appending to a session the store does not know is `session_not_found` (the per-session
  counter lives with the session; the seed's store accepted orphans), and an event's
  `run_id` must name a run of that session (`run_not_found`). An empty batch is a no-op.
- `event_list` follows spec 2.4: ascending order; `after`/`before` strict and applied only
  when they are ints >= 0; `limit` (positive int) applies last and keeps the oldest N;
  an unknown session gives []. `types` may be one type or several.
- At most one `running` run per session and idempotency keys unique per session: a save
  that would break either raises (`invalid_operation` / `already_exists`).
- `run_list` is oldest first (created_at, then id).
- There is no delete: the log is append-only. The one exception is retention
  (`event_prune_range`, docs/event-store.md "Retention"): it replaces a contiguous range
  a..b of a finished run's `message_streamed` chunks by ONE `events_pruned` marker that
  takes the range's LAST number b, atomically; the counter never moves back, so no number is
  ever given out again, and a reader walking with `after` meets the marker in the gap's
  place (a cursor inside the range, a <= after < b, gets it too: it sits at b > after).
- Type filters and markers: a `types` filter that names a pruned type (`message_streamed`)
  also matches the markers that stand for events of that type (`marker_matches`), so a
  reader of chunks is told about the chunks it will never get.
- `event_prune_range(session_id, run_id=, from_sequence=a, to_sequence=b, data=,
  metadata=)`: when every number a..b is a stored `message_streamed` event of `run_id`, it
  deletes them and stores one `events_pruned` event (payload `data`, validated) with a new
  id at number b, with that run id and the timestamp and provider of the chunk it replaces
  at b, in one atomic step, and returns it; otherwise it changes nothing and returns None
  (e.g. a concurrent pruner got there first). Which ranges to prune is decided by
  `runs.retention`, not by the store.
- Run ownership (for executing runs across processes): `run_claim_next` moves the oldest
  pending run of a session to `running` (attempt + 1, a lease for `owner`) and never while
  the session has a running run; `run_renew_lease` and `run_finish` act only while the run
  is still `running` with the caller's attempt number (fencing: a late result of a reaped
  or cancelled attempt changes nothing); `run_finish` writes the terminal status, the run's
  last events (`events`, what the executor still buffered), the terminal event and the
  provider's session metadata (`session_metadata`, merged) in one atomic step, so a run gets
  exactly one terminal event, nothing of a run lands after its terminal event, and a
  fenced-off attempt changes nothing at all. It also records the run's `cost_usd` (None:
  unknown).
- `session_merge_metadata` merges keys into the session's metadata atomically (concurrent
  changes to other keys are kept).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from asm_core.lifecycle import RunStatus, check_run_transition
from asm_core.records import EventRecord, NewEvent, RunRecord, SessionRecord


class SessionStore(Protocol):
    def session_save(self, session: SessionRecord) -> SessionRecord: ...

    def session_get(self, session_id: uuid.UUID) -> SessionRecord: ...

    def session_list(
        self, *, status: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]: ...

    def run_save(self, run: RunRecord) -> RunRecord: ...

    def run_get(self, run_id: uuid.UUID) -> RunRecord: ...

    def run_list(
        self, session_id: uuid.UUID, *, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]: ...

    def run_get_active(self, session_id: uuid.UUID) -> RunRecord | None: ...

    def event_append(self, session_id: uuid.UUID, event: NewEvent) -> EventRecord: ...

    def event_append_many(
        self, session_id: uuid.UUID, events: Sequence[NewEvent]
    ) -> list[EventRecord]: ...

    def event_list(
        self,
        session_id: uuid.UUID,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        types: str | Iterable[str] | None = None,
        run_id: uuid.UUID | None = None,
        since: datetime | None = None,
    ) -> list[EventRecord]: ...

    def latest_sequence(self, session_id: uuid.UUID) -> int: ...

    def event_prune_range(
        self,
        session_id: uuid.UUID,
        *,
        run_id: uuid.UUID,
        from_sequence: int,
        to_sequence: int,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> EventRecord | None: ...

    def session_merge_metadata(self, session_id: uuid.UUID, patch: Mapping[str, Any]) -> None: ...

    def run_claim_next(
        self, session_id: uuid.UUID, *, owner: str, lease_ms: int
    ) -> RunRecord | None: ...

    def run_renew_lease(
        self, run_id: uuid.UUID, *, attempt: int, owner: str, lease_ms: int
    ) -> bool: ...

    def run_finish(
        self,
        run_id: uuid.UUID,
        *,
        attempt: int,
        status: str,
        output: Any,
        error: dict[str, Any] | None,
        token_usage: Mapping[str, Any],
        metadata: Mapping[str, Any],
        terminal: NewEvent,
        session_metadata: Mapping[str, Any] | None = None,
        events: Sequence[NewEvent] = (),
        cost_usd: Decimal | None = None,
    ) -> RunRecord | None: ...


def check_finish_status(status: str) -> None:
    """`run_finish` takes a running run to a terminal status only."""
    check_run_transition(RunStatus.RUNNING, status)


def valid_cursor(value: object) -> int | None:
    """`after`/`before` apply only when they are ints >= 0 (spec 2.4); otherwise ignored."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def valid_limit(value: object) -> int | None:
    """`limit` applies only when it is a positive int (spec 2.4); otherwise ignored."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


#: Event types retention may prune (each pruned range leaves an `events_pruned` marker).
PRUNABLE_TYPES: frozenset[str] = frozenset({"message_streamed"})
PRUNED_MARKER_TYPE = "events_pruned"


def marker_matches(wanted: frozenset[str] | None, data: Mapping[str, Any]) -> bool:
    """Whether an `events_pruned` marker passes a `types` filter: no filter, the marker type
    itself, or the type of the events it stands for (`data.pruned_type`)."""
    return wanted is None or PRUNED_MARKER_TYPE in wanted or data.get("pruned_type") in wanted


def prune_range_check(run_id: uuid.UUID, from_sequence: int, to_sequence: int) -> None:
    """`event_prune_range`'s argument rules (both stores): 1 <= from <= to."""
    if not (isinstance(from_sequence, int) and isinstance(to_sequence, int)) or not (
        1 <= from_sequence <= to_sequence
    ):
        raise ValueError(f"bad prune range {from_sequence}..{to_sequence} of run {run_id}")


def type_filter(types: str | Iterable[str] | None) -> frozenset[str] | None:
    """One type or several; None or an empty collection means no type filter."""
    if types is None:
        return None
    chosen = frozenset({types}) if isinstance(types, str) else frozenset(types)
    return chosen or None
