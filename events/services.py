"""The event store's write side: `event_append` and `event_append_many`.

Invariants (docs/event-store.md explains them at length):
- A session's sequence numbers are 1..n with no gap and no duplicate. They are allocated in
  the same transaction (often the same statement) as the insert, by bumping the session's
  counter row: `UPDATE session SET last_sequence = last_sequence + k ... RETURNING`. That row
  lock is the only lock taken, so appends to different sessions never wait for each other.
- A batch of k events gets k consecutive numbers from one counter bump, in one transaction.
- Event ids are globally unique (primary key). Appending an id that is already stored
  returns the stored event (its original session and sequence number) and changes nothing:
  the insert fails on the primary key, its statement (or savepoint) rolls back, counter
  bump included, and the stored rows are read back.
- Every payload is validated against its type's schema before anything is written; a bad
  event makes the whole batch fail and writes nothing.
- Only this module inserts new events; there is no update path, and the one delete path is
  retention (`events.retention`: finished runs' `message_streamed` chunks replaced by an
  `events_pruned` marker at the range's last number; the counter never moves back).
- Secrets (asm_core.redaction via `asm_project.logging.settings_redactor`) are masked in
  every payload and metadata before validation; payloads without a suspect string are not
  copied for it.
- Newly stored events are published to the session's channel-layer group after commit
  (`events.publish`); re-appended (deduplicated) ones are not published again.

Locking precondition: callers may hold an open transaction (the lifecycle services do). The
append then runs in a savepoint, and the session's counter row stays locked until the
caller commits, which serializes other appends to that session (only that session).
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from django.db import IntegrityError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.base import ModelState
from django.db.models.signals import post_init
from django.utils import timezone

from asm_core.errors import AsmError, session_not_found
from asm_core.event_types import validate_event
from asm_core.records import NewEvent
from asm_project.logging import settings_redactor
from events.models import Event
from events.publish import event_json, events_publish
from runs.models import Run
from sessions.models import Session

__all__ = ["NewEvent", "event_append", "event_append_many"]

# Rows per INSERT statement: 9 parameters a row stays far below every backend's limit.
_CHUNK = 500
_DEDUP_RETRIES = 5


_SCALARS = (str, int, float, bool, type(None))


def _own_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A copy the caller cannot change afterwards: shallow for flat payloads (most events,
    and cheap), deep when a value is itself a container."""
    if not value:
        return {}
    if all(isinstance(v, _SCALARS) for v in value.values()):
        return dict(value)
    return copy.deepcopy(dict(value))


@dataclass(slots=True)
class _Row:
    id: uuid.UUID
    run_id: uuid.UUID | None
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    provider: str
    timestamp: datetime
    given_id: bool  # the caller chose the id (so it may already be stored)


def event_append(
    *,
    session_id: uuid.UUID,
    type: str,
    data: Mapping[str, Any] | None = None,
    run_id: uuid.UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
    provider: str = "",
    event_id: uuid.UUID | None = None,
) -> Event:
    """Append one event to a session's log and return it, with its sequence number."""
    new = NewEvent(
        type=type,
        data=data or {},
        run_id=run_id,
        metadata=metadata or {},
        provider=provider,
        id=event_id,
    )
    return event_append_many(session_id=session_id, events=[new])[0]


def event_append_many(*, session_id: uuid.UUID, events: Sequence[NewEvent]) -> list[Event]:
    """Append events in order, in one transaction, k numbers allocated at once.

    Returns the stored events in input order; an event whose id was already stored comes back
    as the stored one (so a retried batch returns exactly what the first attempt stored).
    """
    if not events:
        return []
    rows = _rows(events)
    using = router.db_for_write(Event)
    conn = connections[using]
    _check_runs(using, session_id, {r.run_id for r in rows if r.run_id is not None})
    try:
        stored, wire = _insert_atomically(conn, session_id, rows)
        events_publish(session_id, wire)
        return stored
    except IntegrityError:
        # An id is already stored (by an earlier call or a concurrent one): read it back.
        return _insert_deduplicated(conn, session_id, rows)


