"""Provider routing decisions (spec 8.2-8.6, with asm's strategies): pure functions.

Plain Python: no Django, no I/O, no clock and no randomness of its own. Everything a
decision depends on is passed in: the providers and their capabilities, the routing policy,
the providers' health with the time it was read at (``HealthSnapshot``), the fleet-wide
round-robin counter and a ``random.Random`` for the weighted strategy. The router provider
(``runs.providers.router``) and the health stores (``runs.health``) do the I/O around it.

Invariants:

- Candidate selection (``route_plan``) follows spec 8.5: start from every provider, sorted
  by name; keep those whose **enabled** capabilities meet every requirement (8.4); drop
  excluded ones and order the rest by ``prefer`` (8.2); drop unavailable (misconfigured)
  and cooling ones; then order by strategy. ``attempts`` is the first
  ``min(max_attempts, len(candidates))`` of them. No candidate left ->
  ``provider_unavailable`` ("No eligible provider"), with why each provider was skipped.
- Strategies: ``priority`` (default) keeps the prefer order; ``round_robin`` rotates that
  order by the shared counter; ``weighted`` draws the order by weight without replacement
  (the first pick is proportional to its weight; providers with no weight come after the
  weighted ones, in prefer order; no ``weights`` at all -> every candidate weighs 1).
- A requirement is ``{"type", "name"?}``, a bare type, a ``Capability`` or a parsed
  ``(type, name | None)`` tuple; a capability meets it iff enabled, same type and (no name
  asked, or the same name). A requirement of any other shape never matches.
- Health: a provider is cooling iff ``cooldown_until_ms`` is set and ``now_ms`` is before it.
  A failure adds one to ``consecutive_failures``; reaching ``failure_threshold`` (default 1,
  the seed's rule: one failure cools) sets ``cooldown_until_ms = now_ms + cooldown_ms``. A
  success resets everything.
- Failover happens only for a retryable error code (``asm_core.errors.is_retryable``) and
  only while attempts are left.
- ``routing_options_validate`` is strict: unknown keys, names that are not routable
  providers, bad types or ranges are ``validation_error`` naming the field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from asm_core.errors import AsmError, ErrorCode, is_retryable
from runs.providers.base import Capability, parse_requirement

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "HEALTHY",
    "MAX_ATTEMPTS_LIMIT",
    "ROUTER_NAME",
    "ROUTING_KEYS",
    "STRATEGIES",
    "HealthSnapshot",
    "HealthState",
    "Requirement",
    "RoutePlan",
    "RoutingPolicy",
    "health_after_failure",
    "matches_all",
    "order_candidates",
    "requirement_met",
    "round_robin_order",
    "route_plan",
    "routing_options_validate",
    "should_failover",
    "weighted_order",
]

#: The router's provider name (reserved: no other provider may use it).
ROUTER_NAME = "router"
STRATEGIES = ("priority", "round_robin", "weighted")
ROUTING_KEYS = frozenset(
    {"prefer", "exclude", "max_attempts", "required_capabilities", "strategy", "weights"}
)
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 10

#: A parsed capability requirement: ``(type, name | None)``.
Requirement = tuple[str, str | None]


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RoutingPolicy:
    """How to pick providers. ``merge`` replaces each field present in the overrides."""

    prefer: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    strategy: str = "priority"
    weights: Mapping[str, float] = field(default_factory=dict)
    required_capabilities: tuple[Requirement, ...] = ()

    def merge(self, overrides: Mapping[str, Any]) -> RoutingPolicy:
        """This policy with the fields of ``overrides`` (output of
        ``routing_options_validate``) replacing its own."""
        changes: dict[str, Any] = {}
        for key in ("prefer", "exclude"):
            if key in overrides:
                changes[key] = tuple(overrides[key])
        if "max_attempts" in overrides:
            changes["max_attempts"] = int(overrides["max_attempts"])
        if "strategy" in overrides:
            changes["strategy"] = str(overrides["strategy"])
        if "weights" in overrides:
            changes["weights"] = {str(k): float(v) for k, v in overrides["weights"].items()}
        if "required_capabilities" in overrides:
            changes["required_capabilities"] = tuple(
                parse_requirement(e) for e in overrides["required_capabilities"]
            )
        return replace(self, **changes) if changes else self


def _invalid(field_name: str, message: str, **details: Any) -> AsmError:
    return AsmError(ErrorCode.VALIDATION_ERROR, message, {"field": field_name, **details})


def _names(value: object, field_name: str, registered: Collection[str]) -> list[str]:
    if not isinstance(value, list | tuple):
        raise _invalid(field_name, f"{field_name} must be a list of provider names")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise _invalid(field_name, f"{field_name} must hold provider names (strings)")
        if item not in registered:
            raise _invalid(
                field_name,
                f"{field_name}: {item!r} is not a routable provider; "
                f"registered: {', '.join(sorted(registered)) or '(none)'}",
                provider=item,
                registered=sorted(registered),
            )
        if item not in out:
            out.append(item)
    return out


def routing_options_validate(
    value: object, *, registered: Collection[str], field_name: str = "options.routing"
) -> dict[str, Any]:
    """``value`` (the run's ``options.routing``) checked and normalized.

    Keys: ``prefer`` and ``exclude`` (lists of names in ``registered``, de-duplicated),
    ``max_attempts`` (int 1..10), ``strategy`` (``priority`` | ``round_robin`` |
    ``weighted``), ``weights`` (``{name in registered: number > 0}``),
    ``required_capabilities`` (a list of requirements, see ``parse_requirement``).
    Anything else -> ``validation_error`` (an unknown capability type:
    ``invalid_capability_type``). Returns only the keys given.
    """
    if not isinstance(value, Mapping):
        raise _invalid(field_name, f"{field_name} must be an object")
    unknown = sorted(str(k) for k in set(value) - ROUTING_KEYS)
    if unknown:
        raise _invalid(
            field_name,
            f"Unsupported {field_name} key(s): {', '.join(unknown)}",
            unsupported=unknown,
            supported=sorted(ROUTING_KEYS),
        )
    out: dict[str, Any] = {}
    for key in ("prefer", "exclude"):
        if key in value:
            out[key] = _names(value[key], f"{field_name}.{key}", registered)
    if "max_attempts" in value:
        n = value["max_attempts"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_ATTEMPTS_LIMIT:
            raise _invalid(
                f"{field_name}.max_attempts",
                f"{field_name}.max_attempts must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}",
            )
        out["max_attempts"] = n
    if "strategy" in value:
        strategy = value["strategy"]
        if strategy not in STRATEGIES:
            raise _invalid(
                f"{field_name}.strategy",
                f"{field_name}.strategy must be one of {', '.join(STRATEGIES)}",
                allowed=list(STRATEGIES),
            )
        out["strategy"] = strategy
    if "weights" in value:
        weights = value["weights"]
        wfield = f"{field_name}.weights"
        if not isinstance(weights, Mapping):
            raise _invalid(wfield, f"{wfield} must be an object {{provider: number}}")
        _names(list(weights), wfield, registered)
        clean: dict[str, float] = {}
        for name, weight in weights.items():
            if (
                not isinstance(weight, int | float)
                or isinstance(weight, bool)
                or not math.isfinite(weight)
                or weight <= 0
            ):
                raise _invalid(f"{wfield}.{name}", f"{wfield}.{name} must be a positive number")
            clean[name] = weight
        out["weights"] = clean
    if "required_capabilities" in value:
        reqs = value["required_capabilities"]
        rfield = f"{field_name}.required_capabilities"
        if not isinstance(reqs, list):
            raise _invalid(rfield, f"{rfield} must be a list")
        for entry in reqs:
            parse_requirement(entry)  # raises validation_error / invalid_capability_type
        out["required_capabilities"] = list(reqs)
    return out


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class HealthState:
    """One provider's health as the fleet sees it (times in epoch milliseconds)."""

    consecutive_failures: int = 0
    last_failure_ms: int | None = None
    cooldown_until_ms: int | None = None
    last_error_code: str | None = None

    def cooling(self, now_ms: int) -> bool:
        return self.cooldown_until_ms is not None and now_ms < self.cooldown_until_ms


HEALTHY = HealthState()


@dataclass(frozen=True)
class HealthSnapshot:
    """Health of some providers read at ``now_ms`` (the store's clock), and the round-robin
    counter (advanced by the read when the caller asked for it)."""

    now_ms: int
    states: Mapping[str, HealthState] = field(default_factory=dict)
    rr_counter: int = 0

    def state(self, name: str) -> HealthState:
        return self.states.get(name, HEALTHY)


def health_after_failure(
    state: HealthState, *, now_ms: int, code: str, failure_threshold: int, cooldown_ms: int
) -> HealthState:
    """``state`` after one more failure at ``now_ms`` (the rule every store applies)."""
    failures = state.consecutive_failures + 1
    cooldown = now_ms + cooldown_ms if failures >= failure_threshold else state.cooldown_until_ms
    return HealthState(
        consecutive_failures=failures,
        last_failure_ms=now_ms,
        cooldown_until_ms=cooldown,
        last_error_code=code,
    )


# --------------------------------------------------------------------------- capabilities


def requirement_met(requirement: object, capabilities: Iterable[Capability]) -> bool:
    """True when an enabled capability meets ``requirement`` (spec 8.4)."""
    if isinstance(requirement, tuple):
        if len(requirement) != 2 or not isinstance(requirement[0], str):
            return False
        type_, name = requirement
        if name is not None and not isinstance(name, str):
            return False
    else:
        try:
            type_, name = parse_requirement(requirement)
        except AsmError:
            return False  # unknown requirement shapes never match
    return any(
        c.enabled and str(c.type) == type_ and (name is None or c.name == name)
        for c in capabilities
    )


def matches_all(requirements: Iterable[object], capabilities: Sequence[Capability]) -> bool:
    """Every requirement met (an empty list always matches)."""
    return all(requirement_met(r, capabilities) for r in requirements)


# --------------------------------------------------------------------------- ordering


def order_candidates(policy: RoutingPolicy, names: Sequence[str]) -> list[str]:
    """Spec 8.2: drop excluded names, then the preferred ones first (in ``prefer`` order),
    the rest in their given order."""
    kept = [n for n in names if n not in policy.exclude]
    preferred = [n for n in policy.prefer if n in kept]
    return preferred + [n for n in kept if n not in preferred]


def round_robin_order(names: Sequence[str], counter: int) -> list[str]:
    """``names`` rotated left by ``counter`` (mod their number)."""
    if not names:
        return []
    k = counter % len(names)
    return [*names[k:], *names[:k]]


def weighted_order(
    names: Sequence[str], weights: Mapping[str, float], rng: random.Random
) -> list[str]:
    """A weighted draw without replacement (Efraimidis-Spirakis keys ``u ** (1 / w)``).

    The first name is drawn with probability ``w / sum(w)``. Names without a weight follow
    the weighted ones in their given order; with no weights at all every name weighs 1.
    """
    if not weights:
        weights = dict.fromkeys(names, 1.0)
    weighted = [n for n in names if weights.get(n, 0) > 0]
    keyed = sorted(weighted, key=lambda n: rng.random() ** (1.0 / weights[n]), reverse=True)
    return keyed + [n for n in names if n not in weighted]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RoutePlan:
    """One routing decision: ``candidates`` in strategy order, the ``attempts`` to make
    (its first ``min(max_attempts, len)``), and why every other provider was ``skipped``."""

    strategy: str
    candidates: tuple[str, ...]
    attempts: tuple[str, ...]
    skipped: Mapping[str, str]


def route_plan(
    *,
    providers: Mapping[str, Sequence[Capability]],
    policy: RoutingPolicy,
    health: HealthSnapshot,
    requirements: Sequence[object] = (),
    unavailable: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> RoutePlan:
    """Choose the providers to try, in order (spec 8.5 plus the strategies).

    ``providers``: name -> capabilities (the router itself not included). ``requirements``
    add to ``policy.required_capabilities``. ``unavailable``: name -> why it cannot run
    (misconfigured). Raises ``AsmError("provider_unavailable")`` when no candidate is left,
    with details ``{"skipped": {name: reason}, "strategy"}``.
    """
    unavailable = unavailable or {}
    wanted = [*policy.required_capabilities, *requirements]
    skipped: dict[str, str] = {}
    capable: list[str] = []
    for name in sorted(providers):
        if matches_all(wanted, providers[name]):
            capable.append(name)
        else:
            skipped[name] = "missing required capabilities"
    ordered = order_candidates(policy, capable)
    for name in capable:
        if name not in ordered:
            skipped[name] = "excluded"
    healthy: list[str] = []
    for name in ordered:
        state = health.state(name)
        if name in unavailable:
            skipped[name] = f"unavailable: {unavailable[name]}"
        elif state.cooling(health.now_ms):
            skipped[name] = f"cooling down until {state.cooldown_until_ms} (epoch ms)"
        else:
            healthy.append(name)
    if policy.strategy == "round_robin":
        healthy = round_robin_order(healthy, health.rr_counter)
    elif policy.strategy == "weighted":
        healthy = weighted_order(healthy, policy.weights, rng or random.Random())  # noqa: S311
    limit = min(policy.max_attempts, len(healthy))
    if limit == 0:
        raise AsmError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            "No eligible provider"
            + (": " + "; ".join(f"{n}: {r}" for n, r in skipped.items()) if skipped else ""),
            {"skipped": skipped, "strategy": policy.strategy},
        )
    return RoutePlan(
        strategy=policy.strategy,
        candidates=tuple(healthy),
        attempts=tuple(healthy[:limit]),
        skipped=skipped,
    )


def should_failover(code: str, *, attempt: int, limit: int) -> bool:
    """Try the next candidate after attempt ``attempt`` (1-based) failed with ``code``?"""
    return is_retryable(code) and attempt < limit
