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
- With `options.continuation`, the session's prior history (`runs.continuation`: from the
  latest compaction; compacted first when over `transcript_max_chars`) is read before the
  run's own events are written and reaches the provider as `session_context["transcript"]`.
- Policies (`runs.policies`, stacked: settings default, agent, session, run) are evaluated
  on every non-chunk provider event as it is taken from the inbox and on every tick (the
  duration timer, so a silent provider is stopped too); each violation is ONE
  `policy_violation` event right after its trigger; a cancel decision stops the provider
  like a cancel and ends the run `failed` (`policy_violation`); the summary goes to the
  run's metadata `policy`. Tool rules reach adapters as `tool_guard` (checked before a tool
  runs) and `options["tool_rules"]` (for CLIs that run their own tools).
- The provider runs on its own thread and never touches the store; this (supervisor)
  thread does every store write: it batches `message_streamed` chunks (flushed at least
  every `flush_interval_s`) and writes everything queued at once, in emission order, as
  soon as a non-chunk event arrives (one transaction for what arrived together); what is
  still buffered when the provider returns is written with the terminal event, in the
  fenced `run_finish` transaction. It renews the run's lease and watches for cancel and
  the deadline. A lost lease (the reaper took the run back) stops
  the provider and writes nothing more.
- Token usage accumulates on the run from `token_usage_updated` events (numbers add);
  when a provider reports none, its result's usage is used. The run's `cost_usd` is that
  usage priced by `runs.costs.run_cost` (`config.cost_rates`) at the finish; unknown rates
  record None and `metadata.cost_supported: false`, never 0. Capability negotiation with
  requirements is recorded in `metadata.capabilities` (degraded: also in `run_started`).
- Provider metadata (provider_session_id, model) is merged into the session's metadata
  with an atomic merge inside the fenced `run_finish` (never by saving a stale copy of the
  session, and never by an attempt that was fenced off).
- Workspace snapshots (``options.workspace``, ``sessions.workspaces.execution``): the
  ``before`` snapshot right after ``run_started``, before the provider is called (a bad
  workspace fails the run with ``validation_error`` and the provider never runs); the
  ``after`` snapshot, diff and (for a run that did not complete, with
  ``rollback_on_failure``) the rollback after the provider returned, their events written
  with the terminal event.
- Spans (`runs.telemetry`): one `asm.run` span per `execute`, ended from the final record
  (fenced: `asm.run.fenced`); the provider's attempt span(s) and tool-call spans are opened
  on the provider thread with explicit parents (the executor opens the one attempt of a
  plain provider; a provider with `traces_attempts` opens its own). When nothing records,
  `emit` is not wrapped and no span work happens per event.
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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from asm_core.errors import AsmError
from asm_core.event_types import TERMINAL_RUN_EVENT_TYPES, EventType
from asm_core.records import NewEvent, RunRecord
from asm_core.store import SessionStore
from asm_core.usage import merge_token_usage
from asm_project.logging import log_context
from runs.continuation import continuation_for_run
from runs.costs import ECHO_COST_RATES, run_cost
from runs.policies import (
    EffectivePolicy,
    PolicyDecision,
    PolicyState,
    policy_error,
    policy_observe,
    policy_sources,
    policy_stack,
    policy_summary,
    policy_tick,
    policy_tool_guard,
    policy_tool_rules,
)
from runs.providers.base import (
    CancelToken,
    Provider,
    ProviderResult,
    RunContext,
    input_messages,
    negotiate,
    provider_session_id_for,
)
from runs.providers.registry import ProviderRegistry
from runs.telemetry import NO_TRACE, RunTrace, run_trace_start
from sessions.workspaces.execution import RunWorkspace, workspace_run_finish, workspace_run_start

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
    #: The settings-wide policy layer (``ASM_DEFAULT_POLICY``), stacked under the agent's,
    #: the session's and the run's (``runs.policies``).
    default_policy: Mapping[str, Any] | None = None
    #: Token rates for ``runs.costs.run_cost`` (``ASM_COST_RATES``; default: echo is free).
    cost_rates: Mapping[str, Any] | None = field(default_factory=lambda: dict(ECHO_COST_RATES))
    #: A continuation transcript larger than this (characters) is compacted first
    #: (``ASM_TRANSCRIPT_MAX_CHARS``; 0: never; ``runs.continuation``).
    transcript_max_chars: int = 100_000


