"""Session reads, and THE permission-checked fetcher every view and consumer must use.

Tenancy invariant: a user sees only their own sessions (staff see all). Another owner's
session answers exactly like a missing one (`session_not_found`, HTTP 404), so ids do not
leak whether they exist.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from asm_core.errors import session_not_found
from sessions.models import Session


def session_list_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Session]:
    """The sessions `user` may see: their own, or all for staff; none for anonymous."""
    if not user.is_authenticated:
        return Session.objects.none()
    if getattr(user, "is_staff", False):
        return Session.objects.all()
    return Session.objects.filter(owner_id=user.pk)


def session_get_for_user(
    *, session_id: uuid.UUID | str, user: AbstractBaseUser | AnonymousUser
) -> Session:
    """The session if `user` may see it; otherwise `session_not_found` (also for bad ids)."""
    try:
        sid = uuid.UUID(str(session_id))
    except ValueError:
        raise session_not_found(session_id) from None
    found = session_list_for_user(user).filter(id=sid).first()
    if found is None:
        raise session_not_found(session_id)
    return found


def session_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    status: str | None = None,
    agent_id: str | None = None,
    tag: str | None = None,
) -> QuerySet[Session]:
    """`session_list_for_user`, filtered by status, agent id and tag (all optional, ANDed)."""
    qs = session_list_for_user(user)
    if status:
        qs = qs.filter(status=status)
    if agent_id:
        qs = qs.filter(agent_id=agent_id)
    if tag:
        qs = qs.filter(_has_tag(tag))
    return qs


def _has_tag(tag: str) -> Q:
    """`tags` (a JSON list of strings) contains `tag`, on PostgreSQL and SQLite alike."""
    if connection.vendor == "postgresql":
        return Q(tags__contains=[tag])
    # SQLite has no JSON containment lookup; ask json_each for the list's elements.
    # The tag is a query parameter; the SQL is a constant (the table name is fixed by the
    # app label, see sessions/apps.py).
    sql = (
        "SELECT s.id FROM agent_sessions_session s, json_each(s.tags) t "
        "WHERE t.type = 'text' AND t.value = %s"
    )
    return Q(id__in=RawSQL(sql, (tag,)))  # noqa: S611
