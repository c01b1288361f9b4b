"""The audit log of control actions: `audit_record` (the only writer), `audited` and
`audit_list` (the read side).

Recorded actions (docs/audit-and-logs.md): session transitions (`session.create`,
`session.activate`, ...), `run.submit`, `run.cancel`, admin edits (`admin.add`,
`admin.change`, `admin.delete`, from Django's admin LogEntry), `token.create` and
`provider.health_reset`. Each entry has actor, time, object and outcome (`ok` or the error
code the action failed with).

Invariants:
- Append-only: `AuditEntry` refuses updates and deletes (model and queryset); the admin is
  read-only; nothing here changes a stored entry.
- Recording never breaks the action: a failed audit write is logged and swallowed, and it
  runs in its own savepoint so the caller's transaction is unharmed.
- A successful action's entry is written in the action's transaction when there is an outer
  one (so it rolls back with it); a failed action's entry is written after the failure.
- `detail` is redacted (asm_core.redaction) before it is stored.
- `ASM_AUDIT_ENABLED=false` turns recording off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.db.transaction import TransactionManagementError

from asm_core.errors import AsmError
from asm_project.logging import settings_redactor
from sessions.models import AuditEntry

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

OK = "ok"


def audit_actor(actor: object) -> str:
    """The actor's label: `user:<id>` for a user (or user id), `system` for None, else str."""
    if actor is None:
        return "system"
    if isinstance(actor, AbstractBaseUser):
        return f"user:{actor.pk}"
    if isinstance(actor, int) and not isinstance(actor, bool):
        return f"user:{actor}"
    return str(actor)


def audit_outcome(error: BaseException | None) -> str:
    """`ok`, the AsmError code, or `internal_error`."""
    if error is None:
        return OK
    if isinstance(error, AsmError):
        return error.code
    return "internal_error"


def audit_record(
    *,
    action: str,
    actor: object = None,
    object_type: str = "",
    object_id: object = "",
    outcome: str = OK,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry | None:
    """Append one audit entry; returns it, or None when auditing is off or the write failed."""
    if not getattr(settings, "ASM_AUDIT_ENABLED", True):
        return None
    entry = AuditEntry(
        actor=audit_actor(actor)[:200],
        action=action[:100],
        object_type=object_type[:100],
        object_id=str(object_id or "")[:200],
        outcome=outcome[:100],
        detail=settings_redactor().redact(dict(detail or {})),
    )
    try:
        with transaction.atomic():
            entry.save()
    except (DatabaseError, TransactionManagementError):
        logger.warning(
            "audit write failed: %s %s %s", action, object_type, object_id, exc_info=True
        )
        return None
    return entry


def audited(
    action: str,
    object_type: str,
    object_key: str,
    result_id: Callable[[Any], object] | None = None,
    result_detail: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a keyword-argument service: record `action` on the object named by the
    keyword `object_key` (or by `result_id(result)` on success), actor from `actor=` (or
    `owner=`), detail from `result_detail(result)` on success."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def service(*args: P.args, **kwargs: P.kwargs) -> R:
            actor = kwargs.get("actor") or kwargs.get("owner")
            target = kwargs.get(object_key)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                audit_record(
                    action=action,
                    actor=actor,
                    object_type=object_type,
                    object_id=target,
                    outcome=audit_outcome(exc),
                )
                raise
            if result_id is not None:
                target = result_id(result)
            audit_record(
                action=action,
                actor=actor,
                object_type=object_type,
                object_id=target,
                detail=result_detail(result) if result_detail is not None else None,
            )
            return result

        return service

    return wrap


def _admin_log_entry_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """Django admin LogEntry post_save: every add/change/delete in the admin is audited."""
    if not created:
        return
    names = {1: "admin.add", 2: "admin.change", 3: "admin.delete"}
    content_type = instance.content_type
    audit_record(
        action=names.get(instance.action_flag, "admin.other"),
        actor=instance.user_id,
        object_type=f"{content_type.app_label}.{content_type.model}" if content_type else "",
        object_id=instance.object_id or "",
        detail={"repr": instance.object_repr, "change": instance.get_change_message()},
    )


class AuditedBulkDeletesMixin:
    """For a ModelAdmin: Django logs a multi-object delete with `bulk_create` (no post_save
    signal), so record those deletions here, one entry per object."""

    def log_deletions(self, request: Any, queryset: Any) -> Any:
        objects = list(queryset)
        result = super().log_deletions(request, queryset)  # type: ignore[misc]
        if len(objects) > 1:
            for obj in objects:
                meta = obj._meta
                audit_record(
                    action="admin.delete",
                    actor=request.user,
                    object_type=f"{meta.app_label}.{meta.model_name}",
                    object_id=obj.pk,
                    detail={"repr": str(obj)[:200], "change": ""},
                )
        return result


def audit_connect_admin() -> None:
    """Hook the admin's LogEntry (called once from the app config's `ready`)."""
    from django.contrib.admin.models import LogEntry
    from django.db.models.signals import post_save

    post_save.connect(_admin_log_entry_saved, sender=LogEntry, dispatch_uid="asm_audit_admin")


def audit_list(
    *,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
) -> QuerySet[AuditEntry]:
    """Audit entries, filtered (exact actor / action / object; `since` inclusive)."""
    entries = AuditEntry.objects.all()
    if actor:
        entries = entries.filter(actor=actor)
    if action:
        entries = entries.filter(action=action)
    if object_type:
        entries = entries.filter(object_type=object_type)
    if object_id:
        entries = entries.filter(object_id=object_id)
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    return entries
