"""The operator console's server side: the session page carries the console and its data,
the runs list shows duration/tokens/cost, and the bulk cancel action goes through run_cancel."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from events.models import Event
from runs.models import Run
from runs.services import run_create
from sessions.services import session_activate, session_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    user = User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def _config(page: str) -> dict[str, Any]:
    found = re.search(
        r'<script id="asm-console-config" type="application/json">(.*?)</script>', page, re.S
    )
    assert found, "no console config on the page"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


def test_session_page_carries_the_console(staff_client: Client):
    session = session_create(agent_id="console")
    session_activate(session_id=session.id)
    run, _ = run_create(session_id=session.id, input={"prompt": "hi"}, provider="echo")
    url = reverse("admin:agent_sessions_session_change", args=[session.id])
    page = staff_client.get(url).content.decode()

    assert 'id="asm-console"' in page
    assert "/static/asm/console.js" in page
    assert "/static/asm/console.css" in page
    assert re.search(r'data-csrf-token="[^"]{32,}"', page)
    for action in ("submit", "complete", "fail"):
        assert f'data-action="{action}"' in page
    config = _config(page)
    assert config["session_id"] == str(session.id)
    assert config["status"] == "active"
    assert config["last_sequence"] == 2
    assert config["api_base"] == "/api/v1/"
    assert config["ws_path"] == f"/ws/sessions/{session.id}/events"
    assert [r["id"] for r in config["runs"]] == [str(run.id)]
    assert config["runs"][0]["status"] == "pending"
    # the console sits outside the admin form, so its buttons never submit it
    assert page.index('id="asm-console"') < page.index('id="session_form"')
    assert page.index("</section>") < page.index('id="session_form"')


def test_console_static_files_exist():
    from django.contrib.staticfiles import finders

    assert finders.find("asm/console.js")
    assert finders.find("asm/console.css")


def test_runs_list_shows_status_provider_duration_tokens_and_cost(staff_client: Client):
    session = session_create(agent_id="console")
    run, _ = run_create(session_id=session.id, input={"prompt": "hi"}, provider="echo")
    now = timezone.now()
    Run.objects.filter(id=run.id).update(
        status="completed",
        started_at=now - timedelta(seconds=2.5),
        ended_at=now,
        token_usage={"input_tokens": 1200, "output_tokens": 34},
        cost_usd=Decimal("0.0123"),
        routed_provider="claude",
    )
    page = staff_client.get(reverse("admin:runs_run_changelist")).content.decode()
    for header in ("status", "provider", "duration", "tokens", "cost"):
        assert f">{header.capitalize()}<" in page or f">{header}<" in page.lower()
    assert "2.50 s" in page
    assert "1,234" in page
    assert "$0.0123" in page
    assert "echo -&gt; claude" in page


def test_bulk_cancel_goes_through_run_cancel(staff_client: Client):
    queued = session_create(agent_id="console")
    pending, _ = run_create(session_id=queued.id, input={"prompt": "a"})
    busy = session_create(agent_id="console")
    running, _ = run_create(session_id=busy.id, input={"prompt": "b"})
    Run.objects.filter(id=running.id).update(status="running", started_at=timezone.now())
    done_session = session_create(agent_id="console")
    finished, _ = run_create(session_id=done_session.id, input={"prompt": "c"})
    Run.objects.filter(id=finished.id).update(status="completed", ended_at=timezone.now())

    response = staff_client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "cancel_runs", "_selected_action": [pending.id, running.id, finished.id]},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "1 cancelled" in text
    assert "1 running: cancel requested" in text
    assert "1 already finished: unchanged" in text

    pending.refresh_from_db()
    running.refresh_from_db()
    finished.refresh_from_db()
    assert pending.status == "cancelled"
    assert Event.objects.filter(run_id=pending.id, type="run_cancelled").count() == 1
    user = User.objects.get(username="op")
    assert Event.objects.get(run_id=pending.id, type="run_cancelled").metadata == {
        "actor": f"user:{user.pk}"
    }
    assert running.status == "running"
    assert running.cancel_requested_at is not None
    assert finished.status == "completed"
