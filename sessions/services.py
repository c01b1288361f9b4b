"""Session lifecycle services: create and every status transition.

Invariants:
- Each service writes its state change and its `session_*` event in ONE transaction: both
  land or neither does.
- Transitions follow `asm_core.lifecycle.SESSION_TRANSITIONS`; a forbidden one raises
  `invalid_transition` before anything is written.
- The session row is locked (`select_for_update`) for the check-then-write, so two
  concurrent transitions cannot both pass the check.
- Who acted is recorded in the event's metadata: `{"actor": "user:<id>"}` or
  `{"actor": "system"}`, and in the audit log (`sessions.audit.audited`: ok or error code).
- Every status change sends `runs.signals.session_status_changed` after commit.
- Secrets in `context` and `metadata` are masked before they are stored (asm_core.redaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.db import connections, router, transaction
from django.utils import timezone

from asm_core.errors import AsmError, default_message, session_not_found
from asm_core.event_types import EventType
from asm_core.lifecycle import SessionStatus, check_session_transition
from asm_project.logging import settings_redactor
from events.services import event_append
from runs.dispatch import drain_enqueue
from runs.signals import session_status_changed, signal_send_on_commit
from sessions.audit import audited
from sessions.models import Session

Actor = AbstractBaseUser | int | str | None


def actor_metadata(actor: Actor) -> dict[str, Any]:
    """Event metadata naming who acted: a user (or user id), a named system part, or system."""
    if actor is None:
        return {"actor": "system"}
    if isinstance(actor, AbstractBaseUser):
        return {"actor": f"user:{actor.pk}"}
    if isinstance(actor, int):
        return {"actor": f"user:{actor}"}
    return {"actor": str(actor)}


def session_lock(session_id: uuid.UUID) -> Session:
    """The session row, locked until the caller's transaction ends (call inside one).

    Raises `session_not_found` when there is no such session.
    """
    conn = connections[router.db_for_write(Session)]
    sql = _LOCK_SQL + (" FOR UPDATE" if conn.features.has_select_for_update else "")
    # Hand-written: taken on every submit and lifecycle change; the ORM's query compilation
    # cost more than the query.
    key = Session._meta.pk.get_db_prep_value(session_id, conn)
    session = next(iter(Session.objects.using(conn.alias).raw(sql, [key])), None)
    if session is None:
        raise session_not_found(session_id)
    return session


_LOCK_SQL = f"SELECT * FROM {Session._meta.db_table} WHERE id = %s"  # noqa: S608


def _validate_create(
    agent_id: object, context: object, metadata: object, tags: object
) -> tuple[str, dict[str, Any], dict[str, Any], list[str]]:
    if agent_id is None:
        raise AsmError("validation_error", "agent_id is required", {"field": "agent_id"})
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise AsmError("validation_error", "agent_id cannot be empty", {"field": "agent_id"})
    for name, value in (("context", context), ("metadata", metadata)):
        if value is not None and not isinstance(value, Mapping):
            raise AsmError("validation_error", f"{name} must be an object", {"field": name})
    if tags is not None and (
        not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags)
    ):
        raise AsmError("validation_error", "tags must be a list of strings", {"field": "tags"})
    return (
        agent_id,
        dict(context or {}),  # type: ignore[call-overload]
        dict(metadata or {}),  # type: ignore[call-overload]
        list(tags or []),
    )


@audited("session.create", "session", "session_id", lambda s: s.id)
def session_create(
    *,
    agent_id: str,
    owner: User | None = None,
    context: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    parent_session_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    actor: Actor = None,
) -> Session:
    """Create a `pending` session and its `session_created` event."""
    agent, ctx, meta, tag_list = _validate_create(agent_id, context, metadata, tags)
    redactor = settings_redactor()  # secrets are never stored (docs/audit-and-logs.md)
    ctx, meta = redactor.redact(ctx), redactor.redact(meta)
    with transaction.atomic():
        if (
            parent_session_id is not None
            and not Session.objects.filter(id=parent_session_id).exists()
        ):
            raise AsmError(
                "session_not_found",
                f"Parent session not found: {parent_session_id}",
                {"parent_session_id": str(parent_session_id)},
            )
        now = timezone.now()
        session = Session.objects.create(
            id=session_id or uuid.uuid4(),
            agent_id=agent,
            owner=owner,
            context=ctx,
            metadata=meta,
            tags=tag_list,
            parent_session_id=parent_session_id,
            created_at=now,
            updated_at=now,
        )
        event_append(
            session_id=session.id,
            type=EventType.SESSION_CREATED,
            data={"agent_id": agent},
            metadata=actor_metadata(actor if actor is not None else owner),
        )
    session.last_sequence = 1
    return session


def _transition(
    session_id: uuid.UUID,
    to: SessionStatus,
    event_type: EventType,
    data: dict[str, Any],
    actor: Actor,
    only_from: SessionStatus | None = None,
) -> Session:
    with transaction.atomic():
        session = session_lock(session_id)
        if only_from is not None and session.status != only_from:
            # paused -> active is `resume`, pending -> active is `activate`: each move has
            # one name and one event type.
            raise AsmError(
                "invalid_transition",
                f"Cannot {event_type.value.removeprefix('session_')} a session that is "
                f"{session.status} (it must be {only_from.value})",
                {"entity": "session", "from": session.status, "to": to.value},
            )
        check_session_transition(session.status, to)
        previous = session.status
        session.status = to.value
        session.updated_at = timezone.now()
        session.save(update_fields=["status", "updated_at"])
        event = event_append(
            session_id=session.id, type=event_type, data=data, metadata=actor_metadata(actor)
        )
        signal_send_on_commit(
            session_status_changed,
            Session,
            session=session,
            status=session.status,
            previous_status=previous,
        )
    session.last_sequence = event.sequence_number
    return session


@audited("session.activate", "session", "session_id")
def session_activate(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """pending -> active (`session_started`)."""
    return _transition(
        session_id,
        SessionStatus.ACTIVE,
        EventType.SESSION_STARTED,
        {},
        actor,
        only_from=SessionStatus.PENDING,
    )


@audited("session.pause", "session", "session_id")
def session_pause(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """active -> paused (`session_paused`)."""
    return _transition(session_id, SessionStatus.PAUSED, EventType.SESSION_PAUSED, {}, actor)


@audited("session.resume", "session", "session_id")
def session_resume(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """paused -> active (`session_resumed`); its queued runs get a drain (on commit)."""
    with transaction.atomic():
        drain_enqueue(session_id)  # on commit
        return _transition(
            session_id,
            SessionStatus.ACTIVE,
            EventType.SESSION_RESUMED,
            {},
            actor,
            only_from=SessionStatus.PAUSED,
        )


@audited("session.complete", "session", "session_id")
def session_complete(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """active|paused -> completed (`session_completed`)."""
    return _transition(session_id, SessionStatus.COMPLETED, EventType.SESSION_COMPLETED, {}, actor)


@audited("session.fail", "session", "session_id")
def session_fail(
    *,
    session_id: uuid.UUID,
    error_code: str | None = None,
    error_message: str | None = None,
    actor: Actor = None,
) -> Session:
    """active|paused -> failed (`session_failed {error_code, error_message}`)."""
    code = error_code or "unknown_error"
    data = {"error_code": code, "error_message": error_message or default_message(code)}
    return _transition(session_id, SessionStatus.FAILED, EventType.SESSION_FAILED, data, actor)


@audited("session.cancel", "session", "session_id")
def session_cancel(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """active|paused -> cancelled (`session_cancelled`)."""
    return _transition(session_id, SessionStatus.CANCELLED, EventType.SESSION_CANCELLED, {}, actor)
