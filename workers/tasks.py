"""Celery tasks: thin, ids in, one service call each, nothing returned.

Explicit names (`workers.<name>`) so renaming a module never orphans queued messages.
`acks_late` + `reject_on_worker_lost` (settings) are safe because each task's first step is a
guard: the drain takes the session lock and claims by compare-and-set; the reaper is fenced
by attempt number; retention only replaces chunks that are still there. Ownership of a
running run is its database lease, not the message.
"""

from __future__ import annotations

import os
import threading
import uuid

from celery import Task, shared_task

from asm_project.logging import log_context


def worker_id(task: Task) -> str:  # type: ignore[type-arg]
    host = task.request.hostname or "local"
    return f"{host}:{os.getpid()}:{threading.get_ident()}"


@shared_task(bind=True, name="workers.session_drain", acks_late=True)
def session_drain_task(self: Task, session_id: str) -> None:  # type: ignore[type-arg]
    from runs.scheduling import session_drain

    with log_context(session_id=session_id, task_id=self.request.id):
        session_drain(session_id=uuid.UUID(session_id), worker_id=worker_id(self))


@shared_task(name="workers.run_reap_stale", acks_late=True)
def run_reap_stale_task() -> None:
    from runs.scheduling import run_reap_stale

    run_reap_stale()


@shared_task(name="workers.events_prune_streamed", acks_late=True)
def events_prune_streamed_task() -> None:
    """One retention pass (a no-op while ASM_RETENTION_STREAMED_DAYS is 0); idempotent."""
    from runs.retention import events_prune_streamed

    events_prune_streamed()


@shared_task(name="workers.ping", acks_late=True)
def ping_task(key: str | None = None) -> None:
    """A no-op for benchmarks and health checks.

    With `key`, it pushes "1" onto that Redis list (1 minute TTL) through the coordinator's
    client, so the sender can BLPOP it: the round trip of a bare task on this broker.
    """
    if key:
        from runs.coordination import coordinator

        client = getattr(coordinator(), "client", None)  # None: embedded, no Redis
        if client is not None:
            client.pipeline().rpush(key, "1").expire(key, 60).execute()
