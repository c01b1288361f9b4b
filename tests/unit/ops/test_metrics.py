"""/metrics: names, labels and values computed from the database; the optional bearer token."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from asm_project.metrics import WS_CONNECTIONS
from events.services import NewEvent, event_append_many
from runs.models import Run
from runs.services import run_create
from sessions.services import session_activate, session_create

pytestmark = pytest.mark.django_db


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def make_run(*, status: str, provider: str = "echo", seconds: float | None = None, **fields):
    session = session_create(agent_id="metrics")
    session_activate(session_id=session.id)
    run, _ = run_create(session_id=session.id, input={"prompt": "hi"}, provider=provider)
    now = timezone.now()
    if seconds is not None:
        fields.update(started_at=now - timedelta(seconds=seconds), ended_at=now)
    Run.objects.filter(id=run.id).update(status=status, **fields)
    return run


@pytest.fixture
def fleet() -> None:
    make_run(status="pending")
    make_run(status="pending", provider="claude")
    make_run(status="running", provider="echo", started_at=timezone.now())
    make_run(
        status="completed",
        seconds=0.05,
        cost_usd=Decimal("0.25"),
        metadata={"model": "echo-1"},
        token_usage={"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 2},
    )
    make_run(status="completed", seconds=3)
    make_run(
        status="completed",
        seconds=42,
        cost_usd=Decimal("0.50"),
        metadata={"model": "echo-1"},
        token_usage={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
    )
    make_run(status="failed", seconds=0.3)
    # routed: the label is the provider that ran it, not the one asked for
    make_run(
        status="completed",
        provider="router",
        routed_provider="claude",
        seconds=7,
        metadata={"model": "claude-x"},
        token_usage={"input_tokens": 7, "output_tokens": "n/a"},  # not a number: counts 0
    )
    make_run(status="cancelled")  # cancelled while queued: never started, not in the histogram


def test_metrics_are_prometheus_text_from_the_database(client: Client, fleet):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response.content.decode())

    assert value(found, "asm_runs", status="pending", provider="echo") == 1
    assert value(found, "asm_runs", status="pending", provider="claude") == 1
    assert value(found, "asm_runs", status="running", provider="echo") == 1
    assert value(found, "asm_runs", status="completed", provider="echo") == 3
    assert value(found, "asm_runs", status="completed", provider="claude") == 1
    assert value(found, "asm_runs", status="failed", provider="echo") == 1
    assert value(found, "asm_runs", status="cancelled", provider="echo") == 1
    assert value(found, "asm_runs", status="timeout", provider="echo") == 0  # zeros too
    assert ("asm_runs", frozenset({("status", "pending"), ("provider", "router")})) not in found

    assert value(found, "asm_run_queue_depth") == 2
    assert value(found, "asm_run_queue_oldest_age_seconds") >= 0

    h = {"provider": "echo", "status": "completed"}
    assert value(found, "asm_run_duration_seconds_bucket", le="0.1", **h) == 1
    assert value(found, "asm_run_duration_seconds_bucket", le="5.0", **h) == 2
    assert value(found, "asm_run_duration_seconds_bucket", le="30.0", **h) == 2
    assert value(found, "asm_run_duration_seconds_bucket", le="60.0", **h) == 3
    assert value(found, "asm_run_duration_seconds_bucket", le="+Inf", **h) == 3
    assert value(found, "asm_run_duration_seconds_count", **h) == 3
    assert value(found, "asm_run_duration_seconds_sum", **h) == pytest.approx(45.05, abs=0.01)
    assert value(found, "asm_run_duration_seconds_count", provider="echo", status="failed") == 1
    assert (
        value(found, "asm_run_duration_seconds_count", provider="claude", status="completed") == 1
    )
    assert (
        "asm_run_duration_seconds_count",
        frozenset({("provider", "echo"), ("status", "cancelled")}),
    ) not in found

    cost = "asm_run_cost_usd_total"
    assert value(found, cost, provider="echo", model="echo-1") == pytest.approx(0.75)
    assert value(found, cost, provider="echo", model="") == 0  # runs without a model or cost
    assert value(found, cost, provider="claude", model="claude-x") == 0
    assert value(found, cost, provider="claude", model="") == 0  # the pending one

    tokens = "asm_run_tokens_total"
    echo = {"provider": "echo", "model": "echo-1"}
    assert value(found, tokens, kind="input", **echo) == 15
    assert value(found, tokens, kind="output", **echo) == 5
    assert value(found, tokens, kind="cache_read_input", **echo) == 2
    assert value(found, tokens, kind="cache_creation_input", **echo) == 0
    assert value(found, tokens, kind="total", **echo) == 20  # input + output
    routed = {"provider": "claude", "model": "claude-x"}  # the routed provider and its model
    assert value(found, tokens, kind="input", **routed) == 7
    assert value(found, tokens, kind="output", **routed) == 0
    assert value(found, tokens, kind="total", provider="echo", model="") == 0

    assert value(found, "asm_sessions", status="active") == 9
    assert value(found, "asm_sessions", status="completed") == 0
    # each session: session_created + session_started
    assert value(found, "asm_events_appended_total") == 18
    assert value(found, "asm_metrics_database_up") == 1
    assert value(found, "asm_websocket_connections") >= 0


def test_events_appended_counts_every_append(client: Client):
    session = session_create(agent_id="metrics")
    run, _ = run_create(session_id=session.id, input={"prompt": "hi"})
    event_append_many(
        session_id=session.id,
        events=[NewEvent(type="message_streamed", data={"delta": "x"}, run_id=run.id)] * 5,
    )
    found = samples(client.get("/metrics").content.decode())
    assert value(found, "asm_events_appended_total") == 6


def test_empty_database_still_exposes_every_family(client: Client):
    found = samples(client.get("/metrics").content.decode())
    assert value(found, "asm_run_queue_depth") == 0
    assert value(found, "asm_runs", status="pending", provider="") == 0
    assert value(found, "asm_events_appended_total") == 0


def test_websocket_gauge_is_per_process_and_importable(client: Client):
    before = value(samples(client.get("/metrics").content.decode()), "asm_websocket_connections")
    WS_CONNECTIONS.inc()
    WS_CONNECTIONS.inc()
    try:
        found = samples(client.get("/metrics").content.decode())
        assert value(found, "asm_websocket_connections") == before + 2
    finally:
        WS_CONNECTIONS.dec(2)


def test_metrics_are_open_without_a_token(client: Client, settings):
    settings.ASM_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


def test_metrics_token_is_required_when_set(client: Client, settings):
    settings.ASM_METRICS_TOKEN = "s3cret-token"
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert b"asm_runs" not in missing.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-token").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200
    assert b"asm_runs" in ok.content
    # the probes stay open: orchestrators call them without credentials
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_openmetrics_when_the_scraper_asks_for_it(client: Client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
