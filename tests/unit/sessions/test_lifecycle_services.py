"""Session lifecycle services: create, every transition pair, events, validation, atomicity.

The allowed moves are written out here from architecture section 4.5, independently of
`asm_core.lifecycle.SESSION_TRANSITIONS`:
pending -> active <-> paused; active|paused -> completed|failed|cancelled.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from asm_core.errors import AsmError
from asm_core.lifecycle import SessionStatus, check_session_transition
from events.models import Event
from events.selectors import event_list, latest_sequence
from sessions import services
from sessions.models import Session

pytestmark = pytest.mark.django_db

STATUSES = ["pending", "active", "paused", "completed", "failed", "cancelled"]

# Architecture 4.5, written out by hand.
ALLOWED: set[tuple[str, str]] = {
    ("pending", "active"),
    ("active", "paused"),
    ("paused", "active"),
    ("active", "completed"),
    ("active", "failed"),
    ("active", "cancelled"),
    ("paused", "completed"),
    ("paused", "failed"),
    ("paused", "cancelled"),
}

# How each status is reached from a fresh (pending) session.
PATHS: dict[str, list[Callable[..., Session]]] = {
    "pending": [],
    "active": [services.session_activate],
    "paused": [services.session_activate, services.session_pause],
    "completed": [services.session_activate, services.session_complete],
    "failed": [services.session_activate, services.session_fail],
    "cancelled": [services.session_activate, services.session_cancel],
}

ACTOR_ID = 42


def mover(frm: str, to: str) -> tuple[Callable[..., Session], str] | None:
    """The service that moves a `frm` session to `to`, and the event it writes."""
    if to == "active":
        if frm == "paused":
            return services.session_resume, "session_resumed"
        return services.session_activate, "session_started"
    others: dict[str, tuple[Callable[..., Session], str]] = {
        "paused": (services.session_pause, "session_paused"),
        "completed": (services.session_complete, "session_completed"),
        "failed": (services.session_fail, "session_failed"),
        "cancelled": (services.session_cancel, "session_cancelled"),
    }
    return others.get(to)  # nothing moves a session to pending


def make_session(status: str = "pending") -> Session:
    session = services.session_create(agent_id="agent-1")
    for step in PATHS[status]:
        step(session_id=session.id)
    session.refresh_from_db()
    assert session.status == status
    return session


def code_of(excinfo: pytest.ExceptionInfo[AsmError]) -> str:
    return excinfo.value.code


def test_the_table_matches_the_enum() -> None:
    assert [s.value for s in SessionStatus] == STATUSES


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(STATUSES, STATUSES)))
def test_every_transition_pair(frm: str, to: str) -> None:
    session = make_session(frm)
    before_seq = latest_sequence(session_id=session.id)
    before_updated = session.updated_at
    target = mover(frm, to)

    if (frm, to) in ALLOWED:
        assert target is not None
        service, event_type = target
        moved = service(session_id=session.id, actor=ACTOR_ID)
        assert moved.status == to
        assert Session.objects.get(id=session.id).status == to
        assert latest_sequence(session_id=session.id) == before_seq + 1
        new = event_list(session_id=session.id, after=before_seq)
        assert [(e.type, e.sequence_number, e.run_id) for e in new] == [
            (event_type, before_seq + 1, None)
        ]
        assert new[0].metadata == {"actor": f"user:{ACTOR_ID}"}
        assert moved.last_sequence == before_seq + 1
        return

    if target is None:  # no service moves to this status; the check itself refuses
        with pytest.raises(AsmError) as excinfo:
            check_session_transition(frm, to)
    else:
        service = target[0]
        with pytest.raises(AsmError) as excinfo:
            service(session_id=session.id, actor=ACTOR_ID)
    assert code_of(excinfo) == "invalid_transition"
    assert excinfo.value.details["from"] == frm
    assert excinfo.value.details["to"] == to
    stored = Session.objects.get(id=session.id)
    assert stored.status == frm
    assert stored.updated_at == before_updated
    assert latest_sequence(session_id=session.id) == before_seq
    assert Event.objects.filter(session_id=session.id).count() == before_seq


@pytest.mark.parametrize(
    ("frm", "service"),
    [("paused", services.session_activate), ("pending", services.session_resume)],
)
def test_each_move_to_active_has_one_name(frm: str, service: Callable[..., Session]) -> None:
    """pending -> active is `activate` (session_started), paused -> active is `resume`."""
    session = make_session(frm)
    with pytest.raises(AsmError) as excinfo:
        service(session_id=session.id)
    assert code_of(excinfo) == "invalid_transition"
    assert Session.objects.get(id=session.id).status == frm
    assert Event.objects.filter(session_id=session.id).count() == session.last_sequence


def test_a_full_lifecycle_writes_one_event_per_step() -> None:
    session = services.session_create(agent_id="agent-1")
    services.session_activate(session_id=session.id)
    services.session_pause(session_id=session.id)
    services.session_resume(session_id=session.id)
    services.session_pause(session_id=session.id)
    services.session_complete(session_id=session.id)
    assert [(e.sequence_number, e.type) for e in event_list(session_id=session.id)] == [
        (1, "session_created"),
        (2, "session_started"),
        (3, "session_paused"),
        (4, "session_resumed"),
        (5, "session_paused"),
        (6, "session_completed"),
    ]


# --------------------------------------------------------------------------- create
def test_create_writes_session_created_as_sequence_1() -> None:
    session = services.session_create(
        agent_id="agent-1", context={"system_prompt": "hi"}, metadata={"m": 1}, tags=["t"]
    )
    stored = Session.objects.get(id=session.id)
    assert stored.status == "pending"
    assert (stored.agent_id, stored.context, stored.metadata, stored.tags) == (
        "agent-1",
        {"system_prompt": "hi"},
        {"m": 1},
        ["t"],
    )
    assert stored.last_sequence == 1
    assert session.last_sequence == 1
    events = event_list(session_id=session.id)
    assert [(e.sequence_number, e.type, e.run_id) for e in events] == [(1, "session_created", None)]
    assert events[0].data == {"agent_id": "agent-1"}
    assert events[0].metadata == {"actor": "system"}


def test_create_with_an_explicit_id_and_parent() -> None:
    parent = services.session_create(agent_id="parent")
    wanted = uuid.uuid4()
    child = services.session_create(
        agent_id="child", parent_session_id=parent.id, session_id=wanted
    )
    assert child.id == wanted
    assert Session.objects.get(id=wanted).parent_session_id == parent.id


def test_create_records_the_owner_or_the_actor() -> None:
    user = get_user_model().objects.create_user(username="ada", password="x")
    owned = services.session_create(agent_id="agent-1", owner=user)
    assert Session.objects.get(id=owned.id).owner_id == user.pk
    assert event_list(session_id=owned.id)[0].metadata == {"actor": f"user:{user.pk}"}

    by_actor = services.session_create(agent_id="agent-1", actor=user)
    assert event_list(session_id=by_actor.id)[0].metadata == {"actor": f"user:{user.pk}"}

    by_id = services.session_create(agent_id="agent-1", actor=7)
    assert event_list(session_id=by_id.id)[0].metadata == {"actor": "user:7"}

    by_name = services.session_create(agent_id="agent-1", actor="reaper")
    assert event_list(session_id=by_name.id)[0].metadata == {"actor": "reaper"}


def test_transition_actor_metadata() -> None:
    user = get_user_model().objects.create_user(username="bob", password="x")
    session = services.session_create(agent_id="agent-1")
    services.session_activate(session_id=session.id)
    services.session_pause(session_id=session.id, actor=user)
    services.session_resume(session_id=session.id, actor="scheduler")
    assert [e.metadata for e in event_list(session_id=session.id)] == [
        {"actor": "system"},
        {"actor": "system"},
        {"actor": f"user:{user.pk}"},
        {"actor": "scheduler"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent_id": None}, "agent_id is required"),
        ({"agent_id": ""}, "agent_id cannot be empty"),
        ({"agent_id": "   "}, "agent_id cannot be empty"),
        ({"agent_id": 5}, None),
        ({"agent_id": "a", "tags": "not-a-list"}, None),
        ({"agent_id": "a", "tags": ["ok", 3]}, None),
        ({"agent_id": "a", "tags": {"x": 1}}, None),
        ({"agent_id": "a", "context": "text"}, None),
        ({"agent_id": "a", "context": [1, 2]}, None),
        ({"agent_id": "a", "metadata": "text"}, None),
    ],
)
def test_create_validation_errors_store_nothing(
    kwargs: dict[str, Any], message: str | None
) -> None:
    with pytest.raises(AsmError) as excinfo:
        services.session_create(**kwargs)
    assert code_of(excinfo) == "validation_error"
    if message is not None:
        assert excinfo.value.message == message
    assert Session.objects.count() == 0
    assert Event.objects.count() == 0


def test_create_with_an_unknown_parent_is_session_not_found() -> None:
    with pytest.raises(AsmError) as excinfo:
        services.session_create(agent_id="agent-1", parent_session_id=uuid.uuid4())
    assert code_of(excinfo) == "session_not_found"
    assert Session.objects.count() == 0
    assert Event.objects.count() == 0


# --------------------------------------------------------------------------- fail / unknown
def test_fail_stores_error_code_and_message() -> None:
    session = make_session("active")
    services.session_fail(
        session_id=session.id, error_code="provider_error", error_message="upstream broke"
    )
    last = event_list(session_id=session.id)[-1]
    assert last.type == "session_failed"
    assert last.data == {"error_code": "provider_error", "error_message": "upstream broke"}


def test_fail_without_details_uses_unknown_error() -> None:
    session = make_session("paused")
    services.session_fail(session_id=session.id)
    last = event_list(session_id=session.id)[-1]
    assert last.data == {
        "error_code": "unknown_error",
        "error_message": "An unknown error occurred",
    }


def test_fail_with_only_a_code_uses_its_default_message() -> None:
    session = make_session("active")
    services.session_fail(session_id=session.id, error_code="timeout")
    last = event_list(session_id=session.id)[-1]
    assert last.data == {"error_code": "timeout", "error_message": "Operation timed out"}


@pytest.mark.parametrize(
    "service",
    [
        services.session_activate,
        services.session_pause,
        services.session_resume,
        services.session_complete,
        services.session_fail,
        services.session_cancel,
    ],
)
def test_transition_on_an_unknown_session_is_session_not_found(
    service: Callable[..., Session],
) -> None:
    with pytest.raises(AsmError) as excinfo:
        service(session_id=uuid.uuid4())
    assert code_of(excinfo) == "session_not_found"
    assert Event.objects.count() == 0


# --------------------------------------------------------------------------- atomicity
class _Abort(Exception):
    pass


def test_state_change_and_event_roll_back_together() -> None:
    session = make_session("pending")
    seen_inside: list[tuple[str, int]] = []

    def activate_then_abort() -> None:
        with transaction.atomic():
            services.session_activate(session_id=session.id)
            status = Session.objects.get(id=session.id).status
            seen_inside.append((status, latest_sequence(session_id=session.id)))
            raise _Abort

    with pytest.raises(_Abort):
        activate_then_abort()
    assert seen_inside == [("active", 2)]  # both were written inside the transaction
    stored = Session.objects.get(id=session.id)
    assert stored.status == "pending"
    assert stored.last_sequence == 1
    assert [e.type for e in event_list(session_id=session.id)] == ["session_created"]


def test_a_failing_event_write_undoes_the_status_change() -> None:
    """The status is saved before the event is appended; a rejected event undoes it."""
    session = make_session("active")
    with pytest.raises(AsmError) as excinfo:
        services.session_fail(session_id=session.id, error_code=123)  # type: ignore[arg-type]
    assert code_of(excinfo) == "validation_error"
    stored = Session.objects.get(id=session.id)
    assert stored.status == "active"
    assert stored.last_sequence == 2
    assert [e.type for e in event_list(session_id=session.id)] == [
        "session_created",
        "session_started",
    ]
