"""Run reads: the permission-checked fetcher, and queue position of a pending run.

Tenancy invariant: a user sees only the runs of their own sessions (staff see all); another
owner's run answers like a missing one (`run_not_found`, HTTP 404).
"""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from asm_core.errors import run_not_found
from asm_core.lifecycle import RUN_TERMINAL, RunStatus
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


def run_list_for_session(*, session_id: uuid.UUID) -> QuerySet[Run]:
    """The session's runs, oldest first (call with a session from `session_get_for_user`)."""
    return Run.objects.filter(session_id=session_id).order_by("created_at", "id")


async def run_wait_for_user(
    *,
    run_id: uuid.UUID | str,
    user: AbstractBaseUser | AnonymousUser,
    timeout_s: float,
    poll_s: float = 0.1,
) -> Run:
    """The run once it is terminal, or as it is when `timeout_s` has passed (async).

    A long-poll that holds no thread while it waits: each poll is one short
    `run_get_for_user` in a worker thread, and the wait between polls is `asyncio.sleep`.
    Raises `run_not_found` like `run_get_for_user` (also if the run goes away meanwhile).
    """
    fetch = sync_to_async(run_get_for_user)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout_s)
    while True:
        run = await fetch(run_id=run_id, user=user)
        remaining = deadline - loop.time()
        if run.status in RUN_TERMINAL or remaining <= 0:
            return run
        await asyncio.sleep(min(poll_s, remaining))
