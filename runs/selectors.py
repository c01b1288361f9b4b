"""Run reads: the permission-checked fetcher, and queue position of a pending run.

Tenancy invariant: a user sees only the runs of their own sessions (staff see all); another
owner's run answers like a missing one (`run_not_found`, HTTP 404).
"""

from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from asm_core.errors import run_not_found
from asm_core.lifecycle import RunStatus
from runs.models import Run
from sessions.selectors import session_list_for_user


def run_queue_position(*, run: Run) -> int | None:
    """1 for the next run to start in its session, 2 after it, ...; None unless pending."""
    if run.status != RunStatus.PENDING:
        return None
    ahead = Run.objects.filter(session_id=run.session_id, status=RunStatus.PENDING).filter(
        Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, id__lt=run.id)
    )
    return ahead.count() + 1


def run_list_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    """The runs `user` may see: those of their sessions, or all for staff."""
    return Run.objects.filter(session__in=session_list_for_user(user))


def run_get_for_user(*, run_id: uuid.UUID | str, user: AbstractBaseUser | AnonymousUser) -> Run:
    """The run if `user` may see its session; otherwise `run_not_found` (also for bad ids)."""
    try:
        rid = uuid.UUID(str(run_id))
    except ValueError:
        raise run_not_found(run_id) from None
    found = run_list_for_user(user).filter(id=rid).select_related("session").first()
    if found is None:
        raise run_not_found(run_id)
    return found
