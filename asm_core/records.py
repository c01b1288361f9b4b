"""Plain data records the core works with (the SessionStore port's types).

Records mirror the Session, Run and Event models field for field (minus ORM plumbing), so a
store converts by field name. `NewEvent` is what a caller appends: the store assigns the
sequence number and timestamp and, when no id is given, a fresh uuid4. Event records are
immutable; session and run records are mutable working copies that a store saves whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class SessionRecord:
    agent_id: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    status: str = "pending"
    parent_session_id: uuid.UUID | None = None
    context: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    owner_id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class RunRecord:
    session_id: uuid.UUID
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    status: str = "pending"
    provider: str = ""
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    token_usage: dict[str, Any] = field(default_factory=dict)
    cost_usd: Decimal | None = None
    turn_count: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    lease_owner: str = ""
    lease_expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    waiting_reason: str = ""
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: uuid.UUID
    session_id: uuid.UUID
    run_id: uuid.UUID | None
    sequence_number: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    provider: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    run_id: uuid.UUID | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    provider: str = ""
    id: uuid.UUID | None = None


SESSION_FIELDS: tuple[str, ...] = tuple(SessionRecord.__dataclass_fields__)
RUN_FIELDS: tuple[str, ...] = tuple(RunRecord.__dataclass_fields__)
EVENT_FIELDS: tuple[str, ...] = tuple(EventRecord.__dataclass_fields__)


def parse_uuid(value: str) -> uuid.UUID | None:
    """The UUID a string spells, or None (for search boxes and untrusted path parts)."""
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None