# --------------------------------------------------------------------------- internals
def _rows(events: Sequence[NewEvent]) -> list[_Row]:
    now = timezone.now()
    ids = _fresh_ids(sum(1 for e in events if e.id is None))
    redactor = settings_redactor()  # secrets never stored (docs/audit-and-logs.md)
    return [
        _Row(
            id=e.id or next(ids),
            run_id=e.run_id,
            type=e.type,
            # ours, not the caller's; `redact` returns the same object when there is no secret
            data=_own_copy(validate_event(e.type, redactor.redact(e.data))),
            metadata=_own_copy(redactor.redact(e.metadata)),
            provider=e.provider,
            timestamp=now,
            given_id=e.id is not None,
        )
        for e in events
    ]


def _fresh_ids(n: int) -> Iterator[uuid.UUID]:
    """n random (version 4) UUIDs from one `os.urandom` call: `uuid.uuid4()` makes a system
    call per id, and `UUID(bytes=..., version=4)` re-checks its arguments each time; together
    they were a fifth of a batch append's Python time. The version and variant bits are set
    as `uuid4` sets them (checked against `uuid.UUID` at import)."""
    raw = os.urandom(16 * n)
    return (_uuid4_from(raw[i : i + 16]) for i in range(0, 16 * n, 16))


_NEW_UUID = uuid.UUID.__new__
_SET = object.__setattr__
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4_from(sixteen: bytes) -> uuid.UUID:
    value = _NEW_UUID(uuid.UUID)
    _SET(value, "int", (int.from_bytes(sixteen, "big") & _V4_CLEAR) | _V4_SET)
    _SET(value, "is_safe", uuid.SafeUUID.unknown)
    return value


if _uuid4_from(b"\xff" * 16) != uuid.UUID(bytes=b"\xff" * 16, version=4):  # pragma: no cover
    raise RuntimeError("events.services._uuid4_from no longer matches uuid.UUID")


# (alias, run_id, session_id) triples known to be valid. Runs never move between sessions and
# cannot be deleted while they have events, so a positive answer holds for the life of the
# process; negative answers are never cached (the run may be created a moment later).
_KNOWN_RUNS: set[tuple[str, uuid.UUID, uuid.UUID]] = set()
_KNOWN_RUNS_MAX = 10_000


