"""OpenTelemetry spans of executed runs (`runs.telemetry`, docs/telemetry.md).

Spans are collected with the SDK's `InMemorySpanExporter` on a TracerProvider this module
creates and hands to `runs.telemetry.tracer_provider_use` (the global provider can be set
only once per process, so no test sets it). No mocks: the real `RunExecutor`,
`InMemorySessionStore`, `RouterProvider` and `LocalHealthStore`; providers are the fakes of
`tests/fakes/`. The OTLP configuration test exports to a local HTTP server that records
what it is sent (the real exporter; no network beyond loopback).
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from asm_core.errors import AsmError
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import RunRecord, SessionRecord
from runs import telemetry
from runs.executor import ExecutorConfig, RunExecutor
from runs.health import LocalHealthStore
from runs.providers.base import CancelToken, Emit, RunContext
from runs.providers.registry import ProviderRegistry
from runs.providers.router import RouterProvider
from tests.fakes.routing_providers import RouteFake
from tests.fakes.scripted_provider import FakeProvider, ok

OWNER = "w1"
FAST = ExecutorConfig(
    lease_ms=15_000, flush_interval_s=0.02, tick_s=0.01, cancel_grace_s=2.0, db_cancel_check_s=0.05
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.tracer_provider_use(provider)
    try:
        yield exporter
    finally:
        telemetry.tracer_provider_use(None)
        provider.shutdown()


def tool_script(context: RunContext, emit: Emit, token: CancelToken) -> Any:
    """Streams a little, calls one tool, reports usage, answers."""
    for chunk in ("let ", "me ", "look"):
        emit("message_streamed", {"delta": chunk, "content": chunk})
    emit("tool_call_started", {"tool_call_id": "call-1", "tool_name": "Read", "tool_input": {}})
    emit(
        "tool_call_completed",
        {"tool_call_id": "call-1", "tool_name": "Read", "tool_output": "the file"},
    )
    emit("message_received", {"content": "done", "role": "assistant"})
    emit("token_usage_updated", {"input_tokens": 12, "output_tokens": 5})
    return ok(output={"content": "done"}, token_usage={}, model="beta-model")


def execute(registry: ProviderRegistry, provider: str, **options: Any) -> RunRecord:
    store = InMemorySessionStore()
    session = store.session_save(SessionRecord(agent_id="telemetry"))
    store.run_save(
        RunRecord(session_id=session.id, provider=provider, input={"prompt": "hi"}, options=options)
    )
    run = store.run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
    assert run is not None
    finished = RunExecutor(store, registry, owner=OWNER, config=FAST).execute(run, claimed=True)
    assert finished is not None
    return finished


def by_name(found: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in found if s.name == name), key=lambda s: s.start_time or 0)


def test_routed_run_with_failover_and_a_tool_call_makes_one_span_tree(spans):
    alpha = RouteFake("alpha", fail="provider_unavailable", fail_after_chunks=1)  # retryable
    beta = FakeProvider(tool_script, name="beta")
    registry = ProviderRegistry([alpha, beta])
    registry.register(RouterProvider(registry, LocalHealthStore()))

    run = execute(registry, "router", routing={"prefer": ["alpha", "beta"], "max_attempts": 2})
    assert run.status == "completed"

    found = spans.get_finished_spans()
    assert sorted(s.name for s in found) == [
        "asm.provider.attempt",
        "asm.provider.attempt",
        "asm.run",
        "asm.tool_call",
    ]
    (root,) = by_name(found, "asm.run")
    first, second = by_name(found, "asm.provider.attempt")
    (tool,) = by_name(found, "asm.tool_call")

    # one trace; the run is the root; both attempts under it; the tool under the 2nd attempt
    assert root.parent is None
    assert {s.context.trace_id for s in found} == {root.context.trace_id}
    assert first.parent.span_id == root.context.span_id
    assert second.parent.span_id == root.context.span_id
    assert tool.parent.span_id == second.context.span_id

    assert root.attributes["asm.run_id"] == str(run.id)
    assert root.attributes["asm.session_id"] == str(run.session_id)
    assert root.attributes["asm.provider"] == "router"
    assert root.attributes["asm.routed_provider"] == "beta"
    assert root.attributes["asm.model"] == "beta-model"
    assert root.attributes["asm.run.status"] == "completed"
    assert root.attributes["asm.tokens.input"] == 12
    assert root.attributes["asm.tokens.output"] == 5
    assert root.attributes["asm.routing.candidates"] == ("alpha", "beta")
    assert root.status.status_code != StatusCode.ERROR
    (failover,) = [e for e in root.events if e.name == "asm.routing.failover"]
    assert failover.attributes["asm.failover_from"] == "alpha"
    assert failover.attributes["asm.failover_to"] == "beta"
    assert failover.attributes["asm.failover_reason"] == "provider_unavailable"

    assert first.attributes["asm.provider"] == "alpha"
    assert first.attributes["asm.attempt"] == 1
    assert first.attributes["asm.outcome"] == "failed"
    assert first.attributes["asm.error_code"] == "provider_unavailable"
    assert first.attributes["asm.chunks"] == 1
    assert first.status.status_code == StatusCode.ERROR

    assert second.attributes["asm.provider"] == "beta"
    assert second.attributes["asm.attempt"] == 2
    assert second.attributes["asm.failover_from"] == "alpha"
    assert second.attributes["asm.outcome"] == "completed"
    assert second.attributes["asm.chunks"] == 3  # counted, not one span or event each
    assert [e.name for e in second.events] == ["message_received", "token_usage_updated"]
    usage = second.events[1].attributes
    assert (usage["input_tokens"], usage["output_tokens"]) == (12, 5)
    assert second.status.status_code != StatusCode.ERROR

    assert tool.attributes["asm.tool_call_id"] == "call-1"
    assert tool.attributes["asm.tool_name"] == "Read"
    assert tool.attributes["asm.outcome"] == "completed"
    # every child lies within its parent
    assert root.start_time <= first.start_time <= first.end_time <= second.start_time
    assert second.start_time <= tool.start_time <= tool.end_time <= second.end_time
    assert second.end_time <= root.end_time


def test_plain_provider_run_has_one_attempt_and_failed_tool_calls_are_errors(spans):
    def script(context: RunContext, emit: Emit, token: CancelToken) -> Any:
        emit("tool_call_started", {"tool_call_id": "t1", "tool_name": "Bash", "tool_input": {}})
        emit("tool_call_failed", {"tool_call_id": "t1", "tool_name": "Bash", "error": "boom"})
        raise AsmError("provider_error", "the model gave up")

    run = execute(ProviderRegistry([FakeProvider(script, name="solo")]), "solo")
    assert run.status == "failed"

    found = spans.get_finished_spans()
    (root,) = by_name(found, "asm.run")
    (attempt,) = by_name(found, "asm.provider.attempt")
    (tool,) = by_name(found, "asm.tool_call")
    assert attempt.parent.span_id == root.context.span_id
    assert tool.parent.span_id == attempt.context.span_id
    assert attempt.attributes["asm.provider"] == "solo"
    assert attempt.attributes["asm.attempt"] == 1
    assert attempt.attributes["asm.outcome"] == "failed"
    assert attempt.attributes["asm.error_code"] == "provider_error"
    assert tool.attributes["asm.outcome"] == "failed"
    assert tool.status.status_code == StatusCode.ERROR
    assert root.attributes["asm.run.status"] == "failed"
    assert root.attributes["asm.error_code"] == "provider_error"
    assert root.status.status_code == StatusCode.ERROR


def test_without_a_recording_provider_runs_trace_nothing():
    # No provider set here and the global one is the API's proxy: nothing records.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    store = InMemorySessionStore()
    session = store.session_save(SessionRecord(agent_id="telemetry"))
    record = RunRecord(session_id=session.id, provider="x", input={"prompt": "hi"})
    assert telemetry.run_trace_start(record, "x") is telemetry.NO_TRACE
    seen: list[RunContext] = []

    def script(context: RunContext, emit: Emit, token: CancelToken) -> Any:
        seen.append(context)
        return ok()

    run = execute(ProviderRegistry([FakeProvider(script, name="quiet")]), "quiet")
    assert run.status == "completed"
    assert seen[0].trace is telemetry.NO_TRACE


def test_no_endpoint_configures_nothing():
    assert telemetry.telemetry_configure(endpoint="", traces_endpoint="") is None


def test_an_endpoint_without_the_sdk_fails_naming_the_extra(monkeypatch):
    # The package missing, as Python sees it: its module cannot be imported.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(telemetry.TelemetryNotInstalledError, match=r"asm\[otel\]"):
        telemetry.telemetry_configure(endpoint="http://127.0.0.1:4318", install=False)


class _Collector(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.posts.append((self.path, self.headers.get("Content-Type", ""), length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def test_an_endpoint_exports_spans_over_otlp_http():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.posts = []
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        provider = telemetry.telemetry_configure(
            endpoint=endpoint, service_name="asm-test", install=False
        )
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "asm-test"
        provider.get_tracer("test").start_span("probe").end()
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert [(path, ctype) for path, ctype, _ in _Collector.posts] == [
        ("/v1/traces", "application/x-protobuf")
    ]
    assert _Collector.posts[0][2] > 0


@pytest.mark.django_db
def test_submit_and_the_drain_are_traced_and_the_run_span_is_under_the_drain(spans):
    from runs.scheduling import session_drain
    from runs.services import run_submit
    from sessions.services import session_create

    session = session_create(agent_id="telemetry")
    run = run_submit(session_id=session.id, input="hi").run
    session_drain(session_id=session.id, worker_id="w-1")

    found = spans.get_finished_spans()
    (submit,) = by_name(found, "asm.run.submit")
    assert submit.attributes["asm.session_id"] == str(session.id)
    assert submit.attributes["asm.run_id"] == str(run.id)
    assert submit.attributes["asm.run.created"] is True

    (drain,) = by_name(found, "asm.session.drain")
    assert drain.attributes["asm.worker"] == "w-1"
    assert drain.attributes["asm.drain.locked"] is True
    (claim,) = by_name(found, "asm.run.claim")
    assert claim.parent.span_id == drain.context.span_id
    assert claim.attributes["asm.run_id"] == str(run.id)
    assert claim.attributes["asm.claim.found"] is True
    assert claim.attributes["asm.queue.wait_ms"] >= 0
    (root,) = by_name(found, "asm.run")
    assert root.parent.span_id == drain.context.span_id
    # the run's span links back to the submit that queued it (another trace)
    (link,) = root.links
    assert (link.context.trace_id, link.context.span_id) == (
        submit.context.trace_id,
        submit.context.span_id,
    )
    assert run.metadata["trace"]["traceparent"].startswith("00-")
    assert root.attributes["asm.run.status"] == "completed"
    (attempt,) = by_name(found, "asm.provider.attempt")
    assert attempt.parent.span_id == root.context.span_id
    assert attempt.attributes["asm.provider"] == "echo"


def test_refused_submit_marks_its_span_with_the_error_code(spans, db):
    from runs.services import run_submit
    from sessions.services import session_create

    session = session_create(agent_id="telemetry")
    with pytest.raises(AsmError):
        run_submit(session_id=session.id, input="hi", provider="nosuch")
    (submit,) = by_name(spans.get_finished_spans(), "asm.run.submit")
    assert submit.status.status_code == StatusCode.ERROR
    assert submit.attributes["asm.error_code"] == "validation_error"


_STARTUP = """
import django
django.setup()
from opentelemetry import trace
from runs.telemetry import tracer
tracer().start_span("probe").end()
trace.get_tracer_provider().shutdown()  # flushes the batch
print("provider", type(trace.get_tracer_provider()).__module__)
"""


def _django_process(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base["DJANGO_SETTINGS_MODULE"] = "asm_project.settings.test"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_process_with_an_endpoint_set_exports_from_start():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.posts = []
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = _django_process(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "asm-web"}, _STARTUP
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "provider opentelemetry.sdk.trace" in done.stdout
    assert [path for path, _, _ in _Collector.posts] == ["/v1/traces"]


def test_a_process_with_an_endpoint_but_no_sdk_fails_at_start_naming_the_extra():
    hide_sdk = "import sys\nsys.modules['opentelemetry.sdk.trace'] = None\n"
    done = _django_process(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, hide_sdk + _STARTUP
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "asm[otel]" in done.stderr


def test_a_process_without_an_endpoint_traces_nothing():
    code = (
        "import django\ndjango.setup()\n"
        "from opentelemetry import trace\nfrom runs.telemetry import tracer\n"
        "span = tracer().start_span('probe')\n"
        "print(type(trace.get_tracer_provider()).__name__, span.is_recording())\n"
    )
    done = _django_process({}, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ProxyTracerProvider", "False"]
