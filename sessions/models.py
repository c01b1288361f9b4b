"""The Session model. `last_sequence` is the per-session event counter.

Invariant: `last_sequence` is written only by `events.services` (one conditional
`UPDATE ... RETURNING` per append or batch), never by a model save of the whole row; every
other write to a session updates named fields, so a concurrent append is never undone.
"""

from __future__ import annotations

import uuid

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
