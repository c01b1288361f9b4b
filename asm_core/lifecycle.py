"""Session and Run status enums with their transition tables (architecture section 4.5).

Invariants:
- Session: pending -> active <-> paused; active|paused -> completed|failed|cancelled.
- Run: pending -> running -> completed|failed|cancelled|timeout; pending -> cancelled.
- Terminal statuses have no way out. Any move not in a table is `invalid_transition`;
  `check_*_transition` raises before anything is changed, so callers check first and write
  second. Setting the current status again is a transition too (and is forbidden unless the
  table lists it), which keeps "exactly one event per transition" true.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from asm_core.errors import AsmError


class SessionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


S, R = SessionStatus, RunStatus
E = TypeVar("E", SessionStatus, RunStatus)

SESSION_TRANSITIONS: Mapping[SessionStatus, frozenset[SessionStatus]] = MappingProxyType(
    {
        S.PENDING: frozenset({S.ACTIVE}),
        S.ACTIVE: frozenset({S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED}),
        S.PAUSED: frozenset({S.ACTIVE, S.COMPLETED, S.FAILED, S.CANCELLED}),
        S.COMPLETED: frozenset(),
        S.FAILED: frozenset(),
        S.CANCELLED: frozenset(),
    }
)

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = MappingProxyType(
    {
        R.PENDING: frozenset({R.RUNNING, R.CANCELLED}),
        R.RUNNING: frozenset({R.COMPLETED, R.FAILED, R.CANCELLED, R.TIMEOUT}),
        R.COMPLETED: frozenset(),
        R.FAILED: frozenset(),
        R.CANCELLED: frozenset(),
        R.TIMEOUT: frozenset(),
    }
)

SESSION_TERMINAL: frozenset[SessionStatus] = frozenset(
    s for s, nxt in SESSION_TRANSITIONS.items() if not nxt
)
RUN_TERMINAL: frozenset[RunStatus] = frozenset(r for r, nxt in RUN_TRANSITIONS.items() if not nxt)


def _parse(enum: type[E], value: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise AsmError(
            "invalid_status",
            f"Invalid status {value!r}; valid statuses: {', '.join(m.value for m in enum)}",
            {"status": value, "valid": [m.value for m in enum]},
        ) from None


def _check(kind: str, table: Mapping[E, frozenset[E]], enum: type[E], current: str, new: str) -> E:
    cur, nxt = _parse(enum, current), _parse(enum, new)
    if nxt not in table[cur]:
        raise AsmError(
            "invalid_transition",
            f"Cannot move a {kind} from {cur.value} to {nxt.value}",
            {
                "entity": kind,
                "from": cur.value,
                "to": nxt.value,
                "allowed": sorted(s.value for s in table[cur]),
            },
        )
    return nxt


def check_session_transition(current: str, new: str) -> SessionStatus:
    """Return `new` as a SessionStatus if the move is allowed, else raise invalid_transition."""
    return _check("session", SESSION_TRANSITIONS, SessionStatus, current, new)


def check_run_transition(current: str, new: str) -> RunStatus:
    """Return `new` as a RunStatus if the move is allowed, else raise invalid_transition."""
    return _check("run", RUN_TRANSITIONS, RunStatus, current, new)
