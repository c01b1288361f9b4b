"""Asking a worker to drain a session's queue: a Celery message, sent after commit.

Invariants:
- The message is sent only once the transaction that created the work commits
  (`transaction.on_commit`), so a worker never looks before the run is visible. The task
  is addressed by name, so nothing here imports `workers` (nothing depends on it).
- At most one immediate drain message per session is in flight: a flag (`drain-queued`,
  set-if-absent with a short TTL) is set when one is sent and cleared by the drain as its
  first step. A submit that finds the flag set sends nothing: the queued drain has not
  started yet, so it will see the run. If a message is lost anyway (a worker died holding
  it), the flag expires after `ASM_DRAIN_FLAG_TTL_MS` and the reaper's sweep of stranded
  pending runs sends a new one. Delayed (countdown) drains are always sent.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from runs.coordination import coordinator

DRAIN_TASK = "workers.session_drain"
REAP_TASK = "workers.run_reap_stale"


def drain_flag(session_id: uuid.UUID) -> str:
    return f"drain-queued:{session_id}"


def drain_enqueue(session_id: uuid.UUID, *, countdown: float | None = None) -> None:
    """After the current transaction commits (at once outside one), enqueue a drain."""

    def send() -> None:
        from asm_project.celery import app

        if countdown is None and not coordinator().flag_set(
            drain_flag(session_id), settings.ASM_DRAIN_FLAG_TTL_MS
        ):
            return  # a drain for this session is already queued
        app.send_task(DRAIN_TASK, args=[str(session_id)], countdown=countdown)

    transaction.on_commit(send)
