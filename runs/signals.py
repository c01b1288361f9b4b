"""Django signals for integrators: run and session lifecycle (docs/telemetry.md).

Connect a receiver (``@receiver(run_finished)``, in your app's ``ready``) to act on what
asm does without patching it:

- ``run_submitted(sender=Run, run)``: a run was queued by ``run_submit`` (not on an
  idempotent replay).
- ``run_started(sender=Run, run, attempt)``: a worker claimed the run; it is ``running``
  (once per attempt: a run requeued after a lost worker starts again).
- ``run_finished(sender=Run, run, status)``: the run reached a terminal status
  (``completed``, ``failed``, ``cancelled``, ``timeout``), however it got there: the
  executor's fenced finish, a cancel while queued, the reaper, a budget refusal.
- ``session_status_changed(sender=Session, session, status, previous_status)``: a session
  moved from ``previous_status`` to ``status`` (its creation as ``pending`` is not a change).

Invariants:
- Sent only after the transaction that made the change commits (``transaction.on_commit``;
  at once outside a transaction), so a receiver sees committed state, and never for a
  change that was rolled back. They are sent from the Django side (services, the Django
  store, the drain), never from the executor's provider thread.
- ``send_robust``: a receiver that raises is logged (logger ``django.dispatch``, with its
  traceback) and skipped; it can never fail a run or stop the other receivers. Receivers
  run synchronously in the sending process (a web process or a worker) and delay it by
  their running time: keep them short, or hand work to a queue.
- A signal with no receivers costs one list check (no on-commit hook is registered).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal

__all__ = [
    "run_finished",
    "run_started",
    "run_submitted",
    "session_status_changed",
    "signal_send_on_commit",
]

run_submitted = Signal()
run_started = Signal()
run_finished = Signal()
session_status_changed = Signal()


def signal_send_on_commit(signal: Signal, sender: type[Any], **kwargs: Any) -> None:
    """Send ``signal`` robustly once the current transaction commits (module docstring)."""
    if not signal.receivers:
        return
    transaction.on_commit(partial(_send, signal, sender, kwargs))


def _send(signal: Signal, sender: type[Any], kwargs: dict[str, Any]) -> None:
    # send_robust logs a receiver's exception itself (logger `django.dispatch`, ERROR, with
    # the traceback) and goes on with the other receivers.
    signal.send_robust(sender, **kwargs)
