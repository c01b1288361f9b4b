"""/readyz and /metrics against the real PostgreSQL and Redis of the integration tier."""

from __future__ import annotations

import socket
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from runs.models import Run
from runs.services import run_create
from sessions.services import session_activate, session_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_readyz_reports_postgres_redis_and_the_redis_broker_ready(client: Client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["database"]["vendor"] == "postgresql"
    assert checks["redis"]["status"] == "ok"
    assert "skipped" not in checks["redis"]
    assert checks["broker"] == {
        "status": "ok",
        "transport": "redis",
        "latency_ms": checks["broker"]["latency_ms"],
    }


def test_readyz_is_503_when_redis_is_unreachable(client: Client, settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "fail"
    assert checks["broker"]["status"] == "fail"


def test_metrics_aggregate_on_postgres(client: Client):
    session = session_create(agent_id="ops")
    session_activate(session_id=session.id)
    run_create(session_id=session.id, input={"prompt": "hi"}, provider="echo")
    done, _ = run_create(session_id=session.id, input={"prompt": "bye"}, provider="echo")
    now = timezone.now()
    Run.objects.filter(id=done.id).update(
        status="completed",
        started_at=now - timedelta(seconds=2),
        ended_at=now,
        cost_usd=Decimal("0.125"),
        metadata={"model": "echo-1"},
        token_usage={"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": "odd"},
    )
    text = client.get("/metrics").content.decode()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("asm_runs", (("provider", "echo"), ("status", "pending")))] == 1
    assert found[("asm_run_queue_depth", ())] == 1
    assert found[("asm_events_appended_total", ())] == 2
    assert found[("asm_metrics_database_up", ())] == 1
    labels = (("provider", "echo"), ("status", "completed"))
    assert found[("asm_run_duration_seconds_bucket", (("le", "1.0"), *labels))] == 0
    assert found[("asm_run_duration_seconds_bucket", (("le", "2.5"), *labels))] == 1
    assert found[("asm_run_duration_seconds_sum", labels)] == pytest.approx(2.0)
    echo = (("model", "echo-1"), ("provider", "echo"))
    assert found[("asm_run_cost_usd_total", echo)] == pytest.approx(0.125)
    assert found[("asm_run_cost_usd_total", (("model", ""), ("provider", "echo")))] == 0
    assert found[("asm_run_tokens_total", (("kind", "input"), *echo))] == 3
    assert found[("asm_run_tokens_total", (("kind", "total"), *echo))] == 5
    assert found[("asm_run_tokens_total", (("kind", "cache_read_input"), *echo))] == 0
