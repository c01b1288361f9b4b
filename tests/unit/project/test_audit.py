"""The audit log (issue 8, item 3): control actions recorded with actor, time, object and
outcome; append-only; read-only in the admin; `GET /api/v1/audit` for staff with filters
and cursor pages."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from asm_core.errors import AsmError
from runs.services import run_cancel, run_submit
from sessions.audit import audit_record
from sessions.models import AuditEntry, AuditImmutableError
from sessions.services import session_create, session_pause, session_resume

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)


def _actions() -> list[tuple[str, str, str]]:
    return list(AuditEntry.objects.order_by("id").values_list("action", "object_id", "outcome"))


def test_lifecycle_submit_and_cancel_are_recorded(staff):
    session = session_create(agent_id="audited", owner=staff)
    created = run_submit(session_id=session.id, input={"prompt": "hi"}, actor=staff)
    run_cancel(run_id=created.run.id, actor=staff)
    session_pause(session_id=session.id, actor=staff)
    session_resume(session_id=session.id, actor=staff.pk)
    sid, rid = str(session.id), str(created.run.id)
    assert _actions() == [
        ("session.create", sid, "ok"),
        ("session.activate", sid, "ok"),
        ("run.submit", sid, "ok"),
        ("run.cancel", rid, "ok"),
        ("session.pause", sid, "ok"),
        ("session.resume", sid, "ok"),
    ]
    entries = list(AuditEntry.objects.order_by("id"))
    assert {e.actor for e in entries} == {f"user:{staff.pk}"}
    assert entries[2].object_type == "session"
    assert entries[2].detail == {"run_id": rid, "created": True}
    assert entries[3].object_type == "run"
    assert all(e.created_at <= timezone.now() for e in entries)


def test_a_failed_action_is_recorded_with_its_error_code():
    session = session_create(agent_id="audited")
    with pytest.raises(AsmError):
        session_resume(session_id=session.id, actor="ops-script")  # pending: not resumable
    entry = AuditEntry.objects.get(action="session.resume")
    assert entry.outcome == "invalid_transition"
    assert entry.actor == "ops-script"
    assert entry.object_id == str(session.id)


def test_entries_cannot_be_changed_or_deleted():
    entry = audit_record(action="test.thing", actor="system", object_id="x")
    assert entry is not None
    entry.outcome = "forged"
    with pytest.raises(AuditImmutableError):
        entry.save()
    with pytest.raises(AuditImmutableError):
        entry.delete()
    with pytest.raises(AuditImmutableError):
        AuditEntry.objects.filter(pk=entry.pk).update(outcome="forged")
    with pytest.raises(AuditImmutableError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=entry.pk).outcome == "ok"


def test_auditing_can_be_turned_off(settings):
    settings.ASM_AUDIT_ENABLED = False
    session_create(agent_id="quiet")
    assert not AuditEntry.objects.exists()


def test_token_creation_is_recorded_once():
    call_command("asm_token", "robot", "--create-user", stdout=io.StringIO())
    call_command("asm_token", "robot", stdout=io.StringIO())  # existing token: no entry
    entry = AuditEntry.objects.get(action="token.create")
    assert entry.actor == "command:asm_token"
    assert entry.object_id == str(User.objects.get(username="robot").pk)


def test_admin_edits_and_health_reset_are_recorded_and_the_log_is_read_only(staff):
    client = Client()
    client.force_login(staff)
    response = client.post(
        reverse("admin:agent_sessions_agent_add"),
        {
            "agent_id": "from-admin",
            "name": "From admin",
            "version": "1",
            "description": "",
            "provider": "",
            "required_capabilities": "[]",
            "optional_capabilities": "[]",
            "system_prompt": "",
            "default_options": "{}",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(action="admin.add")
    assert entry.object_type == "agent_sessions.agent"
    assert entry.actor == f"user:{staff.pk}"

    client.post(reverse("admin:runs_run_providers"), {"provider": "echo"})
    reset = AuditEntry.objects.get(action="provider.health_reset")
    assert (reset.object_id, reset.outcome) == ("echo", "ok")

    changelist = client.get(reverse("admin:agent_sessions_auditentry_changelist"))
    assert changelist.status_code == 200
    assert "provider.health_reset" in changelist.content.decode()
    assert client.get(reverse("admin:agent_sessions_auditentry_add")).status_code == 403
    delete_url = reverse("admin:agent_sessions_auditentry_delete", args=[entry.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_audit_api_is_staff_only_filtered_and_paginated(staff):
    plain = User.objects.create_user("plain")
    for i in range(5):
        audit_record(action="test.a", actor=f"user:{plain.pk}", object_id=f"obj-{i}")
    audit_record(action="test.b", actor="system", object_type="run", object_id="obj-x")

    api = APIClient()
    api.force_authenticate(plain)
    denied = api.get("/api/v1/audit")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"

    api.force_authenticate(staff)
    page = api.get("/api/v1/audit", {"action": "test.a", "page_size": "2"}).json()
    assert [e["object_id"] for e in page["results"]] == ["obj-4", "obj-3"]
    assert page["next"]
    seen = [e["object_id"] for e in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [e["object_id"] for e in page["results"]]
    assert seen == [f"obj-{i}" for i in range(4, -1, -1)]

    only = api.get("/api/v1/audit", {"actor": "system", "object": "obj-x"}).json()["results"]
    assert [(e["action"], e["object_type"], e["outcome"]) for e in only] == [
        ("test.b", "run", "ok")
    ]
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert api.get("/api/v1/audit", {"since": later}).json()["results"] == []
    assert api.get("/api/v1/audit", {"since": "not-a-date"}).status_code == 400
    assert api.post("/api/v1/audit", {}).status_code == 405


def test_admin_bulk_delete_records_each_object(staff):
    from sessions.models import Agent

    agents = [Agent.objects.create(agent_id=f"bulk-{i}", name=f"Bulk {i}") for i in range(2)]
    client = Client()
    client.force_login(staff)
    response = client.post(
        reverse("admin:agent_sessions_agent_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(a.pk) for a in agents],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Agent.objects.filter(agent_id__startswith="bulk-").exists()
    deleted = AuditEntry.objects.filter(action="admin.delete", object_type="agent_sessions.agent")
    assert sorted(deleted.values_list("object_id", flat=True)) == sorted(str(a.pk) for a in agents)
