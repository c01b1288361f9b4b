"""Run reads: queue position of a pending run."""

from __future__ import annotations

from django.db.models import Q

from asm_core.lifecycle import RunStatus
from runs.models import Run


def run_queue_position(*, run: Run) -> int | None:
    """1 for the next run to start in its session, 2 after it, ...; None unless pending."""
    if run.status != RunStatus.PENDING:
        return None
    ahead = Run.objects.filter(session_id=run.session_id, status=RunStatus.PENDING).filter(
        Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, id__lt=run.id)
    )
    return ahead.count() + 1
