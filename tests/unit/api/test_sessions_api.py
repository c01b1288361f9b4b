"""Session endpoints: create, list (filters, cursor pages), detail, transitions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User

from events.selectors import event_list
from runs.models import Run
from runs.services import run_submit
from sessions.models import Session
from sessions.services import session_create
from tests.unit.api.conftest import bearer_client, error_of

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------- create


def test_create_returns_201_with_a_pending_session_owned_by_the_caller(api, alice):
    response = api.post(
        "/api/v1/sessions",
        {"agent_id": "coder", "context": {"repo": "x"}, "metadata": {"k": 1}, "tags": ["a", "b"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["agent_id"] == "coder"
    assert body["context"] == {"repo": "x"}
    assert body["metadata"] == {"k": 1}
    assert body["tags"] == ["a", "b"]
    assert body["last_sequence"] == 1
    assert body["owner_id"] == alice.id
    assert body["parent_session_id"] is None
    stored = Session.objects.get(id=body["id"])
    assert stored.owner == alice
    events = event_list(session_id=stored.id)
    assert [e.type for e in events] == ["session_created"]
    assert events[0].metadata == {"actor": f"user:{alice.id}"}


def test_create_with_a_parent_of_ones_own(api, session):
    response = api.post(
        "/api/v1/sessions",
        {"agent_id": "child", "parent_session_id": str(session.id)},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["parent_session_id"] == str(session.id)


def test_create_with_another_owners_parent_is_404(bob_api, session):
    response = bob_api.post(
        "/api/v1/sessions",
        {"agent_id": "child", "parent_session_id": str(session.id)},
        format="json",
    )
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"
    assert not Session.objects.filter(agent_id="child").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "agent_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": "   "}, "agent_id"),
        ({"agent_id": "x" * 201}, "agent_id"),
        ({"agent_id": "a", "context": [1]}, "context"),
        ({"agent_id": "a", "metadata": "no"}, "metadata"),
        ({"agent_id": "a", "tags": "one"}, "tags"),
        ({"agent_id": "a", "tags": [{"x": 1}]}, "tags"),
        ({"agent_id": "a", "parent_session_id": "not-a-uuid"}, "parent_session_id"),
    ],
)
def test_create_validation_errors_are_400_and_name_the_field(api, body, field):
    response = api.post("/api/v1/sessions", body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["category"] == "validation"
    assert field in error["details"]["fields"]
    assert not Session.objects.exists()


def test_create_with_a_body_that_is_not_an_object_is_400(api):
    response = api.post("/api/v1/sessions", [1, 2], format="json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"


def test_create_with_an_unknown_parent_is_404(api):
    response = api.post(
        "/api/v1/sessions", {"agent_id": "a", "parent_session_id": str(uuid.uuid4())}, format="json"
    )
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"


# --------------------------------------------------------------------------- list


def _ids(response: Any) -> list[str]:
    return [s["id"] for s in response.json()["results"]]


def test_list_shows_only_ones_own_sessions_newest_first(api, alice, bob):
    mine = [session_create(agent_id=f"a{i}", owner=alice).id for i in range(3)]
    session_create(agent_id="theirs", owner=bob)
    response = api.get("/api/v1/sessions")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert _ids(response) == [str(i) for i in reversed(mine)]
    assert body["next"] is None


def test_staff_see_every_session(alice, bob):
    session_create(agent_id="a", owner=alice)
    session_create(agent_id="b", owner=bob)
    staff = User.objects.create_user("root", is_staff=True)
    response = bearer_client(staff).get("/api/v1/sessions")
    assert len(response.json()["results"]) == 2


def test_list_filters_by_status_agent_and_tag(api, alice):
    plain = session_create(agent_id="coder", owner=alice, tags=["red"])
    session_create(agent_id="coder", owner=alice, tags=["blue", "red"])
    other = session_create(agent_id="writer", owner=alice, tags=["blue"])
    api.post(f"/api/v1/sessions/{plain.id}/activate")
    assert _ids(api.get("/api/v1/sessions?status=active")) == [str(plain.id)]
    assert len(_ids(api.get("/api/v1/sessions?agent_id=coder"))) == 2
    assert len(_ids(api.get("/api/v1/sessions?tag=red"))) == 2
    assert _ids(api.get("/api/v1/sessions?tag=blue&agent_id=writer")) == [str(other.id)]
    assert _ids(api.get("/api/v1/sessions?tag=re")) == []  # whole tags only
    assert _ids(api.get("/api/v1/sessions?status=completed")) == []


def test_list_pages_with_a_cursor_in_both_orders(api, alice):
    ids = [str(session_create(agent_id=f"s{i}", owner=alice).id) for i in range(5)]
    seen: list[str] = []
    url = "/api/v1/sessions?page_size=2"
    while url:
        page = api.get(url).json()
        seen.extend(s["id"] for s in page["results"])
        url = page["next"]
    assert seen == list(reversed(ids))
    oldest = api.get("/api/v1/sessions?ordering=created_at&page_size=2").json()
    assert [s["id"] for s in oldest["results"]] == ids[:2]
    second = api.get(oldest["next"]).json()
    assert [s["id"] for s in second["results"]] == ids[2:4]
    back = api.get(second["previous"]).json()
    assert [s["id"] for s in back["results"]] == ids[:2]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=sleeping", "status"),
        ("ordering=agent_id", "ordering"),
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=many", "page_size"),
        ("cursor=garbage", "cursor"),
    ],
)
def test_list_bad_query_parameters_are_400(api, query, field):
    response = api.get(f"/api/v1/sessions?{query}")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in error["details"]["fields"]


# --------------------------------------------------------------------------- detail


def test_detail_has_last_sequence(api, session):
    response = api.get(f"/api/v1/sessions/{session.id}")
    assert response.status_code == 200
    assert response.json()["id"] == str(session.id)
    assert response.json()["status"] == "active"
    assert response.json()["last_sequence"] == 2  # session_created, session_started


def test_detail_of_an_unknown_session_is_404(api):
    response = api.get(f"/api/v1/sessions/{uuid.uuid4()}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"


def test_detail_with_a_malformed_id_is_404(api):
    response = api.get("/api/v1/sessions/not-a-uuid")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_detail_of_another_owners_session_is_the_same_404(api, bob_api, session):
    theirs = bob_api.get(f"/api/v1/sessions/{session.id}")
    missing = bob_api.get(f"/api/v1/sessions/{uuid.uuid4()}")
    assert theirs.status_code == missing.status_code == 404
    assert error_of(theirs)["code"] == error_of(missing)["code"] == "session_not_found"


# --------------------------------------------------------------------------- transitions


def test_the_whole_lifecycle_through_the_api(api, alice):
    sid = session_create(agent_id="life", owner=alice).id
    for verb, status in [
        ("activate", "active"),
        ("pause", "paused"),
        ("resume", "active"),
        ("complete", "completed"),
    ]:
        response = api.post(f"/api/v1/sessions/{sid}/{verb}")
        assert response.status_code == 200, (verb, response.json())
        assert response.json()["status"] == status
    types = [e.type for e in event_list(session_id=sid)]
    assert types == [
        "session_created",
        "session_started",
        "session_paused",
        "session_resumed",
        "session_completed",
    ]
    assert all(e.metadata == {"actor": f"user:{alice.id}"} for e in event_list(session_id=sid))


@pytest.mark.parametrize(
    ("verb", "setup"),
    [
        ("activate", ["activate"]),  # already active
        ("pause", []),  # pending
        ("resume", ["activate"]),  # not paused
        ("complete", []),  # pending
        ("fail", []),  # pending
        ("cancel", []),  # pending
        ("pause", ["activate", "complete"]),  # terminal
        ("cancel", ["activate", "cancel"]),  # terminal
    ],
)
def test_invalid_transitions_are_409_and_change_nothing(api, alice, verb, setup):
    sid = session_create(agent_id="t", owner=alice).id
    for step in setup:
        assert api.post(f"/api/v1/sessions/{sid}/{step}").status_code == 200
    before = Session.objects.get(id=sid)
    response = api.post(f"/api/v1/sessions/{sid}/{verb}")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "invalid_transition"
    after = Session.objects.get(id=sid)
    assert (after.status, after.last_sequence) == (before.status, before.last_sequence)


def test_fail_records_the_given_error(api, session):
    response = api.post(
        f"/api/v1/sessions/{session.id}/fail",
        {"error_code": "provider_error", "error_message": "upstream broke"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    last = event_list(session_id=session.id)[-1]
    assert last.type == "session_failed"
    assert last.data == {"error_code": "provider_error", "error_message": "upstream broke"}


def test_fail_with_no_body_uses_the_defaults(api, session):
    response = api.post(f"/api/v1/sessions/{session.id}/fail")
    assert response.status_code == 200
    assert event_list(session_id=session.id)[-1].data["error_code"] == "unknown_error"


def test_fail_with_a_bad_body_is_400(api, session):
    response = api.post(f"/api/v1/sessions/{session.id}/fail", {"error_code": ["x"]}, format="json")
    assert response.status_code == 400
    assert "error_code" in error_of(response)["details"]["fields"]
    assert Session.objects.get(id=session.id).status == "active"


def test_cancel_cancels_the_sessions_unfinished_runs(api, session):
    first = run_submit(session_id=session.id, input="one").run
    second = run_submit(session_id=session.id, input="two").run
    response = api.post(f"/api/v1/sessions/{session.id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    statuses = set(
        Run.objects.filter(id__in=[first.id, second.id]).values_list("status", flat=True)
    )
    assert statuses == {"cancelled"}


@pytest.mark.parametrize("verb", ["activate", "pause", "resume", "complete", "fail", "cancel"])
def test_transitions_of_another_owners_session_are_404_and_change_nothing(bob_api, session, verb):
    response = bob_api.post(f"/api/v1/sessions/{session.id}/{verb}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"
    assert Session.objects.get(id=session.id).status == "active"


@pytest.mark.parametrize("verb", ["activate", "pause", "resume", "complete", "fail", "cancel"])
def test_transitions_of_an_unknown_session_are_404(api, verb):
    response = api.post(f"/api/v1/sessions/{uuid.uuid4()}/{verb}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"