def event_run_known(using: str, run_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Note that a run belongs to a session (its store just read it), saving a lookup later."""
    if len(_KNOWN_RUNS) > _KNOWN_RUNS_MAX:
        _KNOWN_RUNS.clear()
    _KNOWN_RUNS.add((using, run_id, session_id))


def _check_runs(using: str, session_id: uuid.UUID, run_ids: set[uuid.UUID]) -> None:
    """Every run_id must name a run of this session (the FK alone would not check that)."""
    unknown = {r for r in run_ids if (using, r, session_id) not in _KNOWN_RUNS}
    if not unknown:
        return
    found = set(
        Run.objects.using(using)
        .filter(id__in=unknown, session_id=session_id)
        .values_list("id", flat=True)
    )
    if len(_KNOWN_RUNS) > _KNOWN_RUNS_MAX:
        _KNOWN_RUNS.clear()
    _KNOWN_RUNS.update((using, r, session_id) for r in found)
    missing = unknown - found
    if missing:
        run_id = sorted(missing)[0]
        raise AsmError(
            "run_not_found",
            f"Run not found in session {session_id}: {run_id}",
            {"session_id": str(session_id), "run_id": str(run_id)},
        )


def _insert_atomically(
    conn: BaseDatabaseWrapper, session_id: uuid.UUID, rows: list[_Row]
) -> tuple[list[Event], list[dict[str, Any]]]:
    """Bump the counter by len(rows) and insert them: all or nothing. Returns the stored
    events and their public JSON form (`event_json`), for the doorbell.

    Inside a caller's transaction a savepoint is needed only when a caller-chosen id may
    already be stored (so that the expected duplicate error spares the caller's
    transaction); fresh uuid4 ids cannot collide, and any other error should fail the
    caller's transaction anyway.
    """
    guard = (
        transaction.atomic(using=conn.alias)
        if not conn.in_atomic_block or any(r.given_id for r in rows)
        else nullcontext()
    )
    k = len(rows)
    if conn.vendor == "postgresql" and k <= _CHUNK:
        wire = _wire(session_id, rows)
        if conn.in_atomic_block:
            with guard:
                last = _bump_and_insert_one_statement(conn, session_id, wire)
        else:
            last = _bump_and_insert_one_statement(conn, session_id, wire)  # autocommit: atomic
        for item in wire:
            item["sequence_number"] += last - k  # from the ordinal to the allocated number
        return _stored(conn.alias, session_id, rows, first=last - k + 1), wire
    with guard:
        last = _bump(conn, session_id, k)
        _insert(conn, session_id, rows, first=last - k + 1)
    stored = _stored(conn.alias, session_id, rows, first=last - k + 1)
    return stored, [event_json(e) for e in stored]


def _insert_deduplicated(
    conn: BaseDatabaseWrapper, session_id: uuid.UUID, rows: list[_Row]
) -> list[Event]:
    for _ in range(_DEDUP_RETRIES):
        try:
            with transaction.atomic(using=conn.alias):
                stored = Event.objects.using(conn.alias).in_bulk([r.id for r in rows])
                fresh: dict[uuid.UUID, _Row] = {}
                for r in rows:
                    if r.id not in stored:
                        fresh.setdefault(r.id, r)  # a repeated id inside the batch: first wins
                todo = list(fresh.values())
                if todo:
                    last = _bump(conn, session_id, len(todo))
                    _insert(conn, session_id, todo, first=last - len(todo) + 1)
                    fresh_events = _stored(conn.alias, session_id, todo, first=last - len(todo) + 1)
                    stored.update((e.id, e) for e in fresh_events)
                    events_publish(session_id, [event_json(e) for e in fresh_events])
            return [stored[r.id] for r in rows]
        except IntegrityError as exc:
            last_error = exc  # a concurrent writer stored one of our ids meanwhile: go again
    raise AsmError(
        "storage_write_failed",
        "Could not append events",
        {"session_id": str(session_id), "reason": str(last_error)},
    )


def _prep(conn: BaseDatabaseWrapper, row: _Row, session_id: uuid.UUID) -> list[Any]:
    f = _FIELDS
    return [
        f["id"].get_db_prep_value(row.id, conn),
        f["session"].get_db_prep_value(session_id, conn),
        f["run"].get_db_prep_value(row.run_id, conn),
        row.type,
        f["data"].get_db_prep_value(row.data, conn),
        f["metadata"].get_db_prep_value(row.metadata, conn),
        row.provider,
        f["timestamp"].get_db_prep_value(row.timestamp, conn),
    ]


_FIELDS = {f.name: f for f in Event._meta.concrete_fields}
_E = Event._meta.db_table
_S = Session._meta.db_table
_COLS = "id, session_id, run_id, sequence_number, type, data, metadata, provider, timestamp"


def _bump(conn: BaseDatabaseWrapper, session_id: uuid.UUID, k: int) -> int:
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {_S} SET last_sequence = last_sequence + %s WHERE id = %s "
            "RETURNING last_sequence",
            [k, Session._meta.pk.get_db_prep_value(session_id, conn)],
        )
        found = cur.fetchone()
    if found is None:
        raise session_not_found(session_id)
    return int(found[0])


def _insert(conn: BaseDatabaseWrapper, session_id: uuid.UUID, rows: list[_Row], first: int) -> None:
    with conn.cursor() as cur:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            params: list[Any] = []
            for offset, row in enumerate(chunk, start=first + start):
                p = _prep(conn, row, session_id)
                params += [p[0], p[1], p[2], offset, *p[3:]]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cur.execute(f"INSERT INTO {_E} ({_COLS}) VALUES {values}", params)


def _wire(session_id: uuid.UUID, rows: list[_Row]) -> list[dict[str, Any]]:
    """The rows in their public JSON form (`events.publish.event_json`), with the ordinal
    1..k standing in for the sequence number until the insert allocates the real ones."""
    sid = str(session_id)
    stamps: dict[datetime, str] = {}  # a batch shares one timestamp: format it once
    return [
        {
            "id": str(r.id),
            "session_id": sid,
            "run_id": str(r.run_id) if r.run_id else None,
            "sequence_number": ordinal,
            "type": r.type,
            "data": r.data,
            "metadata": r.metadata,
            "provider": r.provider,
            "timestamp": stamps.get(r.timestamp)
            or stamps.setdefault(r.timestamp, r.timestamp.isoformat()),
        }
        for ordinal, r in enumerate(rows, start=1)
    ]


def _bump_and_insert_one_statement(
    conn: BaseDatabaseWrapper, session_id: uuid.UUID, wire: list[dict[str, Any]]
) -> int:
    """PostgreSQL: counter bump and insert in ONE statement (one round trip, atomic).

    The rows travel as one JSON document (their public JSON form, see `_wire`) expanded by
    `jsonb_to_recordset`, so the SQL text is constant (psycopg converts it once) whatever
    the batch size. Returns the last allocated sequence number.
    """
    k = len(wire)
    try:
        # orjson: the same JSON, a tenth of the time; it refuses what it cannot represent
        # exactly (ints beyond 64 bits, non-string keys), which json.dumps then handles.
        document = orjson.dumps(wire).decode()
    except TypeError:
        try:
            document = json.dumps(wire)
        except (TypeError, ValueError) as exc:
            raise AsmError("validation_error", f"Event data is not JSON: {exc}") from exc
    numbers = [
        int(r[0])
        for r in _pg_prepared(conn, _ONE_STATEMENT, [k, session_id, session_id, k, document])
    ]
    if not numbers:
        raise session_not_found(session_id)
    return max(numbers)


def _pg_prepared(conn: BaseDatabaseWrapper, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run `sql` as a server-side prepared statement on the connection's psycopg connection
    and return its rows.

    Django's PostgreSQL cursors bind parameters client-side, so the server parses and plans
    every statement anew; for the append statement that planning was a third of a single
    append's server time. Here a server-binding cursor on the same psycopg connection (same
    session, same transaction) prepares it once per connection; psycopg keeps the prepared
    statements. Errors are Django's (`wrap_database_errors`), so a duplicate id still raises
    `django.db.IntegrityError`. Behind a pooler that cannot keep prepared statements,
    ``ASM_DB_PREPARED_STATEMENTS=false`` sets the connections' ``prepare_threshold`` to None
    and psycopg then binds server-side without preparing.
    """
    conn.ensure_connection()
    conn.validate_no_broken_transaction()
    with conn.wrap_database_errors, psycopg.Cursor(conn.connection) as cur:
        cur.execute(sql, params, prepare=True)
        return cur.fetchall()


_ONE_STATEMENT = (
    f"WITH c AS (UPDATE {_S} SET last_sequence = last_sequence + %s WHERE id = %s "
    f"RETURNING last_sequence) "
    f"INSERT INTO {_E} ({_COLS}) "
    f"SELECT v.id, %s::uuid, v.run_id, c.last_sequence - %s + v.sequence_number, v.type, "
    f"v.data, v.metadata, v.provider, v.timestamp FROM c, jsonb_to_recordset(%s::jsonb) "
    f"AS v(id uuid, run_id uuid, sequence_number bigint, type text, data jsonb, "
    f'metadata jsonb, provider text, "timestamp" timestamptz) '
    f"RETURNING sequence_number"
)


def _stored(alias: str, session_id: uuid.UUID, rows: list[_Row], first: int) -> list[Event]:
    """Model instances for what was just inserted, built without reading it back.

    Built as `Model.from_db` would build them, minus its per-field `setattr` (a third of a
    batch append's Python time): the concrete fields go straight into the instance dict,
    which is where Django's field descriptors keep them. A `post_init` receiver for Event
    would be skipped that way, so when one is connected the regular `from_db` is used.
    """
    if post_init.has_listeners(Event):
        return [
            Event.from_db(
                alias,
                _ATTNAMES,
                (
                    r.id,
                    session_id,
                    r.run_id,
                    seq,
                    r.type,
                    r.data,
                    r.metadata,
                    r.provider,
                    r.timestamp,
                ),
            )
            for seq, r in enumerate(rows, start=first)
        ]
    new = Event.__new__
    out = []
    for seq, r in enumerate(rows, start=first):
        state = ModelState()
        state.adding = False
        state.db = alias
        event = new(Event)
        event.__dict__.update(
            _state=state,
            id=r.id,
            session_id=session_id,
            run_id=r.run_id,
            sequence_number=seq,
            type=r.type,
            data=r.data,
            metadata=r.metadata,
            provider=r.provider,
            timestamp=r.timestamp,
        )
        out.append(event)
    return out


_ATTNAMES = [f.attname for f in Event._meta.concrete_fields]
if _ATTNAMES != [
    "id",
    "session_id",
    "run_id",
    "sequence_number",
    "type",
    "data",
    "metadata",
    "provider",
    "timestamp",
]:  # pragma: no cover - a schema change must update _stored
    raise RuntimeError("events.services._stored must list Event's concrete fields")
