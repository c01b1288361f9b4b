"""`DjangoSessionStore`: the SessionStore port over the ORM (the service's store).

It converts between models and `asm_core.records` by field name and delegates events to
`events.services` / `events.selectors`, so there is one write path for the log. Saves are
upserts that never touch `Session.last_sequence` (only event appends move the counter).
The database's constraints back the port's rules: a second running run in a session is
`invalid_operation`, a repeated idempotency key `already_exists`. A claim sends
`runs.signals.run_started` and a finish `run_finished`, both after commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.db import IntegrityError, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from asm_core.errors import AsmError, run_not_found, session_not_found
from asm_core.lifecycle import RunStatus
from asm_core.records import (
    RUN_FIELDS,
    SESSION_FIELDS,
    EventRecord,
    NewEvent,
    RunRecord,
    SessionRecord,
)
from asm_core.store import check_finish_status, valid_limit
from asm_project.logging import settings_redactor
from events import retention as event_retention
from events import selectors as event_selectors
from events import services as event_services
from events.models import Event
from runs.models import Run
from runs.signals import run_finished, run_started, signal_send_on_commit
from sessions.models import Session
from sessions.services import session_lock

M = TypeVar("M", bound=models.Model)


def event_record(e: Event) -> EventRecord:
    return EventRecord(
        id=e.id,
        session_id=e.session_id,
        run_id=e.run_id,
        sequence_number=e.sequence_number,
        type=e.type,
        data=e.data,
        metadata=e.metadata,
        provider=e.provider,
        timestamp=e.timestamp,
    )


def session_record(s: Session) -> SessionRecord:
    return SessionRecord(**{f: getattr(s, f) for f in SESSION_FIELDS})


def run_record(r: Run) -> RunRecord:
    return RunRecord(**{f: getattr(r, f) for f in RUN_FIELDS})


def _upsert(model: type[M], pk: uuid.UUID, values: dict[str, Any]) -> None:
    """Update the row's named fields, or insert it; safe against a concurrent insert."""
    manager = model._default_manager
    with transaction.atomic():
        if manager.filter(pk=pk).update(**values):
            return
        try:
            with transaction.atomic():
                manager.create(pk=pk, **values)
        except IntegrityError:
            if not manager.filter(pk=pk).update(**values):
                raise


