"""OpenTelemetry spans of the run lifecycle (docs/telemetry.md), through the API only.

Span tree of one executed run (its ``asm.run`` span links to the ``asm.run.submit`` span
that queued it, through the run's ``metadata.trace``)::

    asm.run                       (the executor; child of the worker's asm.session.drain)
      asm.provider.attempt  x n   (one per provider attempt: the router opens one per member
        asm.tool_call       x m    it tries, the executor the single one of a plain provider)

Invariants:
- Only ``opentelemetry-api`` is imported here. Without a configured SDK (no
  ``OTEL_EXPORTER_OTLP_ENDPOINT``) spans do not record: ``run_trace_start`` then returns the
  shared ``NO_TRACE``, whose methods return at once, and the executor does not wrap the
  provider's ``emit`` at all, so an untraced run pays one non-recording span start.
- Plain Python (no Django): the executor and the router (a provider adapter) use it.
- Parents are always passed explicitly (``trace.set_span_in_context``), never taken from a
  thread's current context: the provider (and the router's attempts, and the tool calls
  seen through ``emit``) run on the provider thread while the supervisor thread owns the
  run span.
- No span work per streamed chunk: ``message_streamed`` only counts (``asm.chunks`` on the
  attempt). Every other adapter event is one span event on its attempt; tool calls are
  spans keyed by ``tool_call_id``, from ``tool_call_started`` to ``tool_call_completed`` /
  ``tool_call_failed``, parented to the attempt that made them.
- ``RunTrace.finish`` (supervisor thread) ends the run span with the run's final record and
  ends whatever the provider left open (an abandoned provider's attempt and tool calls end
  with outcome ``abandoned``); anything the provider thread reports afterwards is ignored.
  One lock guards the attempt and tool-call state (only ever taken while recording).
- The tracer provider is the global one unless ``tracer_provider_use`` set another (tests
  collect spans with an in-memory exporter that way; ``trace.set_tracer_provider`` only
  works once per process). ``telemetry_configure`` installs the OTLP exporter at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from asm_core.errors import AsmError
from asm_core.event_types import EventType

if TYPE_CHECKING:
    from asm_core.records import RunRecord

logger = logging.getLogger(__name__)

__all__ = [
    "INSTRUMENTATION_NAME",
    "NO_TRACE",
    "RunTrace",
    "TelemetryNotInstalledError",
    "run_trace_start",
    "span_error",
    "span_scope",
    "span_traceparent",
    "telemetry_configure",
    "tracer",
    "tracer_provider_use",
    "tracing_enabled",
]

INSTRUMENTATION_NAME = "asm"
_PROPAGATOR = TraceContextTextMapPropagator()

_STREAMED = EventType.MESSAGE_STREAMED.value
_TOOL_STARTED = EventType.TOOL_CALL_STARTED.value
_TOOL_ENDED = {
    EventType.TOOL_CALL_COMPLETED.value: "completed",
    EventType.TOOL_CALL_FAILED.value: "failed",
}
_EVENT_TEXT_KEYS = frozenset({"tool_name", "tool_call_id", "error_code"})
#: Run statuses whose span gets an error status (cancelled is a normal end).
_ERROR_STATUSES = frozenset({"failed", "timeout"})

# --------------------------------------------------------------------------- the tracer
_provider: TracerProvider | None = None
_cached: tuple[TracerProvider | None, Tracer] | None = None


def tracer_provider_use(provider: TracerProvider | None) -> None:
    """Use ``provider`` for asm's spans instead of the global one (None: the global again)."""
    global _provider, _cached
    _provider, _cached = provider, None


def tracing_enabled() -> bool:
    """False when nothing can record asm's spans: no provider set here and the global one
    is still the API's proxy (no SDK installed). The fast path of every span helper."""
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def tracer() -> Tracer:
    """asm's tracer: from the provider set by ``tracer_provider_use``, else the global one
    (a proxy until an SDK provider is installed, so caching it is safe)."""
    global _cached
    cached = _cached
    if cached is not None and cached[0] is _provider:
        return cached[1]
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    found = provider.get_tracer(INSTRUMENTATION_NAME)
    _cached = (_provider, found)
    return found


