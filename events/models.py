"""The Event model: the append-only, per-session sequenced log.

Invariants: (session, sequence_number) is unique and numbers are dense 1..n per session
(allocated by `events.services` from `Session.last_sequence`); the event id is globally
unique (primary key). Rows are only ever inserted by `events.services`; there is no update
path, and the one delete path is retention (`events.retention`), which replaces a range of
old `message_streamed` rows by one `events_pruned` row at the range's last number, so every
number stays accounted for and none is reused (sessions and runs that have events cannot be
deleted: PROTECT).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class Event(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        "agent_sessions.Session", on_delete=models.PROTECT, related_name="events", db_index=False
    )
    run = models.ForeignKey(
        "runs.Run",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,
    )
    sequence_number = models.BigIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict)
    provider = models.CharField(max_length=100, blank=True, default="")
    timestamp = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("session", "sequence_number")
        constraints = [
            models.UniqueConstraint(
                fields=["session", "sequence_number"], name="event_unique_session_sequence"
            ),
            models.CheckConstraint(
                condition=models.Q(sequence_number__gte=1), name="event_sequence_gte_1"
            ),
        ]
        indexes = [
            models.Index(fields=["run", "sequence_number"], name="event_run_seq"),
            models.Index(
                fields=["session", "type", "sequence_number"], name="event_session_type_seq"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence_number} {self.type}"
