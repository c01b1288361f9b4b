"""`runs.services.run_create`: a pending run, input validation, idempotency, DB constraints."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from asm_core.errors import AsmError
from events.models import Event
from events.selectors import latest_sequence
from runs.models import Run
from runs.services import run_create
from sessions.models import Session
from sessions.services import session_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def session() -> Session:
    return session_create(agent_id="agent-1")


def code_of(excinfo: pytest.ExceptionInfo[AsmError]) -> str:
    return excinfo.value.code


# --------------------------------------------------------------------------- create
def test_create_stores_a_pending_run_and_writes_no_event(session: Session) -> None:
    before = latest_sequence(session_id=session.id)
    created = run_create(
        session_id=session.id, input={"prompt": "hello"}, provider="echo", options={"a": 1}
    )
    assert created.created is True
    stored = Run.objects.get(id=created.run.id)
    assert stored.session_id == session.id
    assert stored.status == "pending"
    assert stored.input == {"prompt": "hello"}
    assert (stored.provider, stored.options, stored.idempotency_key) == ("echo", {"a": 1}, None)
    assert (stored.output, stored.error, stored.started_at, stored.ended_at) == (
        None,
        None,
        None,
        None,
    )
    assert latest_sequence(session_id=session.id) == before
    assert Event.objects.filter(session_id=session.id).count() == before


def test_create_with_an_explicit_id_and_max_attempts(session: Session) -> None:
    wanted = uuid.uuid4()
    created = run_create(session_id=session.id, input="hi", run_id=wanted, max_attempts=3)
    assert created.run.id == wanted
    assert Run.objects.get(id=wanted).max_attempts == 3


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"prompt": "hello"}, {"prompt": "hello"}),
        ("a bare string", {"prompt": "a bare string"}),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "hi"}]},
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                ]
            },
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                ]
            },
        ),
        ({"messages": [{"content": "no role"}]}, {"messages": [{"content": "no role"}]}),
    ],
)
def test_valid_inputs_are_stored(session: Session, given: Any, stored: dict[str, Any]) -> None:
    created = run_create(session_id=session.id, input=given)
    assert Run.objects.get(id=created.run.id).input == stored


@pytest.mark.parametrize(
    "bad",
    [
        None,
        42,
        True,
        ["hello"],
        "",
        "   ",
        {},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": 5},
        {"prompt": None},
        {"messages": []},
        {"messages": "hello"},
        {"messages": None},
        {"messages": ["hello"]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": 1, "content": "x"}]},
        {"messages": [{"role": "user", "content": "ok"}, 7]},
        {"text": "hello"},
    ],
)
def test_invalid_inputs_are_validation_errors_and_store_nothing(session: Session, bad: Any) -> None:
    with pytest.raises(AsmError) as excinfo:
        run_create(session_id=session.id, input=bad)
    assert code_of(excinfo) == "validation_error"
    assert Run.objects.count() == 0


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, None])
def test_invalid_max_attempts_is_validation_error(session: Session, bad: Any) -> None:
    with pytest.raises(AsmError) as excinfo:
        run_create(session_id=session.id, input="hi", max_attempts=bad)
    assert code_of(excinfo) == "validation_error"
    assert Run.objects.count() == 0


def test_unknown_session_is_session_not_found() -> None:
    with pytest.raises(AsmError) as excinfo:
        run_create(session_id=uuid.uuid4(), input="hi")
    assert code_of(excinfo) == "session_not_found"
    assert Run.objects.count() == 0


# --------------------------------------------------------------------------- idempotency
def test_same_key_and_body_returns_the_same_run(session: Session) -> None:
    body: dict[str, Any] = {"input": {"prompt": "hi"}, "provider": "echo", "options": {"x": 1}}
    first = run_create(session_id=session.id, idempotency_key="k1", **body)
    again = run_create(session_id=session.id, idempotency_key="k1", **body)
    assert first.created is True
    assert again.created is False
    assert again.run.id == first.run.id
    assert Run.objects.filter(session_id=session.id).count() == 1


def test_same_key_with_a_bare_string_matches_its_prompt_form(session: Session) -> None:
    first = run_create(session_id=session.id, input="hi", idempotency_key="k1")
    again = run_create(session_id=session.id, input={"prompt": "hi"}, idempotency_key="k1")
    assert (again.run.id, again.created) == (first.run.id, False)


@pytest.mark.parametrize(
    "change",
    [
        {"input": {"prompt": "something else"}},
        {"provider": "claude"},
        {"options": {"x": 2}},
        {"options": {}},
    ],
)
def test_same_key_with_a_different_body_is_already_exists(
    session: Session, change: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"input": {"prompt": "hi"}, "provider": "echo", "options": {"x": 1}}
    first = run_create(session_id=session.id, idempotency_key="k1", **body)
    with pytest.raises(AsmError) as excinfo:
        run_create(session_id=session.id, idempotency_key="k1", **{**body, **change})
    assert code_of(excinfo) == "already_exists"
    assert excinfo.value.http_status == 409
    assert list(Run.objects.values_list("id", flat=True)) == [first.run.id]


def test_same_key_in_another_session_is_independent(session: Session) -> None:
    other = session_create(agent_id="agent-2")
    first = run_create(session_id=session.id, input="hi", idempotency_key="k1")
    elsewhere = run_create(session_id=other.id, input="different", idempotency_key="k1")
    assert elsewhere.created is True
    assert elsewhere.run.id != first.run.id
    assert elsewhere.run.session_id == other.id


def test_runs_without_a_key_are_never_deduplicated(session: Session) -> None:
    one = run_create(session_id=session.id, input="hi")
    two = run_create(session_id=session.id, input="hi")
    assert one.run.id != two.run.id
    assert (one.created, two.created) == (True, True)


# --------------------------------------------------------------------------- DB constraints
def test_db_allows_at_most_one_running_run_per_session(session: Session) -> None:
    first = Run.objects.create(session=session)
    second = Run.objects.create(session=session)
    Run.objects.filter(id=first.id).update(status="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.filter(id=second.id).update(status="running")
    assert Run.objects.get(id=second.id).status == "pending"
    # Other statuses are not limited, and another session may have its own running run.
    Run.objects.filter(id=second.id).update(status="completed")
    Run.objects.create(session=session, status="completed")
    other = session_create(agent_id="agent-2")
    Run.objects.create(session=other, status="running")
    # Once the first run ends, the second may run.
    Run.objects.filter(id=first.id).update(status="completed")
    third = Run.objects.create(session=session, status="running")
    assert Run.objects.filter(session=session, status="running").get().id == third.id


def test_db_keeps_idempotency_keys_unique_per_session(session: Session) -> None:
    Run.objects.create(session=session, idempotency_key="k1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(session=session, idempotency_key="k1")
    other = session_create(agent_id="agent-2")
    Run.objects.create(session=other, idempotency_key="k1")  # another session: fine
    Run.objects.create(session=session, idempotency_key=None)
    Run.objects.create(session=session, idempotency_key=None)  # NULL keys never collide
    assert Run.objects.filter(session=session).count() == 3