@contextmanager
def span_scope(name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """A span current for the block (submit, drain, claim); an ``AsmError`` escaping it
    marks it with its code, any other exception as ``internal_error`` (codes only: no
    message text, which is not redacted)."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    with tracer().start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except AsmError as exc:
            span_error(span, exc.code)
            raise
        except Exception as exc:
            span_error(span, "internal_error", type(exc).__name__)
            raise


def span_traceparent(span: Span) -> dict[str, str]:
    """``{"traceparent": ...}`` (W3C trace context) naming ``span``; {} when it does not
    record. Stored on a submitted run (``metadata.trace``) so its ``asm.run`` span, in
    another process later, links back to the submit."""
    if not span.is_recording():
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _submit_link(metadata: Mapping[str, Any]) -> list[Link]:
    """A link to the submit span recorded in a run's ``metadata.trace`` (none if absent)."""
    carrier = metadata.get("trace")
    if not isinstance(carrier, Mapping) or not isinstance(carrier.get("traceparent"), str):
        return []
    context = trace.get_current_span(_PROPAGATOR.extract(dict(carrier))).get_span_context()
    return [Link(context, {"asm.link": "submit"})] if context.is_valid else []


def span_error(span: Span, code: str, message: str = "") -> None:
    """Mark ``span`` failed with an asm error code (``asm.error_code`` + error status)."""
    span.set_attribute("asm.error_code", code)
    span.set_status(Status(StatusCode.ERROR, f"{code}: {message}" if message else code))


# --------------------------------------------------------------------------- configuration
_installed: Any = None


class TelemetryNotInstalledError(RuntimeError):
    """An OTLP endpoint is configured but the OpenTelemetry SDK is not installed."""


def telemetry_configure(
    *,
    endpoint: str = "",
    traces_endpoint: str = "",
    service_name: str = "asm",
    install: bool = True,
) -> Any:
    """Export spans over OTLP/HTTP when an endpoint is given; return the SDK TracerProvider
    (None, and nothing changes, when neither endpoint is set: tracing stays a no-op).

    ``traces_endpoint`` (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is used as is;
    ``endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``) gets ``/v1/traces`` appended, as the
    OpenTelemetry specification says. Spans go through a ``BatchSpanProcessor`` (a
    background thread; the SDK restarts it in forked children and flushes at exit). The
    exporter reads the other standard variables (``OTEL_EXPORTER_OTLP_HEADERS``, timeouts,
    ...) itself. ``install``: make it the global provider (once per process).
    Raises ``TelemetryNotInstalledError`` when an endpoint is set but the SDK is missing.
    """
    if not (endpoint or traces_endpoint):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TelemetryNotInstalledError(
            "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, but "
            "the OpenTelemetry SDK and OTLP exporter are not installed: install the `otel` "
            f"extra (pip install 'asm[otel]'), or unset the endpoint. ({exc})"
        ) from exc
    url = traces_endpoint or endpoint.rstrip("/") + "/v1/traces"
    provider = SdkTracerProvider(resource=Resource.create({SERVICE_NAME: service_name or "asm"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    if install:
        global _installed
        if _installed is not None:  # one per process (set_tracer_provider works once)
            provider.shutdown()
            return _installed
        trace.set_tracer_provider(provider)
        _installed = provider
    logger.info("telemetry: exporting spans to %s as service %s", url, service_name)
    return provider


# --------------------------------------------------------------------------- run traces
def _event_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a span event keeps of an adapter event: its numbers (spec 14.2 `adapter.*`
    measurements), the tool's name and call id, and an error code."""
    return {
        key: value
        for key, value in data.items()
        if (isinstance(value, int | float) and not isinstance(value, bool))
        or (key in _EVENT_TEXT_KEYS and isinstance(value, str))
    }


class _Attempt:
    __slots__ = ("chunks", "events", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.chunks = 0
        self.events = 0


class RunTrace:
    """The spans of one executed run (module docstring). ``NO_TRACE`` is the idle one."""

    recording = True

    def __init__(self, tracer_: Tracer, span: Span) -> None:
        self._tracer = tracer_
        self._span = span
        self._context = trace.set_span_in_context(span)
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None
        self._tools: dict[str, Span] = {}
        self._done = False

    # -- routing (the router, on the provider thread) ----------------------------------
    def annotate(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes on the run span (the router's decision: strategy, candidates)."""
        with self._lock:
            if not self._done:
                self._span.set_attributes(dict(attributes))

    def run_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        """A span event on the run span (e.g. ``asm.routing.failover``)."""
        with self._lock:
            if not self._done:
                self._span.add_event(name, dict(attributes))

    # -- attempts (the executor or the router, on the provider thread) -----------------
    def attempt_start(self, provider: str, index: int, **attributes: Any) -> None:
        """Open the ``asm.provider.attempt`` span (child of the run span); adapter events
        seen from now on belong to it. An attempt still open is ended first."""
        with self._lock:
            if self._done:
                return
            self._end_attempt("superseded", None)
            span = self._tracer.start_span(
                "asm.provider.attempt",
                context=self._context,
                attributes={"asm.provider": provider, "asm.attempt": index, **attributes},
            )
            self._attempt = _Attempt(span)

    def attempt_end(self, outcome: str, error_code: str | None = None) -> None:
        """End the current attempt: ``outcome`` is completed, failed or cancelled; a failed
        one has its error code (only the code: an adapter's message is not redacted)."""
        with self._lock:
            self._end_attempt(outcome, error_code)

    def _end_attempt(self, outcome: str, error_code: str | None) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        for tool_id in list(self._tools):  # tool calls the attempt left open
            self._end_tool(tool_id, "abandoned" if outcome != "completed" else "unfinished")
        span = attempt.span
        span.set_attributes(
            {"asm.outcome": outcome, "asm.chunks": attempt.chunks, "asm.events": attempt.events}
        )
        if error_code:
            span_error(span, error_code)
        span.end()

    # -- adapter events (the provider thread, through emit) ----------------------------
    def observe(self, type_: str, data: Mapping[str, Any]) -> None:
        """An adapter event: a chunk is counted, a tool call opens or ends its span, any
        other event is a span event on the current attempt."""
        with self._lock:
            if self._done:
                return
            attempt = self._attempt
            if type_ == _STREAMED:
                if attempt is not None:
                    attempt.chunks += 1
                return
            parent = attempt.span if attempt is not None else self._span
            if attempt is not None:
                attempt.events += 1
            tool_id = data.get("tool_call_id")
            if type_ == _TOOL_STARTED and isinstance(tool_id, str) and tool_id not in self._tools:
                attributes: dict[str, Any] = {"asm.tool_call_id": tool_id}
                if isinstance(data.get("tool_name"), str):
                    attributes["asm.tool_name"] = data["tool_name"]
                self._tools[tool_id] = self._tracer.start_span(
                    "asm.tool_call",
                    context=trace.set_span_in_context(parent),
                    attributes=attributes,
                )
                return
            if type_ in _TOOL_ENDED and isinstance(tool_id, str) and tool_id in self._tools:
                self._end_tool(tool_id, _TOOL_ENDED[type_])
                return
            parent.add_event(type_, _event_attributes(data))

    def _end_tool(self, tool_id: str, outcome: str) -> None:
        span = self._tools.pop(tool_id)
        span.set_attribute("asm.outcome", outcome)
        if outcome != "completed":  # no tool input, output or error text: they may hold secrets
            span_error(span, "tool_call_" + outcome)
        span.end()

    # -- the end (the supervisor thread) -----------------------------------------------
    def finish(self, run: RunRecord | None) -> None:
        """End the run span from the run's final record (None: the attempt was fenced off,
        another owner decides the run's end)."""
        with self._lock:
            if self._done:
                return
            self._end_attempt("abandoned", None)
            self._done = True
        span = self._span
        if run is None:
            span.set_attribute("asm.run.fenced", True)
            span.end()
            return
        attributes: dict[str, Any] = {"asm.run.status": run.status}
        routing = run.metadata.get("routing") if isinstance(run.metadata, Mapping) else None
        if isinstance(routing, Mapping) and isinstance(routing.get("routed_provider"), str):
            attributes["asm.routed_provider"] = routing["routed_provider"]
        model = run.metadata.get("model") if isinstance(run.metadata, Mapping) else None
        if isinstance(model, str):
            attributes["asm.model"] = model
        for key, value in (run.token_usage or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"asm.tokens.{key.removesuffix('_tokens')}"] = value
        if run.cost_usd is not None:
            attributes["asm.cost_usd"] = float(run.cost_usd)
        span.set_attributes(attributes)
        if run.status in _ERROR_STATUSES:
            error = run.error or {}
            span_error(span, str(error.get("code") or run.status), str(error.get("message") or ""))
        span.end()

    def fail(self, exc: BaseException) -> None:
        """End the run span for an exception that escaped the executor."""
        with self._lock:
            if self._done:
                return
            self._end_attempt("abandoned", None)
            self._done = True
        self._span.record_exception(exc)
        span_error(self._span, "internal_error", f"{type(exc).__name__}: {exc}")
        self._span.end()


class _NoTrace(RunTrace):
    """The trace of a run nobody records: every method returns at once."""

    recording = False

    def __init__(self) -> None:
        pass

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        return None

    def run_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        return None

    def attempt_start(self, provider: str, index: int, **attributes: Any) -> None:
        return None

    def attempt_end(self, outcome: str, error_code: str | None = None) -> None:
        return None

    def observe(self, type_: str, data: Mapping[str, Any]) -> None:
        return None

    def finish(self, run: RunRecord | None) -> None:
        return None

    def fail(self, exc: BaseException) -> None:
        return None


NO_TRACE: RunTrace = _NoTrace()


def run_trace_start(run: RunRecord, provider: str) -> RunTrace:
    """Open the ``asm.run`` span of ``run`` (child of the calling thread's current span,
    e.g. the worker's drain); ``NO_TRACE`` when nothing records it."""
    if not tracing_enabled():
        return NO_TRACE
    span = tracer().start_span(
        "asm.run",
        attributes={
            "asm.session_id": str(run.session_id),
            "asm.run_id": str(run.id),
            "asm.provider": provider,
            "asm.run.attempt": run.attempt,
        },
        links=_submit_link(run.metadata or {}),
    )
    if not span.is_recording():
        return NO_TRACE
    return RunTrace(tracer(), span)
