"""/healthz and /readyz in embedded mode (SQLite, no Redis), and how a failed check reads."""

from __future__ import annotations

import socket

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_is_liveness_only(client: Client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_embedded_mode_reports_each_dependency(client: Client, settings):
    assert not settings.REDIS_URL  # the unit tier is embedded mode
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    database = body["checks"]["database"]
    assert database["status"] == "ok"
    assert database["vendor"] == "sqlite"
    assert isinstance(database["latency_ms"], float)
    assert body["checks"]["redis"] == {
        "status": "skipped",
        "skipped": "embedded mode",
        "latency_ms": 0.0,
    }
    broker = body["checks"]["broker"]
    assert broker["status"] == "ok"
    assert broker["transport"] == "memory"
    assert broker["mode"] == "embedded mode"


def test_readyz_fails_with_503_naming_the_unreachable_dependency(client: Client, settings):
    port = _dead_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    settings.ASM_READYZ_TIMEOUT_S = 1.0
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["status"] == "ok"
    for name in ("redis", "broker"):
        check = body["checks"][name]
        assert check["status"] == "fail", check
        assert check["error"]
    assert body["checks"]["broker"]["status"] == "fail"


def test_probes_take_get_and_head_only(client: Client):
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405
    assert client.post("/metrics").status_code == 405
