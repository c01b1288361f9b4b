"""Execution through the API on the embedded worker: long-poll wait, cancel of a running run,
and the one-shot. The worker runs on its own threads, so these tests commit
(`transaction=True`), like tests/unit/runs/test_embedded_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connections
from django.test import AsyncClient
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from events.models import Event
from runs.models import Run
from runs.services import run_wait
from sessions.models import Session
from tests.unit.api.conftest import error_of
from workers.embedded import EmbeddedWorker

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(settings.REDIS_URL), reason="embedded mode runs without REDIS_URL"),
]


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedWorker]:
    worker = EmbeddedWorker(threads=4, reaper_interval_s=0.2).start()
    yield worker
    worker.stop()
    connections.close_all()


def _submit(api: APIClient, session: Session, prompt: str = "hello wait", **options: Any) -> Any:
    response = api.post(
        f"/api/v1/sessions/{session.id}/runs",
        {"input": {"prompt": prompt}, "options": options},
        format="json",
    )
    assert response.status_code == 202, response.json()
    return response.json()


def _running(run_id: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while Run.objects.get(id=run_id).status != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)


# --------------------------------------------------------------------------- wait


def test_wait_returns_the_finished_run(embedded, api, session):
    run = _submit(api, session, "hello wait")
    response = api.get(f"/api/v1/runs/{run['id']}/wait?timeout=10")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["output"]["content"] == "hello wait"
    assert body["token_usage"]
    assert body["queue_position"] is None


def test_wait_returns_the_run_as_it_is_after_the_timeout(embedded, api, session):
    run = _submit(api, session, "hang", adapter_opts={"hang": True})
    _running(run["id"])
    started = time.monotonic()
    response = api.get(f"/api/v1/runs/{run['id']}/wait?timeout=0.3")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert 0.3 <= elapsed < 3
    # Cancel the running run: 202 at once, then it ends `cancelled`.
    cancel = api.post(f"/api/v1/runs/{run['id']}/cancel")
    assert cancel.status_code == 202
    assert cancel.json()["status"] == "running"
    assert cancel.json()["cancel_requested_at"] is not None
    done = api.get(f"/api/v1/runs/{run['id']}/wait?timeout=10").json()
    assert done["status"] == "cancelled"


def test_the_wait_holds_no_thread_per_waiter(embedded, api, alice, session):
    """Twenty concurrent 1 s waits on one event loop end in about 1 s, although every ORM
    call of the whole loop runs on ONE thread (asgiref's thread-sensitive executor)."""
    run = _submit(api, session, "hang", adapter_opts={"hang": True})
    _running(run["id"])
    token = Token.objects.get(user=alice).key

    async def wait_many() -> tuple[float, list[Any]]:
        client = AsyncClient()
        # Per request: Django 5.2's AsyncClient would send constructor headers as
        # `http-authorization`.
        auth = {"Authorization": f"Bearer {token}"}
        url = f"/api/v1/runs/{run['id']}/wait?timeout=1"
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get(url, headers=auth) for _ in range(20)))
        return time.monotonic() - started, responses

    elapsed, responses = async_to_sync(wait_many)()
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["status"] for r in responses} == {"running"}
    assert elapsed < 6, elapsed  # 20 blocking waits in series would take 20 s
    api.post(f"/api/v1/runs/{run['id']}/cancel")
    assert run_wait(run_id=run["id"], timeout_s=10).status == "cancelled"


@pytest.mark.parametrize("query", ["?timeout=61", "?timeout=-1", "?timeout=soon", "?timeout=nan"])
def test_wait_with_a_bad_timeout_is_400(api, session, query):
    run = _submit(api, session, "quick")
    response = api.get(f"/api/v1/runs/{run['id']}/wait{query}")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert "timeout" in error["details"]["fields"]


def test_wait_for_an_unknown_run_is_404(api):
    response = api.get("/api/v1/runs/00000000-0000-0000-0000-000000000000/wait?timeout=0")
    assert response.status_code == 404
    assert error_of(response)["code"] == "run_not_found"


# --------------------------------------------------------------------------- one-shot


def test_one_shot_runs_and_completes_a_session_of_the_caller(embedded, api, alice):
    response = api.post(
        "/api/v1/run", {"input": {"prompt": "one shot"}, "agent_id": "oneshot"}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) >= {
        "session_id",
        "run_id",
        "status",
        "output",
        "token_usage",
        "events_count",
    }
    assert body["status"] == "completed"
    assert body["output"]["content"] == "one shot"
    session = Session.objects.get(id=body["session_id"])
    assert (session.owner, session.agent_id, session.status) == (alice, "oneshot", "completed")
    assert body["events_count"] == Event.objects.filter(session=session).count() > 0
    assert api.get(f"/api/v1/runs/{body['run_id']}").status_code == 200


def test_one_shot_reports_a_failed_run(embedded, api):
    response = api.post(
        "/api/v1/run",
        {"input": "boom", "options": {"adapter_opts": {"fail": {"code": "provider_error"}}}},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "provider_error"
    assert Session.objects.get(id=body["session_id"]).status == "failed"


def test_one_shot_returns_an_unfinished_run_after_its_timeout(embedded, api):
    response = api.post(
        "/api/v1/run",
        {"input": "hang", "options": {"adapter_opts": {"hang": True}}, "timeout": 0.3},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] in {"pending", "running"}
    assert Session.objects.get(id=body["session_id"]).status == "active"
    api.post(f"/api/v1/sessions/{body['session_id']}/cancel")
    assert run_wait(run_id=body["run_id"], timeout_s=10).status == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "input"),
        ({"input": "x", "timeout": 61}, "timeout"),
        ({"input": "x", "timeout": -1}, "timeout"),
        ({"input": "x", "agent_id": ""}, "agent_id"),
        ({"input": "x", "options": "fast"}, "options"),
    ],
)
def test_one_shot_validation_errors_are_400(api, body, field):
    response = api.post("/api/v1/run", body, format="json")
    assert response.status_code == 400
    assert field in error_of(response)["details"]["fields"]
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"input": {"messages": []}},
        {"input": "x", "provider": "nosuch"},
        {"input": "x", "options": {"bogus": True}},
    ],
)
def test_one_shot_service_validation_errors_are_400_and_create_nothing(api, body):
    response = api.post("/api/v1/run", body, format="json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"
    assert not Session.objects.exists()
