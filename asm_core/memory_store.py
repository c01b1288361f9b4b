"""In-memory SessionStore: the core as a plain Python library (no database), and fast tests.

Invariants: every mutation runs under one lock, so appends are atomic and sequence numbers
dense per session (retention's `event_prune_range` replaces a range by one marker at its
last number under the same lock); records handed out are copies, so callers can never
mutate stored state.
It keeps the same rules as the ORM store (see `asm_core.store`), checked by the same
contract suite.
"""

from __future__ import annotations

import bisect
import copy
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from asm_core.errors import AsmError, run_not_found, session_not_found
from asm_core.event_types import validate_event
from asm_core.records import EventRecord, NewEvent, RunRecord, SessionRecord, utcnow
from asm_core.store import (
    PRUNED_MARKER_TYPE,
    check_finish_status,
    marker_matches,
    prune_range_check,
    type_filter,
    valid_cursor,
    valid_limit,
)


class InMemorySessionStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sessions: dict[uuid.UUID, SessionRecord] = {}
        self._runs: dict[uuid.UUID, RunRecord] = {}
        self._events: dict[uuid.UUID, list[EventRecord]] = {}
        self._by_id: dict[uuid.UUID, EventRecord] = {}
        self._last_seq: dict[uuid.UUID, int] = {}

    # -- sessions ------------------------------------------------------------------------
    def session_save(self, session: SessionRecord) -> SessionRecord:
        with self._lock:
            self._sessions[session.id] = copy.deepcopy(session)
            self._events.setdefault(session.id, [])
            return copy.deepcopy(session)

    def session_get(self, session_id: uuid.UUID) -> SessionRecord:
        with self._lock:
            found = self._sessions.get(session_id)
            if found is None:
                raise session_not_found(session_id)
            return copy.deepcopy(found)

    def session_list(
        self, *, status: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]:
        with self._lock:
            found = [
                copy.deepcopy(s)
                for s in sorted(self._sessions.values(), key=lambda s: (s.created_at, s.id))
                if (status is None or s.status == status)
                and (agent_id is None or s.agent_id == agent_id)
            ]
        n = valid_limit(limit)
        return found[:n] if n else found

    # -- runs ----------------------------------------------------------------------------
    def run_save(self, run: RunRecord) -> RunRecord:
        with self._lock:
            for other in self._runs.values():
                if other.id == run.id or other.session_id != run.session_id:
                    continue
                if run.status == "running" and other.status == "running":
                    raise AsmError(
                        "invalid_operation",
                        "The session already has a running run",
                        {"session_id": str(run.session_id), "running_run_id": str(other.id)},
                    )
                if run.idempotency_key is not None and other.idempotency_key == run.idempotency_key:
                    raise AsmError(
                        "already_exists",
                        "A run with this idempotency key already exists in the session",
                        {"idempotency_key": run.idempotency_key, "run_id": str(other.id)},
                    )
            self._runs[run.id] = copy.deepcopy(run)
            return copy.deepcopy(run)

    def run_get(self, run_id: uuid.UUID) -> RunRecord:
        with self._lock:
            found = self._runs.get(run_id)
            if found is None:
                raise run_not_found(run_id)
            return copy.deepcopy(found)

    def run_list(
        self, session_id: uuid.UUID, *, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        with self._lock:
            found = [
                copy.deepcopy(r)
                for r in sorted(self._runs.values(), key=lambda r: (r.created_at, r.id))
                if r.session_id == session_id and (status is None or r.status == status)
            ]
        n = valid_limit(limit)
        return found[:n] if n else found

    def run_get_active(self, session_id: uuid.UUID) -> RunRecord | None:
        with self._lock:
            for run in self._runs.values():
                if run.session_id == session_id and run.status == "running":
                    return copy.deepcopy(run)
        return None

    # -- events --------------------------------------------------------------------------
    def event_append(self, session_id: uuid.UUID, event: NewEvent) -> EventRecord:
        return self.event_append_many(session_id, [event])[0]

    def event_append_many(
        self, session_id: uuid.UUID, events: Sequence[NewEvent]
    ) -> list[EventRecord]:
        if not events:
            return []
        payloads = [validate_event(e.type, e.data) for e in events]
        with self._lock:
            if session_id not in self._sessions:
                raise session_not_found(session_id)
            for run_id in {e.run_id for e in events if e.run_id is not None}:
                run = self._runs.get(run_id)
                if run is None or run.session_id != session_id:
                    raise AsmError(
                        "run_not_found",
                        f"Run not found in session {session_id}: {run_id}",
                        {"session_id": str(session_id), "run_id": str(run_id)},
                    )
            log = self._events[session_id]
            out: list[EventRecord] = []
            for new, data in zip(events, payloads, strict=True):
                stored = self._by_id.get(new.id) if new.id is not None else None
                if stored is None:
                    stored = EventRecord(
                        id=new.id or uuid.uuid4(),
                        session_id=session_id,
                        run_id=new.run_id,
                        sequence_number=self._last_seq.get(session_id, 0) + 1,
                        type=new.type,
                        data=copy.deepcopy(dict(data)),
                        metadata=copy.deepcopy(dict(new.metadata)),
                        provider=new.provider,
                        timestamp=utcnow(),
                    )
                    log.append(stored)
                    self._last_seq[session_id] = stored.sequence_number
                    self._by_id[stored.id] = stored
                out.append(copy.deepcopy(stored))
            return out

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
    ) -> list[EventRecord]:
        lo, hi, n = valid_cursor(after), valid_cursor(before), valid_limit(limit)
        wanted = type_filter(types)
        with self._lock:
            log = list(self._events.get(session_id, ()))
        # The log is in sequence order, so `after` is a binary search; other filters scan.
        if lo is not None:
            log = log[bisect.bisect_right(log, lo, key=lambda e: e.sequence_number) :]
        found = [
            e
            for e in log
            if (hi is None or e.sequence_number < hi)
            and (run_id is None or e.run_id == run_id)
            and _type_ok(e, wanted)
            and (since is None or e.timestamp >= since)
        ]
        return [copy.deepcopy(e) for e in (found[:n] if n else found)]

    def event_prune_range(
        self,
        session_id: uuid.UUID,
        *,
        run_id: uuid.UUID,
        from_sequence: int,
        to_sequence: int,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> EventRecord | None:
        prune_range_check(run_id, from_sequence, to_sequence)
        payload = validate_event(PRUNED_MARKER_TYPE, data)
        with self._lock:
            log = self._events.get(session_id, [])
            lo = bisect.bisect_left(log, from_sequence, key=_sequence_of)
            hi = bisect.bisect_right(log, to_sequence, key=_sequence_of)
            doomed = log[lo:hi]
            if len(doomed) != to_sequence - from_sequence + 1 or any(
                e.type != "message_streamed" or e.run_id != run_id for e in doomed
            ):
                return None
            last = doomed[-1]
            marker = EventRecord(
                id=uuid.uuid4(),
                session_id=session_id,
                run_id=run_id,
                sequence_number=to_sequence,
                type=PRUNED_MARKER_TYPE,
                data=copy.deepcopy(dict(payload)),
                metadata=copy.deepcopy(dict(metadata)),
                provider=last.provider,
                timestamp=last.timestamp,
            )
            log[lo:hi] = [marker]
            for e in doomed:
                del self._by_id[e.id]
            self._by_id[marker.id] = marker
            return copy.deepcopy(marker)

    def latest_sequence(self, session_id: uuid.UUID) -> int:
        with self._lock:
            return self._last_seq.get(session_id, 0)

    # -- run ownership -------------------------------------------------------------------
    def session_merge_metadata(self, session_id: uuid.UUID, patch: Mapping[str, Any]) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise session_not_found(session_id)
            session.metadata = {**session.metadata, **copy.deepcopy(dict(patch))}
            session.updated_at = utcnow()

    def run_claim_next(
        self, session_id: uuid.UUID, *, owner: str, lease_ms: int
    ) -> RunRecord | None:
        with self._lock:
            runs = sorted(
                (r for r in self._runs.values() if r.session_id == session_id),
                key=lambda r: (r.created_at, r.id),
            )
            if any(r.status == "running" for r in runs):
                return None
            run = next((r for r in runs if r.status == "pending"), None)
            if run is None:
                return None
            now = utcnow()
            run.status = "running"
            run.attempt += 1
            run.lease_owner = owner
            run.lease_expires_at = now + timedelta(milliseconds=lease_ms)
            run.started_at = now
            run.waiting_reason = ""
            return copy.deepcopy(run)

    def run_renew_lease(
        self, run_id: uuid.UUID, *, attempt: int, owner: str, lease_ms: int
    ) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or not _owned(run, attempt, owner):
                return False
            run.lease_expires_at = utcnow() + timedelta(milliseconds=lease_ms)
            return True

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
    ) -> RunRecord | None:
        check_finish_status(status)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status != "running" or run.attempt != attempt:
                return None
            if session_metadata:
                self.session_merge_metadata(run.session_id, session_metadata)
            self.event_append_many(run.session_id, [*events, terminal])
            run.status = status
            run.output = copy.deepcopy(output)
            run.error = copy.deepcopy(error)
            run.token_usage = dict(token_usage)
            run.cost_usd = cost_usd
            run.metadata = {**run.metadata, **copy.deepcopy(dict(metadata))}
            run.ended_at = utcnow()
            run.lease_owner, run.lease_expires_at = "", None
            return copy.deepcopy(run)


def _sequence_of(e: EventRecord) -> int:
    return e.sequence_number


def _type_ok(e: EventRecord, wanted: frozenset[str] | None) -> bool:
    if wanted is None or e.type in wanted:
        return True
    return e.type == PRUNED_MARKER_TYPE and marker_matches(wanted, e.data)


def _owned(run: RunRecord, attempt: int, owner: str) -> bool:
    return run.status == "running" and run.attempt == attempt and run.lease_owner == owner
