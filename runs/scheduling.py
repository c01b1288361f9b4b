"""Draining a session's queue and reaping runs whose worker was lost.

Invariants:
- One run at a time per session, in submission order: a drain holds the session lock
  (Redis `SET NX PX` with an owner token, renewed while held; local in embedded mode),
  claims the oldest pending run by compare-and-set (`run_claim_next`), executes it,
  and repeats until the session has none. The partial unique index on running runs is the
  second guard: a claim can never make two runs of a session `running`.
- A drain that cannot take the lock returns at once (the holder drains): no worker slot
  ever waits for a lock. After releasing the lock it re-checks for pending runs and goes
  again, so a run submitted while the holder was finishing is never stranded.
- Fleet-wide limits (`ASM_MAX_PARALLEL_SESSIONS`, `ASM_MAX_PARALLEL_RUNS`) are slots with
  TTLs (a dead worker's slots come back); when full, runs stay `pending` with a visible
  `waiting_reason` and the drain retries after `ASM_LIMIT_RETRY_S`. Owner budgets
  (`runs.budgets.budget_claim`) wait the same way (or fail the run, as the budget says).
- A session's pending runs are never stranded: besides the drain messages (deduplicated by
  `runs.dispatch`), the reaper's sweep wakes any active session whose pending runs have
  waited `ASM_STRANDED_AFTER_S` with nothing running.
- Traced (`runs.telemetry`): `asm.session.drain` per drain, `asm.run.claim` per claim
  (with the queue wait), the executor's `asm.run` under the drain. The reaper's terminal
  moves send `runs.signals.run_finished` after commit.
- The reaper finds running runs whose lease lapsed and, fenced by attempt number, ends them
  `failed` with `worker_lost` (or `cancelled` if a cancel was requested), or puts them
  back to `pending` when attempts remain (`run_requeued`); then it wakes the session.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from opentelemetry.trace import Span

from asm_core.event_types import EventType
from asm_core.lifecycle import RunStatus, SessionStatus
from asm_core.records import RunRecord
from events.services import event_append
from runs.bootstrap import build_executor
from runs.budgets import budget_claim
from runs.coordination import Coordinator, Heartbeat, coordinator
from runs.dispatch import drain_enqueue, drain_flag
from runs.models import Run
from runs.signals import run_finished, signal_send_on_commit
from runs.store import DjangoSessionStore
from runs.telemetry import span_scope
from sessions.models import Session

logger = logging.getLogger(__name__)

_LOST_MESSAGE = "The worker executing the run was lost (its lease expired)"


def _limit(value: int) -> int | None:
    return value if value > 0 else None


_QUEUE_STATE_SQL = (
    f"SELECT s.status, EXISTS(SELECT 1 FROM {Run._meta.db_table} r "
    f"WHERE r.session_id = s.id AND r.status = 'pending') "
    f"FROM {Session._meta.db_table} s WHERE s.id = %s"
)


def _queue_state(session_id: uuid.UUID) -> tuple[str | None, bool]:
    """(session status, whether it has a pending run), in one query (hand-written: it runs
    up to three times per drained run, and the ORM's compilation cost more than the query)."""
    conn = connections[router.db_for_read(Session)]
    with conn.cursor() as cursor:
        cursor.execute(_QUEUE_STATE_SQL, [Session._meta.pk.get_db_prep_value(session_id, conn)])
        found = cursor.fetchone()
    return (str(found[0]), bool(found[1])) if found else (None, False)


def _has_runnable(session_id: uuid.UUID) -> bool:
    status, has_pending = _queue_state(session_id)
    return status == SessionStatus.ACTIVE and has_pending


def _set_waiting(session_id: uuid.UUID, reason: str) -> None:
    Run.objects.filter(session_id=session_id, status=RunStatus.PENDING).exclude(
        waiting_reason=reason
    ).update(waiting_reason=reason)


def session_drain(*, session_id: uuid.UUID, worker_id: str) -> None:
    """Execute the session's pending runs one by one, oldest first, if no one else is.

    Traced as ``asm.session.drain``: each claim is an ``asm.run.claim`` child (with the
    run's queue wait) and each executed run's ``asm.run`` span is a child too."""
    attributes = {"asm.session_id": str(session_id), "asm.worker": worker_id}
    with span_scope("asm.session.drain", attributes) as span:
        span.set_attribute("asm.drain.locked", _session_drain(session_id, worker_id))


def _session_drain(session_id: uuid.UUID, worker_id: str) -> bool:
    """The drain; False when another holder had the session's lock."""
    coord = coordinator()
    coord.flag_clear(drain_flag(session_id))  # from now on, a new submit sends a new drain
    ttl = settings.ASM_SESSION_LOCK_TTL_MS
    for _ in range(3):
        lock = coord.lock(f"session:{session_id}", ttl)
        if not lock.acquire():
            return False  # the holder drains, and re-checks after it lets go
        try:
            with Heartbeat(ttl / 3000, lock.renew):
                retry = _drain_locked(session_id, worker_id, coord)
        finally:
            lock.release()
        if retry or not _has_runnable(session_id):
            return True
    drain_enqueue(session_id)  # still more: hand over to a fresh task rather than loop
    return True


def _drain_locked(session_id: uuid.UUID, worker_id: str, coord: Coordinator) -> bool:
    """Drain while holding the lock. Returns True when a retry was scheduled (limits)."""
    store = DjangoSessionStore()
    executor = build_executor(worker_id)
    lease = settings.ASM_RUN_LEASE_MS
    sessions = coord.slots("sessions", _limit(settings.ASM_MAX_PARALLEL_SESSIONS))
    runs = coord.slots("runs", _limit(settings.ASM_MAX_PARALLEL_RUNS))
    member = str(session_id)  # one run at a time per session: the session names its slot
    holding_session = False
    try:
        while True:
            status, has_pending = _queue_state(session_id)
            if status != SessionStatus.ACTIVE or not has_pending:
                if status == SessionStatus.PAUSED and has_pending:
                    _set_waiting(session_id, "the session is paused")
                return False
            if not holding_session:
                if not sessions.acquire(member, lease):
                    return _retry_later(
                        session_id,
                        f"max_parallel_sessions ({settings.ASM_MAX_PARALLEL_SESSIONS}) reached",
                    )
                holding_session = True
            if not runs.acquire(member, lease):
                return _retry_later(
                    session_id, f"max_parallel_runs ({settings.ASM_MAX_PARALLEL_RUNS}) reached"
                )
            try:
                with span_scope("asm.run.claim", {"asm.session_id": member}) as span:
                    claim = budget_claim(store, session_id, owner=worker_id, lease_ms=lease)
                    _claim_attributes(span, claim.run, claim.wait_reason)
                if claim.wait_reason:  # the owner's budget is spent (runs.budgets)
                    return _retry_later(session_id, claim.wait_reason)
                run = claim.run
                if run is None:
                    if Run.objects.filter(session_id=session_id, status=RunStatus.RUNNING).exists():
                        # A run is still `running` (its worker may be gone): its drain, or
                        # the reaper, ends or requeues it and wakes this session again.
                        return True
                    continue  # the pending run went (cancelled): look again
                with (
                    claim,  # on exit: the run's budget reservation is settled
                    Heartbeat(
                        lease / 3000,
                        lambda: (runs.renew(member, lease), sessions.renew(member, lease)),
                    ),
                ):
                    executor.execute(run, claimed=True)
            finally:
                runs.release(member)
    finally:
        if holding_session:
            sessions.release(member)


def _claim_attributes(span: Span, run: RunRecord | None, wait_reason: str | None) -> None:
    """What a claim span records: the run and how long it waited in the queue (ms)."""
    if not span.is_recording():
        return
    if wait_reason:
        span.set_attribute("asm.claim.waiting", wait_reason)
    if run is None:
        span.set_attribute("asm.claim.found", False)
        return
    span.set_attributes({"asm.claim.found": True, "asm.run_id": str(run.id)})
    span.set_attributes({"asm.run.attempt": run.attempt, "asm.provider": run.provider})
    if run.started_at is not None and run.created_at is not None:
        waited = (run.started_at - run.created_at).total_seconds() * 1000
        span.set_attribute("asm.queue.wait_ms", round(waited, 3))


def _retry_later(session_id: uuid.UUID, reason: str) -> bool:
    _set_waiting(session_id, reason)
    drain_enqueue(session_id, countdown=settings.ASM_LIMIT_RETRY_S)
    return True


# --------------------------------------------------------------------------- reaper
def run_reap_stale(*, now: datetime | None = None) -> int:
    """End or requeue every running run whose lease lapsed. Returns how many it handled.

    Then it wakes every active session whose oldest pending run has waited longer than
    `ASM_STRANDED_AFTER_S` with nothing running: its drain message was lost.
    """
    now = now or timezone.now()
    stale = list(
        Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list(
            "id", flat=True
        )[:500]
    )
    reaped = sum(_reap_one(run_id, now) for run_id in stale)
    _wake_stranded(now)
    return reaped


def _wake_stranded(now: datetime) -> None:
    running = Run.objects.filter(session_id=OuterRef("session_id"), status=RunStatus.RUNNING)
    stranded = (
        Run.objects.filter(
            status=RunStatus.PENDING,
            created_at__lt=now - timedelta(seconds=settings.ASM_STRANDED_AFTER_S),
            session__status=SessionStatus.ACTIVE,
        )
        .exclude(Exists(running))
        .values_list("session_id", flat=True)
        .distinct()[:1000]
    )
    for session_id in stranded:
        logger.warning("session %s has pending runs and no drain: waking it", session_id)
        drain_enqueue(session_id)


def _reap_one(run_id: uuid.UUID, now: datetime) -> bool:
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if (
            run is None
            or run.status != RunStatus.RUNNING
            or run.lease_expires_at is None
            or run.lease_expires_at >= now
        ):
            return False  # finished or renewed meanwhile
        lost_attempt = run.attempt
        run.lease_owner, run.lease_expires_at = "", None
        meta = {"actor": "system:reaper"}
        data: dict[str, object]
        if run.cancel_requested_at is not None:
            run.status, run.ended_at = RunStatus.CANCELLED, now
            run.error = {"code": "cancelled", "message": "Run was cancelled"}
            event_type, data = EventType.RUN_CANCELLED, {"reason": "worker_lost"}
        elif run.attempt < run.max_attempts:
            run.status = RunStatus.PENDING
            run.waiting_reason = f"requeued after attempt {lost_attempt} lost its worker"
            event_type, data = (
                EventType.RUN_REQUEUED,
                {"attempt": lost_attempt, "reason": "worker_lost"},
            )
        else:
            run.status, run.ended_at = RunStatus.FAILED, now
            run.error = {"code": "worker_lost", "message": _LOST_MESSAGE}
            event_type, data = (
                EventType.RUN_FAILED,
                {"error_code": "worker_lost", "error_message": _LOST_MESSAGE},
            )
        run.save(
            update_fields=[
                "status",
                "ended_at",
                "error",
                "lease_owner",
                "lease_expires_at",
                "waiting_reason",
            ]
        )
        event_append(
            session_id=run.session_id,
            type=event_type,
            data=data,
            run_id=run.id,
            metadata=meta,
            provider=run.provider,
        )
        if run.status != RunStatus.PENDING:
            signal_send_on_commit(run_finished, Run, run=run, status=run.status)
        logger.warning("reaped run %s (attempt %s): now %s", run.id, lost_attempt, run.status)
        drain_enqueue(run.session_id)
        # The dead worker's session lock may outlive its lease: that first drain then finds
        # the lock taken and returns. Wake the session again once the lock has surely expired.
        drain_enqueue(run.session_id, countdown=settings.ASM_SESSION_LOCK_TTL_MS / 1000)
    return True