class DjangoSessionStore:
    # -- sessions ------------------------------------------------------------------------
    def session_save(self, session: SessionRecord) -> SessionRecord:
        values = {f: getattr(session, f) for f in SESSION_FIELDS if f != "id"}
        _upsert(Session, session.id, values)
        return session

    def session_get(self, session_id: uuid.UUID) -> SessionRecord:
        conn = connections[Session.objects.db]
        found = next(
            iter(
                Session.objects.raw(
                    _SESSION_SQL, [Session._meta.pk.get_db_prep_value(session_id, conn)]
                )
            ),
            None,
        )  # hand-written: read once per executed run (see _locked_run)
        if found is None:
            raise session_not_found(session_id)
        return session_record(found)

    def session_list(
        self, *, status: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]:
        qs = Session.objects.order_by("created_at", "id")
        if status is not None:
            qs = qs.filter(status=status)
        if agent_id is not None:
            qs = qs.filter(agent_id=agent_id)
        n = valid_limit(limit)
        return [session_record(s) for s in (qs[:n] if n else qs)]

    # -- runs ----------------------------------------------------------------------------
    def run_save(self, run: RunRecord) -> RunRecord:
        values = {f: getattr(run, f) for f in RUN_FIELDS if f != "id"}
        try:
            _upsert(Run, run.id, values)
        except IntegrityError as exc:
            raise self._run_conflict(run) from exc
        return run

    @staticmethod
    def _run_conflict(run: RunRecord) -> AsmError:
        others = Run.objects.filter(session_id=run.session_id).exclude(id=run.id)
        running = others.filter(status="running").values_list("id", flat=True).first()
        if run.status == "running" and running is not None:
            return AsmError(
                "invalid_operation",
                "The session already has a running run",
                {"session_id": str(run.session_id), "running_run_id": str(running)},
            )
        if run.idempotency_key is not None:
            return AsmError(
                "already_exists",
                "A run with this idempotency key already exists in the session",
                {"idempotency_key": run.idempotency_key},
            )
        return AsmError("storage_write_failed", "Could not save the run", {"run_id": str(run.id)})

    def run_get(self, run_id: uuid.UUID) -> RunRecord:
        found = Run.objects.filter(id=run_id).first()
        if found is None:
            raise run_not_found(run_id)
        return run_record(found)

    def run_list(
        self, session_id: uuid.UUID, *, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        qs = Run.objects.filter(session_id=session_id).order_by("created_at", "id")
        if status is not None:
            qs = qs.filter(status=status)
        n = valid_limit(limit)
        return [run_record(r) for r in (qs[:n] if n else qs)]

    def run_get_active(self, session_id: uuid.UUID) -> RunRecord | None:
        found = Run.objects.filter(session_id=session_id, status="running").first()
        return run_record(found) if found is not None else None

    # -- events --------------------------------------------------------------------------
    def event_append(self, session_id: uuid.UUID, event: NewEvent) -> EventRecord:
        return self.event_append_many(session_id, [event])[0]

    def event_append_many(
        self, session_id: uuid.UUID, events: Sequence[NewEvent]
    ) -> list[EventRecord]:
        stored = event_services.event_append_many(session_id=session_id, events=events)
        return [event_record(e) for e in stored]

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
        found = event_selectors.event_list(
            session_id=session_id,
            after=after,
            before=before,
            limit=limit,
            types=types,
            run_id=run_id,
            since=since,
        )
        return [event_record(e) for e in found]

    def latest_sequence(self, session_id: uuid.UUID) -> int:
        return event_selectors.latest_sequence(session_id=session_id)

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
        marker = event_retention.event_prune_range(
            session_id=session_id,
            run_id=run_id,
            from_sequence=from_sequence,
            to_sequence=to_sequence,
            data=data,
            metadata=metadata,
        )
        return event_record(marker) if marker is not None else None

    # -- run ownership -------------------------------------------------------------------
    def session_merge_metadata(self, session_id: uuid.UUID, patch: Mapping[str, Any]) -> None:
        conn = connections[Session.objects.db]
        if conn.vendor == "postgresql":
            # One statement (`||` merges top-level keys, as below); the UPDATE's row lock
            # orders it with other writers of the session.
            with conn.cursor() as cursor:
                cursor.execute(
                    _MERGE_METADATA_SQL,
                    [
                        json.dumps(dict(patch)),
                        timezone.now(),
                        Session._meta.pk.get_db_prep_value(session_id, conn),
                    ],
                )
                if cursor.rowcount == 0:
                    raise session_not_found(session_id)
            return
        with transaction.atomic(savepoint=False):  # no savepoint inside run_finish's transaction
            session = session_lock(session_id)
            session.metadata = {**session.metadata, **patch}
            session.updated_at = timezone.now()
            session.save(update_fields=["metadata", "updated_at"])

    def run_claim_next(
        self, session_id: uuid.UUID, *, owner: str, lease_ms: int
    ) -> RunRecord | None:
        try:
            with transaction.atomic():
                # One query: a running run (listed first) blocks the claim; else the oldest
                # pending one is locked and taken. Hand-written SQL (here and in run_finish):
                # these run once per run on every worker, and the ORM's query compilation
                # cost more than the database's work.
                conn = connections[Run.objects.db]
                run = _locked_run(conn, _CLAIM_SQL, [_db(conn, "session", session_id)])
                if run is None or run.status == RunStatus.RUNNING:
                    return None
                now = timezone.now()
                run.status = RunStatus.RUNNING
                run.attempt += 1
                run.lease_owner = owner
                run.lease_expires_at = now + timedelta(milliseconds=lease_ms)
                run.started_at = now
                run.waiting_reason = ""
                _update(conn, run, _CLAIM_FIELDS)
                event_services.event_run_known(conn.alias, run.id, session_id)
                signal_send_on_commit(run_started, Run, run=run, attempt=run.attempt)
                return run_record(run)
        except IntegrityError:
            return None  # another claimer won (the one-running-run index said no)

    def run_renew_lease(
        self, run_id: uuid.UUID, *, attempt: int, owner: str, lease_ms: int
    ) -> bool:
        expires = timezone.now() + timedelta(milliseconds=lease_ms)
        return bool(
            Run.objects.filter(
                id=run_id, attempt=attempt, lease_owner=owner, status=RunStatus.RUNNING
            ).update(lease_expires_at=expires)
        )

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
        with transaction.atomic():
            conn = connections[Run.objects.db]
            run = _locked_run(conn, _RUN_SQL, [_db(conn, "id", run_id)])
            if run is None or run.status != RunStatus.RUNNING or run.attempt != attempt:
                return None  # fenced: reaped, or finished by someone else
            run.status = status
            redactor = settings_redactor()  # secrets are never stored (docs/audit-and-logs.md)
            run.output = redactor.redact(output)
            run.error = redactor.redact(error)
            run.token_usage = dict(token_usage)
            run.cost_usd = cost_usd
            run.metadata = {**run.metadata, **metadata}
            routing = metadata.get("routing")
            if isinstance(routing, Mapping) and isinstance(routing.get("routed_provider"), str):
                run.routed_provider = routing["routed_provider"]  # the router's choice
            run.ended_at = timezone.now()
            run.lease_owner, run.lease_expires_at = "", None
            _update(conn, run, _FINISH_FIELDS)
            if session_metadata:
                self.session_merge_metadata(run.session_id, session_metadata)
            event_services.event_append_many(session_id=run.session_id, events=[*events, terminal])
            signal_send_on_commit(run_finished, Run, run=run, status=status)
        return run_record(run)


_R = Run._meta.db_table
_CLAIM_SQL = (
    f"SELECT * FROM {_R} WHERE session_id = %s AND status IN ('running', 'pending') "
    "ORDER BY CASE WHEN status = 'running' THEN 0 ELSE 1 END, created_at, id LIMIT 1"
)
_RUN_SQL = f"SELECT * FROM {_R} WHERE id = %s"
_S = Session._meta.db_table
_SESSION_SQL = f"SELECT * FROM {_S} WHERE id = %s"
_MERGE_METADATA_SQL = (
    f"UPDATE {_S} SET metadata = metadata || %s::jsonb, updated_at = %s WHERE id = %s"
)


_RUN_FIELDS: dict[str, models.Field[Any, Any]] = {f.name: f for f in Run._meta.concrete_fields}


def _db(conn: BaseDatabaseWrapper, field: str, value: Any) -> Any:
    """``value`` as the database takes it for Run's ``field`` (uuid, JSON, datetime...)."""
    return _RUN_FIELDS[field].get_db_prep_value(value, conn)


def _locked_run(conn: BaseDatabaseWrapper, sql: str, params: list[Any]) -> Run | None:
    """The one Run row ``sql`` selects, locked for the transaction (``FOR UPDATE`` where the
    backend has it; SQLite's IMMEDIATE transactions already hold the write lock)."""
    if conn.features.has_select_for_update:
        sql += " FOR UPDATE"
    return next(iter(Run.objects.using(conn.alias).raw(sql, params)), None)


def _update(conn: BaseDatabaseWrapper, run: Run, fields: list[str]) -> None:
    """Write ``fields`` of ``run`` (what ``save(update_fields=...)`` writes, in one statement)."""
    columns = ", ".join(f"{_RUN_FIELDS[f].column} = %s" for f in fields)
    params = [_db(conn, f, getattr(run, f)) for f in fields]
    with conn.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_R} SET {columns} WHERE id = %s", [*params, _db(conn, "id", run.id)]
        )


_CLAIM_FIELDS = [
    "status",
    "attempt",
    "lease_owner",
    "lease_expires_at",
    "started_at",
    "waiting_reason",
]
_FINISH_FIELDS = [
    "status",
    "output",
    "error",
    "token_usage",
    "cost_usd",
    "metadata",
    "routed_provider",
    "ended_at",
    "lease_owner",
    "lease_expires_at",
]
