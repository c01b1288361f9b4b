"""GET /api/v1/sessions/{id}/events: filters, bounds, paging with next_after, validation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from events.publish import event_json
from events.selectors import event_list
from events.services import event_append
from runs.services import run_submit
from tests.unit.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def log(session):
    """Alice's session with 2 session events, then 4 message events, 2 of them in a run."""
    run = run_submit(session_id=session.id, input="x").run
    for i in range(2):
        event_append(
            session_id=session.id, type="message_sent", data={"role": "user", "content": f"s{i}"}
        )
        event_append(
            session_id=session.id,
            type="message_received",
            data={"content": f"r{i}"},
            run_id=run.id,
        )
    return session, run


def _get(api: APIClient, session_id: uuid.UUID, query: str = "") -> Any:
    return api.get(f"/api/v1/sessions/{session_id}/events{query}")


def test_all_events_ascending_in_the_public_json_form(api, log):
    session, _ = log
    response = _get(api, session.id)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "latest_sequence", "next_after"}
    expected = [event_json(e) for e in event_list(session_id=session.id)]
    assert body["results"] == expected
    assert [e["sequence_number"] for e in body["results"]] == [1, 2, 3, 4, 5, 6]
    assert body["latest_sequence"] == 6
    assert body["next_after"] == 6


def test_after_before_are_strict_and_limit_keeps_the_oldest(api, log):
    session, _ = log
    body = _get(api, session.id, "?after=2&before=6&limit=2").json()
    assert [e["sequence_number"] for e in body["results"]] == [3, 4]
    assert body["next_after"] == 4
    assert body["latest_sequence"] == 6


def test_paging_with_next_after_reads_everything_once(api, log):
    session, _ = log
    seen: list[int] = []
    after = 0
    while True:
        body = _get(api, session.id, f"?after={after}&limit=4").json()
        if not body["results"]:
            break
        seen.extend(e["sequence_number"] for e in body["results"])
        after = body["next_after"]
    assert seen == [1, 2, 3, 4, 5, 6]
    assert after == body["latest_sequence"] == 6


def test_an_empty_page_keeps_the_given_after(api, log):
    session, _ = log
    body = _get(api, session.id, "?after=6").json()
    assert body == {"results": [], "latest_sequence": 6, "next_after": 6}
    assert _get(api, session.id, "?type=run_timeout").json()["next_after"] == 0


def test_type_is_repeatable_and_run_id_filters(api, log):
    session, run = log
    body = _get(api, session.id, "?type=message_sent&type=session_created").json()
    assert [e["type"] for e in body["results"]] == [
        "session_created",
        "message_sent",
        "message_sent",
    ]
    by_run = _get(api, session.id, f"?run_id={run.id}").json()
    assert [e["type"] for e in by_run["results"]] == ["message_received"] * 2
    assert {e["run_id"] for e in by_run["results"]} == {str(run.id)}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?after=abc", "after"),
        ("?after=-1", "after"),
        ("?before=x", "before"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?type=no_such_type", "type"),
        ("?type=message_sent&type=bogus", "type"),
        ("?run_id=not-a-uuid", "run_id"),
    ],
)
def test_bad_query_parameters_are_400_not_500(api, log, query, field):
    session, _ = log
    response = _get(api, session.id, query)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in error["details"]["fields"]


def test_limit_1000_is_allowed(api, log):
    session, _ = log
    assert _get(api, session.id, "?limit=1000").status_code == 200


def test_events_of_another_owners_session_are_404(bob_api, log):
    session, _ = log
    response = _get(bob_api, session.id)
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"


def test_events_of_an_unknown_session_are_404(api):
    response = _get(api, uuid.uuid4())
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"
