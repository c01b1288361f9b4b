"""The operator admin: staff only, filters and id search, read-only event log."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from events.models import Event
from events.selectors import latest_sequence
from events.services import NewEvent, event_append_many
from runs.services import run_create
from sessions.models import Session
from sessions.services import session_activate, session_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    user = User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def session_with_log() -> Session:
    session = session_create(agent_id="agent-x")
    session_activate(session_id=session.id)
    run, _ = run_create(session_id=session.id, input={"prompt": "hello"})
    event_append_many(
        session_id=session.id,
        events=[
            NewEvent(type="message_sent", data={"role": "user", "content": "hello"}, run_id=run.id),
            NewEvent(type="run_started", run_id=run.id),
            NewEvent(type="message_received", data={"content": "hi there"}, run_id=run.id),
        ],
    )
    return Session.objects.get(id=session.id)


def test_admin_requires_staff(session_with_log):
    anonymous = Client()
    url = reverse("admin:agent_sessions_session_changelist")
    assert anonymous.get(url).status_code == 302
    User.objects.create_user("plain", password="pw", is_staff=False)
    plain = Client()
    plain.force_login(User.objects.get(username="plain"))
    assert plain.get(url).status_code == 302


def test_session_list_filters_and_id_search(staff_client, session_with_log):
    other = session_create(agent_id="agent-y")
    url = reverse("admin:agent_sessions_session_changelist")
    page = staff_client.get(url, {"status__exact": "active"}).content.decode()
    assert str(session_with_log.id) in page
    assert str(other.id) not in page
    page = staff_client.get(url, {"q": str(other.id)}).content.decode()
    assert str(other.id) in page
    assert str(session_with_log.id) not in page
    assert staff_client.get(url, {"q": "not-a-uuid"}).status_code == 200
    page = staff_client.get(url, {"agent_id": "agent-y"}).content.decode()
    assert str(other.id) in page


def test_session_page_shows_runs_and_latest_events_in_order(staff_client, session_with_log):
    url = reverse("admin:agent_sessions_session_change", args=[session_with_log.id])
    page = staff_client.get(url).content.decode()
    run = session_with_log.runs.get()
    assert str(run.id) in page
    order = [
        page.index(f"<td>{n}</td><td>{t}</td>")
        for n, t in [
            (1, "session_created"),
            (2, "session_started"),
            (3, "message_sent"),
            (4, "run_started"),
            (5, "message_received"),
        ]
    ]
    assert order == sorted(order)


def test_session_transition_action_goes_through_the_service(staff_client, session_with_log):
    url = reverse("admin:agent_sessions_session_changelist")
    before = latest_sequence(session_id=session_with_log.id)
    staff_client.post(url, {"action": "pause", "_selected_action": [str(session_with_log.id)]})
    session_with_log.refresh_from_db()
    assert session_with_log.status == "paused"
    assert latest_sequence(session_id=session_with_log.id) == before + 1
    # A forbidden move is refused and changes nothing.
    staff_client.post(url, {"action": "activate", "_selected_action": [str(session_with_log.id)]})
    session_with_log.refresh_from_db()
    assert session_with_log.status == "paused"
    assert latest_sequence(session_id=session_with_log.id) == before + 1


def test_event_log_is_read_only_in_the_admin(staff_client, session_with_log):
    event = Event.objects.filter(session=session_with_log).first()
    assert event is not None
    assert staff_client.get(reverse("admin:events_event_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:events_event_add")).status_code == 403
    change = reverse("admin:events_event_change", args=[event.id])
    page = staff_client.get(change)
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content
    assert staff_client.post(change, {"type": "run_failed"}).status_code == 403
    delete = reverse("admin:events_event_delete", args=[event.id])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.type != "run_failed"
    assert Event.objects.filter(id=event.id).exists()


def test_run_list_filters_by_status(staff_client, session_with_log):
    url = reverse("admin:runs_run_changelist")
    run = session_with_log.runs.get()
    assert str(run.id) in staff_client.get(url, {"status__exact": "pending"}).content.decode()
    assert str(run.id) not in staff_client.get(url, {"status__exact": "running"}).content.decode()
