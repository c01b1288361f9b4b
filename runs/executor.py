"""The run executor: one claimed run, start to finish (spec 5.5, with asm's fixes).

Invariants:
- It works on the `SessionStore` port and plain records only (never the ORM), so the same
  executor runs in the service (Django store) and as a plain library (in-memory store).
- Order in the log: `message_sent` per input message, `run_started`, the provider's events
  in emission order, then exactly ONE terminal event (`run_completed`, `run_failed`,
  `run_cancelled` or `run_timeout`) written together with the terminal status by the
  fenced `run_finish`. Providers never write terminal events; any they emit are dropped.
- A cancelled run ends `cancelled` (never overwritten to `failed`); a run past its
  deadline ends `timeout`; both stop the provider (token + `provider.cancel`).
- Required capabilities are checked before the provider is called.
- The provider runs on its own thread and never touches the store; this (supervisor)
  thread does every store write: it batches `message_streamed` chunks (flushed at least
  every `flush_interval_s`) and writes everything queued at once, in emission order, as
  soon as a non-chunk event arrives (one transaction for what arrived together); what is
  still buffered when the provider returns is written with the terminal event, in the
  fenced `run_finish` transaction. It renews the run's lease and watches for cancel and
  the deadline. A lost lease (the reaper took the run back) stops
  the provider and writes nothing more.
- Token usage accumulates on the run from `token_usage_updated` events (numbers add);
  when a provider reports none, its result's usage is used.
- Provider metadata (provider_session_id, model) is merged into the session's metadata
  with an atomic merge inside the fenced `run_finish` (never by saving a stale copy of the
  session, and never by an attempt that was fenced off).
- `execute` first confirms (by renewing the lease) that the run is still this owner's
  attempt; a stale record writes nothing. A caller that has just claimed the run
  (`claimed=True`: the claim set this owner's lease a moment ago) skips that round trip.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asm_core.errors import AsmError
from asm_core.event_types import TERMINAL_RUN_EVENT_TYPES, EventType
from asm_core.records import NewEvent, RunRecord
from asm_core.store import SessionStore
from asm_core.usage import merge_token_usage
from runs.providers.base import (
    CancelToken,
    Provider,
    ProviderResult,
    RunContext,
    input_messages,
    negotiate,
)
from runs.providers.registry import ProviderRegistry

logger = logging.getLogger(__name__)

_STREAMED = EventType.MESSAGE_STREAMED.value
_DROPPED = {t.value for t in TERMINAL_RUN_EVENT_TYPES} | {EventType.RUN_STARTED.value}


@dataclass(frozen=True)
class ExecutorConfig:
    default_provider: str = "echo"
    default_timeout_ms: int = 600_000
    lease_ms: int = 15_000
    flush_interval_s: float = 0.05
    max_batch: int = 200
    tick_s: float = 0.05
    cancel_grace_s: float = 5.0
    db_cancel_check_s: float = 0.5


CancelCheck = Callable[[uuid.UUID], bool]


@dataclass
class _Outcome:
    status: str
    event_type: EventType
    event_data: dict[str, Any]
    output: Any = None
    error: dict[str, Any] | None = None


class RunExecutor:
    def __init__(
        self,
        store: SessionStore,
        registry: ProviderRegistry,
        *,
        owner: str,
        config: ExecutorConfig | None = None,
        cancel_requested: CancelCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.registry, self.owner = store, registry, owner
        self.config = config or ExecutorConfig()
        self.cancel_requested = cancel_requested or (lambda _run_id: False)
        self.clock = clock

    # ------------------------------------------------------------------ entry point
    def execute(self, run: RunRecord, *, claimed: bool = False) -> RunRecord | None:
        """Execute a run this owner has claimed; return its final record (None if fenced).

        ``claimed``: the record comes straight from this owner's ``run_claim_next``.
        """
        started = self.clock()
        if not claimed and not self.store.run_renew_lease(
            run.id, attempt=run.attempt, owner=self.owner, lease_ms=self.config.lease_ms
        ):
            logger.warning("run %s attempt %s is not ours to execute", run.id, run.attempt)
            return None  # stale or finished record: write nothing
        try:
            provider, context = self._prepare(run)
        except AsmError as exc:
            return self._finish(run, self._failed(run, exc), {}, {})
        return self._supervise(run, provider, context, started)

    # ------------------------------------------------------------------ steps
    def _prepare(self, run: RunRecord) -> tuple[Provider, RunContext]:
        session = self.store.session_get(run.session_id)
        name = run.provider or self.config.default_provider
        provider = self.registry.get(name)
        options = dict(run.options or {})
        negotiation = negotiate(
            provider.capabilities(),
            required=options.get("required_capabilities") or (),
            optional=options.get("optional_capabilities") or (),
        )
        messages = input_messages(run.input or {})
        timeout_ms = options.get("timeout_ms") or self.config.default_timeout_ms
        context = RunContext(
            run_id=run.id,
            session_id=run.session_id,
            attempt=run.attempt,
            input=dict(run.input or {}),
            messages=tuple(messages),
            options=options,
            adapter_opts=dict(options.get("adapter_opts") or {}),
            session_context=dict(session.context),
            session_metadata=dict(session.metadata),
            timeout_ms=int(timeout_ms),
            provider_session_id=_provider_session_id(session.metadata, name),
        )
        started_data: dict[str, Any] = {"provider": name, "attempt": run.attempt}
        if negotiation.status == "degraded":
            started_data["capabilities"] = {
                "status": negotiation.status,
                "warnings": list(negotiation.warnings),
            }
        self.store.event_append_many(
            run.session_id,
            [
                *(
                    NewEvent(type=EventType.MESSAGE_SENT, data=m, run_id=run.id, provider=name)
                    for m in messages
                ),
                NewEvent(
                    type=EventType.RUN_STARTED, data=started_data, run_id=run.id, provider=name
                ),
            ],
        )
        return provider, context

    def _supervise(
        self, run: RunRecord, provider: Provider, context: RunContext, started: float
    ) -> RunRecord | None:
        cfg = self.config
        token = CancelToken()
        inbox: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        closed = threading.Event()
        box: dict[str, Any] = {}

        def emit(type_: str, data: Mapping[str, Any]) -> None:
            if not closed.is_set():
                inbox.put((str(type_), dict(data)))

        def call_provider() -> None:
            try:
                box["result"] = provider.execute(context, emit, token)
            except BaseException as exc:  # reported to the supervisor, never lost
                box["error"] = exc
            finally:
                inbox.put(None)

        worker = threading.Thread(target=call_provider, name=f"provider-{run.id}", daemon=True)
        worker.start()

        name = run.provider or cfg.default_provider
        buffer: list[NewEvent] = []
        buffered_at = 0.0
        usage: dict[str, Any] = {}
        seen_usage = False
        deadline = started + (context.timeout_ms or cfg.default_timeout_ms) / 1000
        next_renew = self.clock() + cfg.lease_ms / 3000
        next_db_check = self.clock() + cfg.db_cancel_check_s
        stop: str | None = None  # "cancelled" | "timeout" | "lost"
        stop_by = 0.0
        provider_done = False

        def flush() -> None:
            nonlocal buffer
            if buffer:
                self.store.event_append_many(run.session_id, buffer)
                buffer = []

        def stop_provider(reason: str) -> None:
            nonlocal stop, stop_by
            stop, stop_by = reason, self.clock() + cfg.cancel_grace_s
            token.cancel()
            try:
                provider.cancel(run.id)
            except Exception:
                logger.exception("provider %s failed to cancel run %s", name, run.id)

        while True:
            now = self.clock()
            wait = cfg.tick_s
            if buffer:
                wait = min(wait, max(0.0, buffered_at + cfg.flush_interval_s - now))
            try:
                item = inbox.get(timeout=wait)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if self.clock() >= next_renew:
                next_renew = self.clock() + cfg.lease_ms / 3000
                if not self.store.run_renew_lease(
                    run.id, attempt=run.attempt, owner=self.owner, lease_ms=cfg.lease_ms
                ):
                    stop_provider("lost")
                    break
            urgent = False  # a non-chunk event arrived: write the buffer after this round
            for _ in range(cfg.max_batch * 4):  # take what is queued, then do the checks
                if item is None:
                    provider_done = True
                elif item:
                    type_, data = item
                    if type_ in _DROPPED:
                        logger.debug("dropping provider-emitted %s for run %s", type_, run.id)
                    else:
                        if type_ == EventType.TOKEN_USAGE_UPDATED:
                            usage, seen_usage = merge_token_usage(usage, data), True
                        if not buffer:
                            buffered_at = self.clock()
                        buffer.append(NewEvent(type=type_, data=data, run_id=run.id, provider=name))
                        urgent = urgent or type_ != _STREAMED
                        if len(buffer) >= cfg.max_batch:
                            flush()
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
            now = self.clock()
            if provider_done:
                break  # what is still buffered goes with the terminal event (_finish)
            if buffer and (urgent or now - buffered_at >= cfg.flush_interval_s):
                flush()
            if now >= next_renew:
                next_renew = now + cfg.lease_ms / 3000
                if not self.store.run_renew_lease(
                    run.id, attempt=run.attempt, owner=self.owner, lease_ms=cfg.lease_ms
                ):
                    stop_provider("lost")
                    break
            if stop is None:
                if self.cancel_requested(run.id) or (
                    now >= next_db_check and self._cancel_recorded(run.id)
                ):
                    stop_provider("cancelled")
                elif now >= deadline:
                    stop_provider("timeout")
                if now >= next_db_check:
                    next_db_check = now + cfg.db_cancel_check_s
            elif now >= stop_by:
                logger.warning("provider %s ignored cancel of run %s; abandoning it", name, run.id)
                break
        closed.set()
        if stop == "lost":
            # The run is someone else's now: what this attempt still buffered is dropped.
            logger.warning("run %s: lease lost; another owner decides its end", run.id)
            return None
        if not seen_usage and "result" in box:
            usage = dict(box["result"].token_usage or {})
        outcome = self._outcome(run, stop, box, usage)
        metadata: dict[str, Any] = {"provider": name}
        session_metadata: dict[str, Any] = {}
        result: ProviderResult | None = box.get("result")
        if result is not None:
            meta = {
                k: v
                for k, v in (
                    ("provider_session_id", result.provider_session_id),
                    ("model", result.model),
                )
                if v
            }
            metadata.update(meta)
            wanted: dict[str, Any] = {**meta, "provider": name} if meta else {}
            if result.provider_session_id:
                ids = context.session_metadata.get("provider_session_ids")
                ids = dict(ids) if isinstance(ids, Mapping) else {}
                ids[name] = result.provider_session_id
                wanted["provider_session_ids"] = ids
            wanted.update(result.session_metadata or {})
            # Write only what changes (a session's provider ids are usually the same run after
            # run); the merge itself is atomic, so this read can only save a write.
            if any(context.session_metadata.get(k) != v for k, v in wanted.items()):
                session_metadata = wanted
        return self._finish(run, outcome, usage, metadata, session_metadata, last_events=buffer)

    def _cancel_recorded(self, run_id: uuid.UUID) -> bool:
        return self.store.run_get(run_id).cancel_requested_at is not None

    def _outcome(
        self, run: RunRecord, stop: str | None, box: dict[str, Any], usage: Mapping[str, Any]
    ) -> _Outcome:
        if stop == "cancelled":
            return _Outcome(
                status="cancelled",
                error={"code": "cancelled", "message": "Run was cancelled"},
                event_type=EventType.RUN_CANCELLED,
                event_data={},
            )
        if stop == "timeout":
            timeout_ms = run.options.get("timeout_ms") or self.config.default_timeout_ms
            return _Outcome(
                status="timeout",
                error={"code": "timeout", "message": f"Run exceeded {timeout_ms} ms"},
                event_type=EventType.RUN_TIMEOUT,
                event_data={"timeout_ms": timeout_ms},
            )
        error = box.get("error")
        if error is not None:
            if not isinstance(error, AsmError):
                logger.error("provider raised for run %s", run.id, exc_info=error)
                error = AsmError("internal_error", f"{type(error).__name__}: {error}")
            if error.code == "cancelled":
                return _Outcome(
                    status="cancelled",
                    error={"code": "cancelled", "message": error.message},
                    event_type=EventType.RUN_CANCELLED,
                    event_data={},
                )
            return self._failed(run, error)
        result: ProviderResult = box["result"]
        return _Outcome(
            status="completed",
            output=result.output,
            event_type=EventType.RUN_COMPLETED,
            event_data={
                "stop_reason": result.stop_reason,
                "token_usage": dict(usage),
            },
        )

    @staticmethod
    def _failed(run: RunRecord, error: AsmError) -> _Outcome:
        return _Outcome(
            status="failed",
            error={"code": error.code, "message": error.message, "details": error.details},
            event_type=EventType.RUN_FAILED,
            event_data={"error_code": error.code, "error_message": error.message},
        )

    def _finish(
        self,
        run: RunRecord,
        outcome: _Outcome,
        usage: Mapping[str, Any],
        metadata: Mapping[str, Any],
        session_metadata: Mapping[str, Any] | None = None,
        last_events: Sequence[NewEvent] = (),
    ) -> RunRecord | None:
        terminal = NewEvent(
            type=outcome.event_type,
            data=outcome.event_data,
            run_id=run.id,
            provider=run.provider or self.config.default_provider,
        )
        finished = self.store.run_finish(
            run.id,
            attempt=run.attempt,
            status=outcome.status,
            output=outcome.output,
            error=outcome.error,
            token_usage=usage,
            metadata=metadata,
            terminal=terminal,
            session_metadata=session_metadata,
            events=last_events,
        )
        if finished is None:
            logger.warning("run %s attempt %s was fenced off; result dropped", run.id, run.attempt)
        return finished


def _provider_session_id(session_metadata: Mapping[str, Any], provider: str) -> str | None:
    """The provider-side session (thread) id a run of ``provider`` may resume: the one an
    earlier run of the SAME provider left in the session's metadata (``provider_session_ids``
    by provider; the plain ``provider_session_id`` counts only when that provider wrote it)."""
    ids = session_metadata.get("provider_session_ids")
    if isinstance(ids, Mapping) and isinstance(ids.get(provider), str):
        return str(ids[provider])
    if session_metadata.get("provider") == provider:
        value = session_metadata.get("provider_session_id")
        return value if isinstance(value, str) else None
    return None
