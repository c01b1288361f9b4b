"""Acceptance: a planted secret appears in no stored event, log line, admin page or API
response (issue 8, item 4). Fake keys go in through every input path reachable without
services: session context and metadata, the run's prompt, its `adapter_opts` (echo tool
calls, whose input and output the provider emits as events), a direct event append, a log
call; the run executes on the embedded worker (SQLite, `memory://`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from asm_core.redaction import MASK, Redactor, redact
from asm_project.logging import ContextFilter, JsonFormatter, RedactFilter, log_context
from events.models import Event
from events.services import event_append
from runs.models import Run
from runs.services import run_submit, run_wait
from sessions.models import Session
from sessions.services import session_create

FAKE = "sk-ant-api03-FAKEKEY0123456789abcdefABCDEF"
OPENAI = "sk-proj-FAKEOPENAIKEY0123456789"
CONFIGURED = "configured-anthropic-value-0042"  # the configured key: no known shape
PATTERNED = "corp-secret-314159"  # matched only by ASM_REDACT_PATTERNS
SECRETS = (FAKE, OPENAI, CONFIGURED, PATTERNED, "FAKEKEY0123456789")


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}"


@pytest.fixture
def secrets_configured(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CONFIGURED)
    settings.ASM_REDACT_PATTERNS = [r"corp-secret-\d{6}"]


# --------------------------------------------------------------------------- unit level


def test_redact_masks_known_shapes_and_keeps_clean_values_identical():
    clean = {"content": "hello world", "n": 3, "items": ["a", {"b": "c"}]}
    assert redact(clean) is clean  # nothing to do: the very same object, no copy
    dirty = {
        "content": f"key {FAKE} ok",
        "nested": [{"auth": f"Authorization: Bearer {OPENAI}"}],
        "api_key": "short",  # secret-named key: masked whatever the value
    }
    out = redact(dirty)
    assert out["content"] == f"key {MASK} ok"
    assert MASK in out["nested"][0]["auth"]
    assert OPENAI not in out["nested"][0]["auth"]
    assert out["api_key"] == MASK
    assert dirty["content"] == f"key {FAKE} ok"  # the input is not changed


def test_redactor_literals_and_patterns():
    r = Redactor(literals=[CONFIGURED, "short"], patterns=[r"corp-secret-\d{6}"])
    assert r.redact_text(f"a {CONFIGURED} b {PATTERNED}") == f"a {MASK} b {MASK}"
    assert r.redact_text("a short word") == "a short word"  # literals under 8 chars ignored


def test_log_lines_are_json_with_context_and_no_secret(secrets_configured):
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("asm.test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(session_id="s-1", run_id="r-1", task_id="t-1", provider="echo"):
            logger.info("calling with %s and %s", FAKE, CONFIGURED)
            logger.warning("header Authorization: Bearer %s", OPENAI)
            try:
                raise RuntimeError(f"boom {PATTERNED}")
            except RuntimeError:
                logger.exception("failed")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]  # one JSON object per line
    assert records[0]["session_id"] == "s-1"
    assert records[0]["run_id"] == "r-1"
    assert records[0]["task_id"] == "t-1"
    assert records[0]["provider"] == "echo"
    assert "session_id" not in records[3]  # the context ends with the block
    assert MASK in records[0]["message"]
    assert "exception" in records[2]
    _assert_clean(buffer.getvalue(), "log lines")


def test_settings_wire_the_filters_into_the_console_handler():
    console = settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["context", "redact"]
    assert console["formatter"] == settings.ASM_LOG_FORMAT
    assert settings.ASM_LOG_FORMAT in ("json", "text")


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def embedded() -> Iterator[None]:
    from workers.embedded import EmbeddedWorker

    worker = EmbeddedWorker(threads=2, reaper_interval_s=0.5).start()
    yield
    worker.stop()
    connections.close_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(bool(settings.REDIS_URL), reason="embedded mode runs without REDIS_URL")
def test_planted_secrets_reach_no_event_admin_page_or_api_response(
    secrets_configured, embedded, caplog
):
    staff = User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)
    caplog.set_level(logging.DEBUG)
    session = session_create(
        agent_id="redaction",
        owner=staff,
        context={"note": f"my key is {FAKE}", "api_key": CONFIGURED},
        metadata={"headers": {"Authorization": f"Bearer {OPENAI}"}, "ref": PATTERNED},
    )
    created = run_submit(
        session_id=session.id,
        input={"prompt": f"use {FAKE} then {CONFIGURED} and {PATTERNED}"},
        provider="echo",
        options={
            "adapter_opts": {
                "tool_calls": [
                    {"name": "lookup", "input": {"key": FAKE}, "output": f"got {CONFIGURED}"}
                ]
            }
        },
        actor=staff,
    )
    run = run_wait(run_id=created.run.id, timeout_s=15)
    assert run.status == "completed", run.error
    # An event appended directly (as an adapter or integrator would).
    event_append(
        session_id=session.id,
        type="message_received",
        data={"content": f"leaked {FAKE} {CONFIGURED} {OPENAI}", "role": "assistant"},
        metadata={"note": PATTERNED},
    )
    logging.getLogger("asm.test").warning("planted %s %s", FAKE, CONFIGURED)

    # Stored rows.
    events = list(Event.objects.filter(session_id=session.id).order_by("sequence_number"))
    assert {"tool_call_started", "tool_call_completed", "message_received"} <= {
        e.type for e in events
    }
    for event in events:
        _assert_clean(json.dumps([event.data, event.metadata]), f"event {event.type}")
    stored = Session.objects.get(id=session.id)
    _assert_clean(json.dumps([stored.context, stored.metadata]), "the session row")
    stored_run = Run.objects.get(id=run.id)
    _assert_clean(
        json.dumps([stored_run.input, stored_run.options, stored_run.output, stored_run.error]),
        "the run row",
    )

    # Log lines, through the project's redaction filter (as the console handler applies it).
    redactor = RedactFilter()
    formatter = JsonFormatter()
    for record in caplog.records:
        redactor.filter(record)
        _assert_clean(formatter.format(record), "a log line")

    # API responses.
    api = APIClient()
    api.force_authenticate(staff)
    for url in (
        f"/api/v1/sessions/{session.id}",
        "/api/v1/sessions",
        f"/api/v1/sessions/{session.id}/runs",
        f"/api/v1/runs/{run.id}",
        f"/api/v1/sessions/{session.id}/events?limit=1000",
        "/api/v1/audit",
    ):
        response = api.get(url)
        assert response.status_code == 200, (url, response.content[:300])
        _assert_clean(response.content.decode(), url)

    # Admin pages.
    admin = Client()
    admin.force_login(staff)
    pages = [
        reverse("admin:agent_sessions_session_change", args=[session.id]),
        reverse("admin:agent_sessions_session_changelist"),
        reverse("admin:runs_run_change", args=[run.id]),
        *(reverse("admin:events_event_change", args=[e.pk]) for e in events),
        reverse("admin:events_event_changelist"),
    ]
    for url in pages:
        page = admin.get(url)
        assert page.status_code == 200, url
        _assert_clean(page.content.decode(), url)


@pytest.mark.django_db
def test_a_secret_in_provider_output_is_not_stored_on_the_run(secrets_configured):
    from asm_core.records import NewEvent
    from runs.services import run_create
    from runs.store import DjangoSessionStore

    session = session_create(agent_id="redaction")
    run, _ = run_create(session_id=session.id, input={"prompt": "read the env file"})
    store = DjangoSessionStore()
    claimed = store.run_claim_next(session.id, owner="test", lease_ms=60_000)
    assert claimed is not None
    finished = store.run_finish(
        run.id,
        attempt=claimed.attempt,
        status="failed",
        output={"content": f"ANTHROPIC_API_KEY={CONFIGURED}"},
        error={"code": "provider_error", "message": f"rejected key {FAKE}"},
        token_usage={},
        metadata={},
        terminal=NewEvent(
            type="run_failed",
            run_id=run.id,
            data={"error_code": "provider_error", "error_message": f"rejected key {FAKE}"},
        ),
    )
    assert finished is not None
    stored = Run.objects.get(id=run.id)
    _assert_clean(json.dumps([stored.output, stored.error]), "the finished run row")
    for event in Event.objects.filter(session_id=session.id):
        _assert_clean(json.dumps(event.data), f"event {event.type}")
