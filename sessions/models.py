"""The Session model (`last_sequence` is the per-session event counter), agent manifests
(`Agent`), owner budgets (`Budget`) and the append-only audit log (`AuditEntry`).

Invariant: `last_sequence` is written only by `events.services` (one conditional
`UPDATE ... RETURNING` per append or batch), never by a model save of the whole row; every
other write to a session updates named fields, so a concurrent append is never undone.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from asm_core.lifecycle import SessionStatus


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_id = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16,
        choices=[(s.value, s.value) for s in SessionStatus],
        default=SessionStatus.PENDING.value,
    )
    parent_session = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="agent_sessions",
    )
    last_sequence = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["owner", "status", "-created_at"], name="session_owner_status"),
            models.Index(fields=["agent_id", "-created_at"], name="session_agent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(last_sequence__gte=0), name="session_last_sequence_gte_0"
            ),
            models.CheckConstraint(
                condition=~models.Q(agent_id=""), name="session_agent_id_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.id} ({self.status})"


class Agent(models.Model):
    """An agent manifest (spec 10.3, adapted to a service): the defaults a session's runs pick
    up when the session's `agent_id` names it (`sessions.agents`). Sessions refer to agents by
    `agent_id` string, not by foreign key: an unknown id keeps working with settings defaults.
    """

    agent_id = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=50, default="1")
    description = models.TextField(blank=True, default="")
    # The default provider of the agent's runs ("" = none; with `routing` set, `router`).
    provider = models.CharField(max_length=100, blank=True, default="")
    # The default `options.routing` of the agent's runs (the routing option shape), or null.
    routing = models.JSONField(null=True, blank=True)
    required_capabilities = models.JSONField(default=list, blank=True)
    optional_capabilities = models.JSONField(default=list, blank=True)
    # The agent's policy layer (the options.policy shape; stacked by runs.policies), or null.
    default_policy = models.JSONField(null=True, blank=True)
    system_prompt = models.TextField(blank=True, default="")
    # Run options merged UNDER each run's own options.
    default_options = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("agent_id",)
        constraints = [
            models.CheckConstraint(condition=~models.Q(agent_id=""), name="agent_id_not_empty"),
            models.CheckConstraint(condition=~models.Q(name=""), name="agent_name_not_empty"),
            models.CheckConstraint(condition=~models.Q(version=""), name="agent_version_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} v{self.version}"


class Budget(models.Model):
    """An owner's token and/or cost budget over a calendar window (UTC day or month).

    Enforced before dispatch by `runs.budgets` (reservations in Redis, spend recomputable
    from the owner's runs). One budget per owner and window.
    """

    class Window(models.TextChoices):
        DAILY = "daily"
        MONTHLY = "monthly"

    class OnExceed(models.TextChoices):
        WAIT = "wait"
        FAIL = "fail"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_budgets"
    )
    window = models.CharField(max_length=16, choices=Window.choices, default=Window.DAILY)
    max_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="input + output tokens per window; empty: no limit"
    )
    max_cost_usd = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per window; empty: no limit",
    )
    on_exceed = models.CharField(max_length=8, choices=OnExceed.choices, default=OnExceed.WAIT)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("owner_id", "window")
        constraints = [
            models.UniqueConstraint(fields=["owner", "window"], name="budget_one_per_owner_window"),
            models.CheckConstraint(
                condition=models.Q(max_tokens__isnull=False) | models.Q(max_cost_usd__isnull=False),
                name="budget_has_a_limit",
            ),
            models.CheckConstraint(
                condition=models.Q(max_cost_usd__isnull=True) | models.Q(max_cost_usd__gte=0),
                name="budget_max_cost_gte_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.window} budget of user {self.owner_id}"


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    """No bulk update or delete: the audit log is append-only."""

    def update(self, **kwargs: Any) -> int:
        raise AuditImmutableError("audit entries cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("audit entries cannot be deleted")


class AuditImmutableError(Exception):
    """Raised on any attempt to change or remove an audit entry."""


class AuditEntry(models.Model):
    """One control action (sessions.audit): who did what to which object, when, and how it
    ended (`ok` or an error code). Append-only: `save` refuses an existing row, `delete`
    raises, and the manager has no update or delete path.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # "user:<id>", "system", or a named system part (e.g. "command:asm_token").
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=100, default="ok")  # "ok" or an error code
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["actor", "-created_at"], name="audit_actor"),
            models.Index(fields=["action", "-created_at"], name="audit_action"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutableError("audit entries cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("audit entries cannot be deleted")
