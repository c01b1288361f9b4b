"""The Run model: one execution request inside a session.

Invariants enforced by the database: at most one `running` run per session (partial unique
index `run_one_running_per_session`); an idempotency key is unique within its session.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from asm_core.lifecycle import RunStatus


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        "agent_sessions.Session", on_delete=models.CASCADE, related_name="runs"
    )
    status = models.CharField(
        max_length=16,
        choices=[(s.value, s.value) for s in RunStatus],
        default=RunStatus.PENDING.value,
    )
    provider = models.CharField(max_length=100, blank=True, default="")
    routed_provider = models.CharField(max_length=100, blank=True, default="")
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    token_usage = models.JSONField(default=dict, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    turn_count = models.PositiveIntegerField(default=0)
    options = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # NULL means "no key": the per-session unique constraint must ignore keyless runs.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Why a pending run is not running yet (a limit is full, the session is paused, ...).
    waiting_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["session", "status", "created_at"], name="run_session_status"),
            models.Index(fields=["status", "lease_expires_at"], name="run_status_lease"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status=RunStatus.RUNNING.value),
                name="run_one_running_per_session",
            ),
            models.UniqueConstraint(
                fields=["session", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="run_idempotency_key_per_session",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"
