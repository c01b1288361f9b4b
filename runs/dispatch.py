"""Asking a worker to drain a session's queue: a Celery message, sent after commit.

Invariant: the message is sent only once the transaction that created the work commits
(`transaction.on_commit`), so a worker never looks before the run is visible. The task is
addressed by name, so nothing here imports `workers` (nothing depends on it).
"""

from __future__ import annotations

import uuid

from django.db import transaction

DRAIN_TASK = "workers.session_drain"
REAP_TASK = "workers.run_reap_stale"


def drain_enqueue(session_id: uuid.UUID, *, countdown: float | None = None) -> None:
    """After the current transaction commits (at once outside one), enqueue a drain."""

    def send() -> None:
        from asm_project.celery import app

        app.send_task(DRAIN_TASK, args=[str(session_id)], countdown=countdown)

    transaction.on_commit(send)
