"""The ``router`` provider: a provider made of providers (spec 8), with fleet-wide health.

Plain Python (no Django): ``runs.bootstrap`` hands it the provider registry, the health
store (``runs.health``: Redis when REDIS_URL is set) and the settings-wide default policy.
The decision itself is the pure ``runs.routing.route_plan``; this class does the I/O around
it (read health, call the chosen providers, record health).

Invariants:

- Candidates are every other registered provider. The policy is the default merged with
  the run's ``options.routing`` (each key given replaces the default's); the run's
  ``options.required_capabilities`` are routing requirements too. A provider whose
  ``validate_config`` fails is skipped (``unavailable``), and so is a cooling one.
- One attempt per candidate in plan order. Each attempt's events go out through ``emit``
  with ``routed_provider``, ``routing_attempt`` and ``routing_candidates`` added to their
  data, and on a failover attempt ``failover_from`` and ``failover_reason`` (the previous
  attempt's provider and error code). A failed attempt's events stay as they were emitted;
  before failing over the router emits ``error_occurred`` for it (same routing keys).
- Health: a failure with a RETRYABLE code counts (and may start a cooldown); a success
  resets; a non-retryable failure, a cancel and a timeout change nothing. A health store
  that cannot be reached never fails a run: routing goes on as if every provider were
  healthy, and the problem is logged.
- Failover only on a retryable code while attempts are left; otherwise the attempt's error
  is the run's, with ``details.routing`` (the decision). A cancelled token ends the loop:
  no failover after a cancel or a timeout.
- The successful attempt's result is the run's (output, usage, model, provider session
  id); ``run_metadata.routing`` records the decision (``routed_provider``,
  ``routing_attempt``, ``routing_candidates``, ``failover_from``/``failover_reason``,
  ``strategy``, ``skipped`` and one entry per attempt).
- ``cancel(run_id)`` is forwarded to the provider executing that run's current attempt
  (and is a no-op when none is, e.g. between attempts: the shared cancel token stops
  the loop there).
- The options given to a candidate are the run's without ``routing``; its
  ``provider_session_id`` is the one a previous run of THAT provider left on the session.
- Spans (``runs.telemetry``, ``traces_attempts``): the router opens one
  ``asm.provider.attempt`` span per member it tries (``context.trace``, a child of the run
  span) and ends it with the attempt's outcome before failing over; the decision
  (strategy, candidates, skipped) is set on the run span and each failover is a
  ``asm.routing.failover`` span event on it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from asm_core.errors import AsmError, ErrorCode, is_retryable
from asm_core.event_types import EventType
from asm_core.usage import merge_token_usage
from runs.providers.base import (
    CancelToken,
    Capability,
    Emit,
    Provider,
    ProviderResult,
    RunContext,
    parse_requirement,
    provider_session_id_for,
)
from runs.providers.registry import ProviderRegistry
from runs.routing import (
    ROUTER_NAME,
    HealthSnapshot,
    RoutingPolicy,
    route_plan,
    routing_options_validate,
    should_failover,
)

if TYPE_CHECKING:
    from runs.health import HealthStore

logger = logging.getLogger(__name__)

__all__ = ["RouterProvider"]

_USAGE = EventType.TOKEN_USAGE_UPDATED.value


class RouterProvider:
    """Routes each run to one of the registry's other providers (module docstring)."""

    name: str = ROUTER_NAME
    #: Opens one attempt span per member it tries (the executor opens none for it).
    traces_attempts: bool = True

    def __init__(
        self,
        registry: ProviderRegistry,
        health: HealthStore,
        *,
        policy: RoutingPolicy | Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.health = registry, health
        if policy is None:
            policy = RoutingPolicy()
        elif not isinstance(policy, RoutingPolicy):
            routable = [n for n in registry.names() if n != self.name]
            policy = RoutingPolicy().merge(
                routing_options_validate(policy, registered=routable, field_name="router policy")
            )
        self.policy = policy
        self.rng = rng or random.Random()  # noqa: S311  # spreading load, not secrets
        self.clock = clock
        self._active: dict[uuid.UUID, Provider] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ protocol
    def members(self) -> list[Provider]:
        """The providers this router routes among (every registered one but itself)."""
        return [self.registry.get(n) for n in self.registry.names() if n != self.name]

    def capabilities(self) -> list[Capability]:
        """The union of the members' capabilities, de-duplicated by (type, name, enabled);
        a member whose ``capabilities`` raises contributes none."""
        seen: set[tuple[str, str, bool]] = set()
        out: list[Capability] = []
        for member in self.members():
            try:
                caps = member.capabilities()
            except Exception:
                logger.warning("provider %s: capabilities() failed", member.name, exc_info=True)
                continue
            for cap in caps:
                key = (str(cap.type), cap.name, cap.enabled)
                if key not in seen:
                    seen.add(key)
                    out.append(cap)
        return out

    def validate_config(self) -> None:
        if not self.members():
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "router: no other provider is registered",
                {"provider": self.name},
            )

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        """Any object: the chosen provider checks its own options when it runs."""
        if opts is not None and not isinstance(opts, Mapping):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "options.adapter_opts must be an object",
                {"field": "options.adapter_opts"},
            )

    def cancel(self, run_id: uuid.UUID) -> None:
        with self._lock:
            provider = self._active.get(run_id)
        if provider is not None:
            provider.cancel(run_id)

    def active_provider(self, run_id: uuid.UUID) -> str | None:
        """The provider executing ``run_id``'s current attempt, if any."""
        with self._lock:
            provider = self._active.get(run_id)
        return None if provider is None else provider.name

    # ------------------------------------------------------------------ routing
    def run_policy(self, options: Mapping[str, Any]) -> RoutingPolicy:
        """The default policy merged with ``options["routing"]`` (checked strictly)."""
        routing = options.get("routing")
        if routing is None:
            return self.policy
        routable = [n for n in self.registry.names() if n != self.name]
        return self.policy.merge(routing_options_validate(routing, registered=routable))

    def _snapshot(self, names: list[str], rotate: bool) -> HealthSnapshot:
        try:
            return self.health.snapshot(names, rotate=rotate)
        except Exception:
            logger.warning("provider health unreadable; routing as if all healthy", exc_info=True)
            return HealthSnapshot(now_ms=int(time.time() * 1000))

    def _record(self, name: str, error: AsmError | None) -> None:
        try:
            if error is None:
                self.health.record_success(name)
            elif is_retryable(error.code):
                self.health.record_failure(name, error.code)
        except Exception:
            logger.warning("provider health not recorded for %s", name, exc_info=True)

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        policy = self.run_policy(context.options)
        requirements = [
            parse_requirement(e) for e in context.options.get("required_capabilities") or ()
        ]
        providers: dict[str, list[Capability]] = {}
        unavailable: dict[str, str] = {}
        members = {m.name: m for m in self.members()}
        for name, member in members.items():
            try:
                providers[name] = list(member.capabilities())
                member.validate_config()
            except AsmError as exc:
                unavailable[name] = exc.message
            except Exception as exc:
                unavailable[name] = str(exc) or type(exc).__name__
            providers.setdefault(name, [])
        snapshot = self._snapshot(list(members), policy.strategy == "round_robin")
        summary: dict[str, Any] = {"strategy": policy.strategy, "routed_provider": None}
        try:
            plan = route_plan(
                providers=providers,
                policy=policy,
                health=snapshot,
                requirements=requirements,
                unavailable=unavailable,
                rng=self.rng,
            )
        except AsmError as exc:
            summary.update(routing_candidates=[], skipped=exc.details.get("skipped", {}))
            summary["attempts"] = []
            raise AsmError(exc.code, exc.message, {**exc.details, "routing": summary}) from None

        candidates = list(plan.candidates)
        summary.update(routing_candidates=candidates, skipped=dict(plan.skipped))
        trace = context.trace
        trace.annotate(
            {
                "asm.routing.strategy": policy.strategy,
                "asm.routing.candidates": candidates,
                "asm.routing.skipped": sorted(plan.skipped),
            }
        )
        attempts: list[dict[str, Any]] = []
        summary["attempts"] = attempts
        child_options = {k: v for k, v in context.options.items() if k != "routing"}
        previous: tuple[str, str] | None = None
        limit = len(plan.attempts)
        for k, name in enumerate(plan.attempts, start=1):
            cancel_token.raise_if_cancelled()
            provider = members[name]
            tags: dict[str, Any] = {
                "routed_provider": name,
                "routing_attempt": k,
                "routing_candidates": candidates,
            }
            if previous is not None:
                tags["failover_from"], tags["failover_reason"] = previous
            summary.update(tags)
            usage: dict[str, Any] = {}

            def child_emit(
                type_: str, data: Mapping[str, Any], _tags: dict[str, Any] = tags
            ) -> None:
                nonlocal usage
                if type_ == _USAGE:
                    usage = merge_token_usage(usage, data)
                emit(type_, {**data, **_tags, "routing_candidates": list(candidates)})

            child = dataclasses.replace(
                context,
                options=child_options,
                provider_session_id=provider_session_id_for(context.session_metadata, name),
            )
            record: dict[str, Any] = {"provider": name, "attempt": k}
            attempts.append(record)
            started = self.clock()
            with self._lock:
                self._active[context.run_id] = provider
            trace.attempt_start(
                name,
                k,
                **({} if previous is None else {"asm.failover_from": previous[0]}),
            )
            error: AsmError | None = None
            result: ProviderResult | None = None
            try:
                result = provider.execute(child, child_emit, cancel_token)
            except AsmError as exc:
                error = exc
            except Exception as exc:
                logger.warning("provider %s raised for run %s", name, context.run_id, exc_info=True)
                error = AsmError(
                    ErrorCode.PROVIDER_ERROR,
                    f"{name}: {type(exc).__name__}: {exc}",
                    {"provider": name},
                )
            finally:
                with self._lock:
                    self._active.pop(context.run_id, None)
                record["duration_ms"] = round((self.clock() - started) * 1000, 3)
                if usage:
                    record["token_usage"] = usage
            if error is None:
                record["status"] = "completed"
                trace.attempt_end("completed")
                self._record(name, None)
                return self._result(context, name, result, summary)
            record["error_code"] = error.code
            if error.code == ErrorCode.CANCELLED or cancel_token.cancelled:
                record["status"] = "cancelled"
                trace.attempt_end("cancelled")
                raise error
            record["status"] = "failed"
            trace.attempt_end("failed", error.code)
            self._record(name, error)
            if should_failover(error.code, attempt=k, limit=limit):
                trace.run_event(
                    "asm.routing.failover",
                    {
                        "asm.failover_from": name,
                        "asm.failover_to": plan.attempts[k],
                        "asm.failover_reason": error.code,
                        "asm.attempt": k,
                    },
                )
                emit(
                    EventType.ERROR_OCCURRED.value,
                    {
                        "error_code": error.code,
                        "error_message": error.message,
                        **tags,
                        "routing_candidates": list(candidates),
                        "failover_to": plan.attempts[k],
                    },
                )
                previous = (name, error.code)
                continue
            raise AsmError(
                error.code,
                error.message,
                {**error.details, "routing": summary},
                provider_error=error.provider_error,
            ) from error
        # Not reachable: the loop returns or raises on its last attempt.
        raise AsmError(ErrorCode.PROVIDER_UNAVAILABLE, "No provider left for failover")

    def _result(
        self,
        context: RunContext,
        name: str,
        result: ProviderResult | None,
        summary: dict[str, Any],
    ) -> ProviderResult:
        if not isinstance(result, ProviderResult):
            raise AsmError(
                ErrorCode.PROVIDER_ERROR,
                f"{name}: execute returned {type(result).__name__}, not a ProviderResult",
                {"provider": name, "routing": summary},
            )
        session_metadata = dict(result.session_metadata or {})
        if result.provider_session_id:
            ids = context.session_metadata.get("provider_session_ids")
            ids = dict(ids) if isinstance(ids, Mapping) else {}
            ids[name] = result.provider_session_id
            ids[self.name] = result.provider_session_id
            session_metadata["provider_session_ids"] = ids
        return dataclasses.replace(
            result,
            session_metadata=session_metadata,
            run_metadata={**result.run_metadata, "routing": summary},
        )
