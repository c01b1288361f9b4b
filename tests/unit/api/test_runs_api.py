"""Run endpoints without a worker: submit (and idempotency), list, detail, cancel, providers.

No worker runs here, so submitted runs stay `pending`; execution through the API is in
test_wait_and_once.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from runs.models import Run
from runs.services import run_submit
from sessions.models import Session
from sessions.services import session_create
from tests.unit.api.conftest import error_of

pytestmark = pytest.mark.django_db


def _submit(
    api: APIClient, session_id: uuid.UUID, body: object = None, key: str | None = None
) -> Any:
    return api.post(
        f"/api/v1/sessions/{session_id}/runs",
        body if body is not None else {"input": {"prompt": "hello"}},
        format="json",
        headers={} if key is None else {"Idempotency-Key": key},
    )


# --------------------------------------------------------------------------- submit


def test_submit_returns_202_with_the_pending_run(api, session):
    response = _submit(
        api,
        session.id,
        {"input": {"prompt": "hi"}, "provider": "echo", "options": {"timeout_ms": 5000}},
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["session_id"] == str(session.id)
    assert body["provider"] == "echo"
    assert body["input"] == {"prompt": "hi"}
    assert body["options"] == {"timeout_ms": 5000}
    assert body["queue_position"] == 1
    assert body["output"] is None
    assert body["idempotency_key"] is None
    assert Run.objects.filter(id=body["id"], session=session).exists()


def test_submit_activates_a_pending_session(api, alice):
    sid = session_create(agent_id="lazy", owner=alice).id
    assert _submit(api, sid).status_code == 202
    assert Session.objects.get(id=sid).status == "active"


def test_submit_accepts_messages_input(api, session):
    body = {"input": {"messages": [{"role": "user", "content": "hi"}]}}
    assert _submit(api, session.id, body).status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": None},
        {"input": 42},
        {"input": {"messages": []}},
        {"input": {"prompt": ""}},
        {"input": "hi", "provider": "nosuch"},
        {"input": "hi", "options": []},
        {"input": "hi", "options": {"bogus": 1}},
        {"input": "hi", "options": {"timeout_ms": 0}},
        {"input": "hi", "options": {"adapter_opts": {"delay": 5}}},
    ],
)
def test_bad_submissions_are_400_and_store_nothing(api, session, body):
    response = _submit(api, session.id, body)
    assert response.status_code == 400, response.json()
    assert error_of(response)["category"] == "validation"
    assert not Run.objects.exists()


def test_submit_to_a_finished_session_is_409(api, session):
    api.post(f"/api/v1/sessions/{session.id}/complete")
    response = _submit(api, session.id)
    assert response.status_code == 409
    assert error_of(response)["code"] == "invalid_operation"


def test_submit_past_the_queue_limit_is_429(api, session, settings):
    settings.ASM_MAX_QUEUED_RUNS = 1
    assert _submit(api, session.id).status_code == 202
    response = _submit(api, session.id)
    assert response.status_code == 429
    assert error_of(response)["code"] == "max_runs_exceeded"


def test_submit_to_another_owners_session_is_404(bob_api, session):
    response = _submit(bob_api, session.id)
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"
    assert not Run.objects.exists()


def test_submit_to_an_unknown_session_is_404(api):
    response = _submit(api, uuid.uuid4())
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"


# --------------------------------------------------------------------------- idempotency


def test_the_same_key_and_body_replay_the_same_run_with_200(api, session):
    first = _submit(api, session.id, key="k-1")
    again = _submit(api, session.id, key="k-1")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "k-1"
    assert Run.objects.count() == 1


def test_the_same_key_with_another_body_is_409(api, session):
    first = _submit(api, session.id, key="k-1")
    response = _submit(api, session.id, {"input": {"prompt": "different"}}, key="k-1")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "already_exists"
    assert error["details"]["run_id"] == first.json()["id"]
    assert Run.objects.count() == 1


def test_keys_are_per_session(api, session, alice):
    other = session_create(agent_id="other", owner=alice)
    a = _submit(api, session.id, key="shared")
    b = _submit(api, other.id, key="shared")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_an_overlong_idempotency_key_is_400(api, session):
    response = _submit(api, session.id, key="k" * 256)
    assert response.status_code == 400
    assert "idempotency_key" in error_of(response)["details"]["fields"]
    assert not Run.objects.exists()


# --------------------------------------------------------------------------- list and detail


def test_list_is_oldest_first_and_paginated(api, session):
    ids = [
        _submit(api, session.id, {"input": {"prompt": f"run {i}"}}).json()["id"] for i in range(3)
    ]
    response = api.get(f"/api/v1/sessions/{session.id}/runs")
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == ids
    assert [r["queue_position"] for r in response.json()["results"]] == [1, 2, 3]
    page = api.get(f"/api/v1/sessions/{session.id}/runs?page_size=2").json()
    assert [r["id"] for r in page["results"]] == ids[:2]
    rest = api.get(page["next"]).json()
    assert [r["id"] for r in rest["results"]] == ids[2:]


def test_list_bad_page_size_is_400(api, session):
    response = api.get(f"/api/v1/sessions/{session.id}/runs?page_size=x")
    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"


def test_list_of_another_owners_session_is_404(bob_api, session):
    run_submit(session_id=session.id, input="mine")
    response = bob_api.get(f"/api/v1/sessions/{session.id}/runs")
    assert response.status_code == 404
    assert error_of(response)["code"] == "session_not_found"


def test_detail_has_the_documented_fields(api, session):
    run_id = _submit(api, session.id).json()["id"]
    response = api.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200
    body = response.json()
    assert {
        "id",
        "session_id",
        "status",
        "provider",
        "input",
        "output",
        "error",
        "token_usage",
        "cost_usd",
        "metadata",
        "waiting_reason",
        "queue_position",
        "created_at",
        "started_at",
        "ended_at",
    } <= set(body)
    assert body["status"] == "pending"
    assert body["queue_position"] == 1
    assert body["cost_usd"] is None


def test_detail_of_an_unknown_run_is_404(api):
    response = api.get(f"/api/v1/runs/{uuid.uuid4()}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "run_not_found"


def test_detail_of_another_owners_run_is_404(bob_api, session):
    run = run_submit(session_id=session.id, input="mine").run
    response = bob_api.get(f"/api/v1/runs/{run.id}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "run_not_found"


# --------------------------------------------------------------------------- cancel


def test_cancel_a_pending_run_is_202_and_cancels_it(api, session):
    run = run_submit(session_id=session.id, input="wait").run
    response = api.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["queue_position"] is None
    assert Run.objects.get(id=run.id).status == "cancelled"


def test_cancel_a_finished_run_is_200_and_changes_nothing(api, session):
    run = run_submit(session_id=session.id, input="wait").run
    api.post(f"/api/v1/runs/{run.id}/cancel")
    ended_at = Run.objects.get(id=run.id).ended_at
    response = api.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert Run.objects.get(id=run.id).ended_at == ended_at


def test_cancel_another_owners_run_is_404_and_changes_nothing(bob_api, session):
    run = run_submit(session_id=session.id, input="mine").run
    response = bob_api.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 404
    assert error_of(response)["code"] == "run_not_found"
    assert Run.objects.get(id=run.id).status == "pending"


def test_cancel_an_unknown_run_is_404(api):
    response = api.post(f"/api/v1/runs/{uuid.uuid4()}/cancel")
    assert response.status_code == 404


# --------------------------------------------------------------------------- providers


def test_providers_lists_the_registry_with_health_fields(api):
    response = api.get("/api/v1/providers")
    assert response.status_code == 200
    results = response.json()["results"]
    echo = next(p for p in results if p["name"] == "echo")
    assert echo["available"] is True
    assert echo["problem"] is None
    assert echo["cooldown_until"] is None
    assert echo["consecutive_failures"] == 0
    assert {"type", "name", "enabled", "description"} <= set(echo["capabilities"][0])
    assert "streaming" in {c["type"] for c in echo["capabilities"]}