CancelCheck = Callable[[uuid.UUID], bool]
#: The agent manifest's ``default_policy`` for an ``agent_id`` (None: none).
AgentPolicyLookup = Callable[[str], Mapping[str, Any] | None]


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
        agent_policy: AgentPolicyLookup | None = None,
    ) -> None:
        self.store, self.registry, self.owner = store, registry, owner
        self.agent_policy = agent_policy or (lambda _agent_id: None)
        self.config = config or ExecutorConfig()
        self.cancel_requested = cancel_requested or (lambda _run_id: False)
        self.clock = clock

    # ------------------------------------------------------------------ entry point
    def execute(self, run: RunRecord, *, claimed: bool = False) -> RunRecord | None:
        """Execute a run this owner has claimed; return its final record (None if fenced).

        ``claimed``: the record comes straight from this owner's ``run_claim_next``. Log
        records written meanwhile carry the run's ids (`asm_project.logging.log_context`).
        """
        with log_context(session_id=run.session_id, run_id=run.id, provider=run.provider):
            trace = run_trace_start(run, run.provider or self.config.default_provider)
            try:
                finished = self._execute(run, claimed=claimed, trace=trace)
            except BaseException as exc:
                trace.fail(exc)
                raise
            trace.finish(finished)
            return finished

    def _execute(self, run: RunRecord, *, claimed: bool, trace: RunTrace) -> RunRecord | None:
        started = self.clock()
        if not claimed and not self.store.run_renew_lease(
            run.id, attempt=run.attempt, owner=self.owner, lease_ms=self.config.lease_ms
        ):
            logger.warning("run %s attempt %s is not ours to execute", run.id, run.attempt)
            return None  # stale or finished record: write nothing
        try:
            provider, context, policy = self._prepare(run, trace)
            workspace = workspace_run_start(  # options.workspace: the `before` snapshot
                self.store, context, provider=run.provider or self.config.default_provider
            )
        except AsmError as exc:
            return self._finish(run, self._failed(run, exc), {}, {})
        return self._supervise(run, provider, context, started, policy, workspace)

    # ------------------------------------------------------------------ steps
    def _prepare(
        self, run: RunRecord, trace: RunTrace = NO_TRACE
    ) -> tuple[Provider, RunContext, EffectivePolicy | None]:
        session = self.store.session_get(run.session_id)
        name = run.provider or self.config.default_provider
        provider = self.registry.get(name)
        options = dict(run.options or {})
        negotiation = negotiate(
            provider.capabilities(),
            required=options.get("required_capabilities") or (),
            optional=options.get("optional_capabilities") or (),
        )
        policy = self._policy_for(session.agent_id, session.context, options)
        tool_rules = policy_tool_rules(policy)  # for adapters whose CLI runs the tools
        messages = input_messages(run.input or {})
        timeout_ms = options.get("timeout_ms") or self.config.default_timeout_ms
        session_context = _session_context(session.context, run.metadata)
        transcript = continuation_for_run(
            self.store, run, max_chars=self.config.transcript_max_chars
        )  # options.continuation: the prior history, read before this run's events are written
        if transcript is not None:
            session_context["transcript"] = transcript
        context = RunContext(
            run_id=run.id,
            session_id=run.session_id,
            attempt=run.attempt,
            input=dict(run.input or {}),
            messages=tuple(messages),
            options=options if tool_rules is None else {**options, "tool_rules": tool_rules},
            adapter_opts=dict(options.get("adapter_opts") or {}),
            session_context=session_context,
            session_metadata=dict(session.metadata),
            timeout_ms=int(timeout_ms),
            provider_session_id=provider_session_id_for(session.metadata, name),
            tool_guard=policy_tool_guard(policy),  # refuses denied tools before they run
            trace=trace,
        )
        started_data: dict[str, Any] = {"provider": name, "attempt": run.attempt}
        if negotiation.status == "degraded":
            started_data["capabilities"] = {
                "status": negotiation.status,
                "warnings": list(negotiation.warnings),
            }
        if negotiation.supported or negotiation.unsupported:  # recorded on the run (_priced)
            run.metadata = {**run.metadata, "capabilities": negotiation.to_dict()}
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
        return provider, context, policy

    def _policy_for(
        self, agent_id: str, session_context: Mapping[str, Any], options: Mapping[str, Any]
    ) -> EffectivePolicy | None:
        """The run's stacked policy: settings default, agent, session, run (validated)."""
        return policy_stack(
            policy_sources(
                default=self.config.default_policy,
                agent=self.agent_policy(agent_id),
                session_context=session_context,
                options=options,
            )
        )

    def _supervise(
        self,
        run: RunRecord,
        provider: Provider,
        context: RunContext,
        started: float,
        policy: EffectivePolicy | None = None,
        workspace: RunWorkspace | None = None,
    ) -> RunRecord | None:
        cfg = self.config
        token = CancelToken()
        inbox: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        closed = threading.Event()
        box: dict[str, Any] = {}

        name = run.provider or cfg.default_provider
        trace = context.trace
        if trace.recording:  # the adapter events feed the spans (runs.telemetry)
            observe = trace.observe

            def emit(type_: str, data: Mapping[str, Any]) -> None:
                if not closed.is_set():
                    item = (str(type_), dict(data))
                    observe(*item)
                    inbox.put(item)

        else:

            def emit(type_: str, data: Mapping[str, Any]) -> None:
                if not closed.is_set():
                    inbox.put((str(type_), dict(data)))

        # A provider that tries others (the router) opens one attempt span per try itself.
        own_attempt = trace.recording and not getattr(provider, "traces_attempts", False)

        def call_provider() -> None:
            if own_attempt:
                trace.attempt_start(name, 1)
            try:
                box["result"] = provider.execute(context, emit, token)
            except BaseException as exc:  # reported to the supervisor, never lost
                box["error"] = exc
            finally:
                if own_attempt:
                    trace.attempt_end(*_attempt_outcome(box.get("error")))
                inbox.put(None)

        _provider_threads.submit(call_provider)

        buffer: list[NewEvent] = []
        buffered_at = 0.0
        usage: dict[str, Any] = {}
        seen_usage = False
        deadline = started + (context.timeout_ms or cfg.default_timeout_ms) / 1000
        next_renew = self.clock() + cfg.lease_ms / 3000
        next_db_check = self.clock() + cfg.db_cancel_check_s
        stop: str | None = None  # "cancelled" | "timeout" | "lost" | "policy"
        stop_by = 0.0
        provider_done = False
        policy_state = PolicyState()
        # In flight the model is known only from the options or the adapter's configuration.
        model_hint = context.adapter_opts.get("model") or getattr(provider, "model", None)
        priced_as = {"provider": name, "model": model_hint}

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

        def police(
            policy: EffectivePolicy,
            event: tuple[str, dict[str, Any]] | None,
            cost_usd: float | None = None,
        ) -> bool:
            """Evaluate the policy on a provider event (None: on the clock alone); queue its
            violations right after that event; stop the provider on a cancel decision.
            True when it found a violation."""
            nonlocal policy_state
            ms = int((self.clock() - started) * 1000)
            if event is not None and event[0] == EventType.TOKEN_USAGE_UPDATED:
                cost_usd = self._policy_cost(run, policy, usage, priced_as)
            decision: PolicyDecision = (
                policy_tick(policy, policy_state, elapsed_ms=ms, cost_usd=cost_usd)
                if event is None
                else policy_observe(policy, policy_state, *event, elapsed_ms=ms, cost_usd=cost_usd)
            )
            policy_state = decision.state
            buffer.extend(
                NewEvent(EventType.POLICY_VIOLATION, v, run.id, provider=name)
                for v in decision.violations
            )
            if decision.cancel and stop is None:
                stop_provider("policy")
            return bool(decision.violations)

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
                        if policy is not None and type_ != _STREAMED:  # chunks: the timer
                            police(policy, (type_, data))
                        if len(buffer) >= cfg.max_batch:
                            flush()
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
            if policy is not None and stop is None:  # the timer: a silent provider too
                urgent = police(policy, None) or urgent
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
            if policy is not None and stop is None:  # usage known only from the result
                police(policy, (EventType.TOKEN_USAGE_UPDATED.value, usage))
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
            metadata.update(result.run_metadata or {})  # e.g. the router's `routing`
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
        elif isinstance(box.get("error"), AsmError) and "routing" in box["error"].details:
            metadata["routing"] = box["error"].details["routing"]  # the router's decision
        if policy is not None:  # the verdict, judged last with the cost the run records
            if stop is None:
                police(policy, None, self._policy_cost(run, policy, usage, metadata))
            metadata["policy"] = policy_summary(policy, policy_state)
            error = policy_error(policy, policy_state)
            if error is not None and stop in (None, "policy"):  # spec 9.4: cancel mode fails
                outcome = self._failed(run, error)
        if workspace is not None:  # options.workspace: snapshot after, diff, rollback
            outcome = self._workspace_finish(run, workspace, outcome, metadata, buffer)
        return self._finish(run, outcome, usage, metadata, session_metadata, last_events=buffer)

    def _workspace_finish(
        self,
        run: RunRecord,
        workspace: RunWorkspace,
        outcome: _Outcome,
        metadata: dict[str, Any],
        last_events: list[NewEvent],
    ) -> _Outcome:
        """The workspace's end of the run (``sessions.workspaces.execution``): its events go
        with the run's last ones, its record to the run's metadata ``workspace``; an error in
        these steps replaces the run's outcome (spec 7.5). A run that is no longer this
        owner's (lease lost) leaves the workspace alone: a new attempt may be working in it."""
        if not self.store.run_renew_lease(
            run.id, attempt=run.attempt, owner=self.owner, lease_ms=self.config.lease_ms
        ):
            return outcome  # fenced: `_finish` writes nothing either
        end = workspace_run_finish(workspace, failed=outcome.status != "completed")
        last_events.extend(end.events)
        metadata["workspace"] = end.metadata
        return outcome if end.error is None else self._failed(run, end.error)

    def _policy_cost(
        self,
        run: RunRecord,
        policy: EffectivePolicy,
        usage: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> float | None:
        """The run's cost so far for a ``max_cost_usd`` limit (None: no limit, or unknown);
        priced like the run's recorded cost (``_priced``)."""
        if "max_cost_usd" not in policy.limits:
            return None
        cost, _ = self._priced(run, usage, metadata)
        return None if cost is None else float(cost)

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
        cost, metadata = self._priced(run, usage, metadata)
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
            cost_usd=cost,
        )
        if finished is None:
            logger.warning("run %s attempt %s was fenced off; result dropped", run.id, run.attempt)
        return finished

    def _priced(
        self, run: RunRecord, usage: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> tuple[Decimal | None, dict[str, Any]]:
        """The run's cost (``runs.costs.run_cost``: the provider that did the work, i.e. the
        router's ``routed_provider``, and the model it reported) and the metadata to record:
        ``cost_supported``, plus the capability negotiation ``_prepare`` noted on the run."""
        routing = metadata.get("routing")
        routed = routing.get("routed_provider") if isinstance(routing, Mapping) else None
        provider = routed or run.provider or self.config.default_provider
        model = metadata.get("model")
        cost, supported = run_cost(
            usage, str(provider), model if isinstance(model, str) else None, self.config.cost_rates
        )
        extra: dict[str, Any] = {"cost_supported": supported}
        if "capabilities" in run.metadata and "capabilities" not in metadata:
            extra["capabilities"] = run.metadata["capabilities"]
        return cost, {**metadata, **extra}


def _attempt_outcome(error: BaseException | None) -> tuple[str, str | None]:
    """A provider attempt's (outcome, error code) for its span."""
    if error is None:
        return "completed", None
    code = error.code if isinstance(error, AsmError) else "internal_error"
    return ("cancelled", None) if code == "cancelled" else ("failed", code)


def _session_context(context: Mapping[str, Any], run_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The session's context for the provider; the agent manifest's system prompt (recorded
    on the run at submit, ``metadata.agent.system_prompt``) when the session has none."""
    out = dict(context)
    agent = run_metadata.get("agent")
    prompt = agent.get("system_prompt") if isinstance(agent, Mapping) else None
    if isinstance(prompt, str) and prompt and not out.get("system_prompt"):
        out["system_prompt"] = prompt
    return out


class _ProviderThreads:
    """Daemon threads for provider calls, reused from run to run (starting a thread, and
    waiting for it to start, cost about a millisecond per run on a busy worker). A call gets
    an idle thread or a new one, never waits for a busy one: a provider that ignores cancel
    keeps its thread, and daemon threads never hold up the process's exit."""

    MAX_IDLE = 32

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that idle thread is now spoken for
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name="asm-provider", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:  # jobs report their own errors; keep the thread
                logger.exception("provider thread job failed")
            with self._lock:
                if self._idle >= self.MAX_IDLE:
                    return
                self._idle += 1


_provider_threads = _ProviderThreads()
