"""Operations endpoints: `/healthz` (liveness), `/readyz` (readiness), `/metrics` (Prometheus).

- `/healthz` answers 200 while the process serves HTTP; it touches no dependency, so a
  database outage never gets healthy processes restarted.
- `/readyz` checks each dependency the process needs to take traffic and reports each:
  `{"status": "ok"|"fail", "checks": {"database": {...}, "redis": {...}, "broker": {...}}}`,
  200 when nothing failed, else 503. Every check has `"status": "ok"|"fail"|"skipped"` and
  `latency_ms`; a failure has `error`. In embedded mode (no `REDIS_URL`) Redis is
  `{"status": "skipped", "skipped": "embedded mode"}` and the broker is Celery's in-process
  `memory` transport, which is always `ok`. Network checks time out after
  `ASM_READYZ_TIMEOUT_S` (default 2 s).
- `/metrics` is Prometheus text (`asm_project.metrics`). Open when `ASM_METRICS_TOKEN` is
  unset (serve it on a private network); when set, it needs `Authorization: Bearer <token>`
  (401 otherwise).

All three are plain Django views (no DRF auth, throttling or error envelope) and are never
cached. See docs/operations.md.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder

from asm_project.metrics import scrape_registry

Check = dict[str, Any]
EMBEDDED = "embedded mode"


def _timeout_s() -> float:
    return float(getattr(settings, "ASM_READYZ_TIMEOUT_S", 2.0))


def _timed(probe: Callable[[], Check]) -> Check:
    """Run one probe; an exception is a failure whose message is reported (never raised)."""
    started = time.monotonic()
    try:
        result = {"status": "ok", **probe()}
    except Exception as exc:  # a probe reports every failure; it never raises
        result = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def check_database(alias: str = "default") -> Check:
    def probe() -> Check:
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"vendor": connection.vendor}

    return _timed(probe)


def check_redis() -> Check:
    url = settings.REDIS_URL
    if not url:
        return {"status": "skipped", "skipped": EMBEDDED, "latency_ms": 0.0}

    def probe() -> Check:
        import redis

        timeout = _timeout_s()
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
        )
        try:
            client.ping()
        finally:
            client.close()
        return {}

    return _timed(probe)


def check_broker() -> Check:
    url = str(settings.CELERY_BROKER_URL)

    def probe() -> Check:
        from kombu import Connection

        timeout = _timeout_s()
        with Connection(url, connect_timeout=timeout) as conn:
            transport = conn.transport_cls
            if transport == "memory":
                # The embedded worker consumes this in-process queue; nothing to reach.
                return {"transport": "memory", "mode": EMBEDDED}
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=math.ceil(timeout)
            )
            return {"transport": str(transport)}

    return _timed(probe)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness (database, Redis, broker) is `/readyz`."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database(), "redis": check_redis(), "broker": check_broker()}
    ok = all(check["status"] != "fail" for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
    )


def _metrics_authorized(request: HttpRequest) -> bool:
    token = str(getattr(settings, "ASM_METRICS_TOKEN", "") or "")
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not _metrics_authorized(request):
        response = HttpResponse(
            "metrics need Authorization: Bearer <ASM_METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="asm metrics"'
        return response
    # Prometheus text 0.0.4 by default; OpenMetrics when the scraper's Accept asks for it.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(scrape_registry()), content_type=content_type)
