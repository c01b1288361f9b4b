"""`runs.routing`: the pure routing decisions (spec 8.2-8.6 and asm's strategies).

Table tests of `route_plan` (capability matching, prefer/exclude, health, the three
strategies), the option validation, the health rule and the failover rule. The seed's router
tests (spec 8.8) that need providers to execute are in `test_router_provider.py`; their
selection halves are pinned here as well.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers.base import Capability
from runs.routing import (
    HEALTHY,
    HealthSnapshot,
    HealthState,
    RoutePlan,
    RoutingPolicy,
    health_after_failure,
    matches_all,
    order_candidates,
    requirement_met,
    round_robin_order,
    route_plan,
    routing_options_validate,
    should_failover,
    weighted_order,
)
from tests.fakes.routing_providers import caps

NOW = 1_000_000
FRESH = HealthSnapshot(now_ms=NOW)
SEED_PROVIDERS = {
    "amp": caps("tool:bash", "tool:read"),
    "codex": caps("tool:bash"),
    "claude": caps("sampling:chat"),
}


def plan(
    providers: Mapping[str, Sequence[Capability]] | None = None,
    health: HealthSnapshot = FRESH,
    requirements: Sequence[object] = (),
    rng: random.Random | None = None,
    unavailable: Mapping[str, str] | None = None,
    **policy: Any,
) -> RoutePlan:
    chosen = SEED_PROVIDERS if providers is None else providers
    return route_plan(
        providers=chosen,
        policy=RoutingPolicy().merge(routing_options_validate(policy, registered=list(chosen))),
        health=health,
        requirements=requirements,
        unavailable=unavailable,
        rng=rng,
    )


def bare(*names: str) -> dict[str, list[Capability]]:
    """Providers without capabilities."""
    return {n: [] for n in names}


# --------------------------------------------------------------------------- spec 8.8 (selection)
def test_seed_capability_prefer_exclude_picks_amp():
    chosen = plan(
        prefer=["claude", "amp", "codex"],
        exclude=["claude"],
        required_capabilities=[{"type": "tool", "name": "bash"}],
    )
    assert chosen.attempts == ("amp", "codex")
    assert chosen.skipped == {"claude": "missing required capabilities"}


def test_seed_routing_hints_choose_the_provider_with_bash_over_preferred():
    providers = {"amp": caps("tool:read"), "codex": caps("tool:bash")}
    chosen = plan(
        providers, prefer=["amp"], required_capabilities=[{"type": "tool", "name": "bash"}]
    )
    assert chosen.attempts == ("codex",)


def test_default_order_is_by_name_and_attempts_are_capped_by_max_attempts():
    providers = bare("d", "b", "a", "c")
    assert plan(providers).candidates == ("a", "b", "c", "d")
    assert plan(providers).attempts == ("a", "b", "c")  # default max_attempts 3
    assert plan(providers, max_attempts=1).attempts == ("a",)
    assert plan(providers, max_attempts=10).attempts == ("a", "b", "c", "d")


def test_order_candidates_is_the_seed_rule():
    policy = RoutingPolicy(prefer=("c", "zz", "a"), exclude=("b",))
    assert order_candidates(policy, ["a", "b", "c", "d"]) == ["c", "a", "d"]


# --------------------------------------------------------------------------- spec 8.4
@pytest.mark.parametrize(
    ("requirement", "met"),
    [
        ({"type": "tool", "name": "bash"}, True),
        ({"type": "tool", "name": "python"}, False),
        ({"type": "tool"}, True),
        ("tool", True),
        ("network_access", False),
        (("tool", None), True),
        (("tool", "bash"), True),
        ({"type": "disabled_kind"}, False),  # unknown type: never matches
        ({"name": "bash"}, False),  # no type
        (42, False),  # unknown shape
        (("tool",), False),
    ],
)
def test_requirement_matching(requirement, met):
    capabilities = [*caps("tool:bash"), Capability("file_access", "files", enabled=False)]
    assert requirement_met(requirement, capabilities) is met


def test_disabled_capabilities_never_match_and_empty_requirements_always_do():
    capabilities = [Capability("tool", "bash", enabled=False)]
    assert not requirement_met({"type": "tool", "name": "bash"}, capabilities)
    assert matches_all([], capabilities)
    assert not matches_all(["tool"], capabilities)


def test_run_requirements_add_to_the_policy_requirements():
    chosen = plan(requirements=[("tool", "read")], required_capabilities=["tool"])
    assert chosen.attempts == ("amp",)


# --------------------------------------------------------------------------- health
def test_cooling_and_unavailable_providers_are_skipped_with_a_reason():
    health = HealthSnapshot(
        now_ms=NOW,
        states={"amp": HealthState(1, NOW - 10, NOW + 5_000, "provider_timeout")},
    )
    chosen = plan(health=health, unavailable={"claude": "no API key"})
    assert chosen.attempts == ("codex",)
    assert chosen.skipped["amp"].startswith("cooling down until")
    assert chosen.skipped["claude"] == "unavailable: no API key"


def test_a_provider_is_healthy_again_when_its_cooldown_has_passed():
    state = HealthState(1, NOW - 10, NOW, "provider_timeout")
    assert not state.cooling(NOW)
    assert state.cooling(NOW - 1)
    chosen = plan(health=HealthSnapshot(now_ms=NOW, states={"amp": state}))
    assert chosen.attempts[0] == "amp"


def test_all_candidates_cooling_is_provider_unavailable_no_eligible_provider():
    cooling = HealthState(1, NOW, NOW + 1, "provider_timeout")
    health = HealthSnapshot(now_ms=NOW, states=dict.fromkeys(SEED_PROVIDERS, cooling))
    with pytest.raises(AsmError) as info:
        plan(health=health)
    assert info.value.code == "provider_unavailable"
    assert info.value.retryable
    assert info.value.message.startswith("No eligible provider")
    assert set(info.value.details["skipped"]) == set(SEED_PROVIDERS)


def test_nothing_matching_is_provider_unavailable():
    with pytest.raises(AsmError) as info:
        plan(required_capabilities=["code_execution"])
    assert info.value.code == "provider_unavailable"


@pytest.mark.parametrize(
    ("threshold", "failures", "cooling"),
    [(1, 1, True), (3, 1, False), (3, 2, False), (3, 3, True), (3, 4, True)],
)
def test_failure_threshold_decides_when_a_provider_cools(threshold, failures, cooling):
    state = HEALTHY
    for i in range(failures):
        state = health_after_failure(
            state,
            now_ms=NOW + i,
            code="provider_timeout",
            failure_threshold=threshold,
            cooldown_ms=30_000,
        )
    assert state.consecutive_failures == failures
    assert state.last_failure_ms == NOW + failures - 1
    assert state.last_error_code == "provider_timeout"
    assert state.cooling(NOW + failures) is cooling
    if cooling:
        assert state.cooldown_until_ms == NOW + failures - 1 + 30_000


# --------------------------------------------------------------------------- failover rule
@pytest.mark.parametrize(
    ("code", "attempt", "limit", "expected"),
    [
        ("provider_timeout", 1, 2, True),
        ("provider_rate_limited", 1, 3, True),
        ("provider_unavailable", 2, 3, True),
        ("storage_connection_failed", 1, 2, True),
        ("timeout", 1, 2, True),
        ("provider_timeout", 2, 2, False),  # no attempt left
        ("provider_authentication_failed", 1, 3, False),
        ("provider_quota_exceeded", 1, 3, False),
        ("provider_error", 1, 3, False),
        ("validation_error", 1, 3, False),
        ("cancelled", 1, 3, False),
    ],
)
def test_failover_only_on_retryable_codes_with_attempts_left(code, attempt, limit, expected):
    assert should_failover(code, attempt=attempt, limit=limit) is expected


# --------------------------------------------------------------------------- strategies
def test_round_robin_rotates_the_priority_order_by_the_shared_counter():
    providers = bare("a", "b", "c")
    firsts = [
        plan(
            providers, health=HealthSnapshot(now_ms=NOW, rr_counter=i), strategy="round_robin"
        ).attempts[0]
        for i in range(1, 7)
    ]
    assert firsts == ["b", "c", "a", "b", "c", "a"]
    assert round_robin_order(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert round_robin_order([], 4) == []


def test_round_robin_skips_a_cooling_provider_and_rotates_among_the_rest():
    providers = bare("a", "b", "c")
    cooling = HealthSnapshot(
        now_ms=NOW, states={"b": HealthState(1, NOW, NOW + 1000, "provider_timeout")}
    )
    picks = Counter(
        plan(
            providers,
            health=HealthSnapshot(now_ms=NOW, states=cooling.states, rr_counter=i),
            strategy="round_robin",
        ).attempts[0]
        for i in range(10)
    )
    assert picks == {"a": 5, "c": 5}


def test_weighted_distribution_is_within_5_percent_of_the_weights_over_2000_decisions():
    providers = bare("a", "b", "c")
    weights = {"a": 1, "b": 3, "c": 6}
    rng = random.Random(20240601)
    firsts = Counter(
        plan(providers, rng=rng, strategy="weighted", weights=weights).attempts[0]
        for _ in range(2000)
    )
    total = sum(weights.values())
    for name, weight in weights.items():
        share = firsts[name] / 2000
        assert abs(share - weight / total) < 0.05, (name, share, firsts)


def test_weighted_failover_order_holds_every_candidate_once():
    rng = random.Random(7)
    for _ in range(50):
        order = weighted_order(["a", "b", "c", "d"], {"a": 1, "b": 2, "c": 3}, rng)
        assert sorted(order) == ["a", "b", "c", "d"]
        assert order[-1] == "d"  # no weight: only after the weighted ones


def test_weighted_without_weights_is_uniform():
    rng = random.Random(11)
    firsts = Counter(weighted_order(["a", "b"], {}, rng)[0] for _ in range(2000))
    assert abs(firsts["a"] / 2000 - 0.5) < 0.05


def test_weighted_never_picks_a_cooling_provider():
    providers = bare("a", "b")
    health = HealthSnapshot(now_ms=NOW, states={"a": HealthState(1, NOW, NOW + 1, "timeout")})
    rng = random.Random(3)
    for _ in range(100):
        assert plan(
            providers, health=health, rng=rng, strategy="weighted", weights={"a": 100, "b": 1}
        ).attempts == ("b",)


# --------------------------------------------------------------------------- validation
REGISTERED = ["amp", "codex", "echo"]


def test_valid_routing_options_are_normalized():
    assert routing_options_validate(
        {
            "prefer": ["codex", "amp", "codex"],
            "exclude": [],
            "max_attempts": 2,
            "strategy": "weighted",
            "weights": {"amp": 2, "codex": 0.5},
            "required_capabilities": ["tool", {"type": "tool", "name": "bash"}],
        },
        registered=REGISTERED,
    ) == {
        "prefer": ["codex", "amp"],
        "exclude": [],
        "max_attempts": 2,
        "strategy": "weighted",
        "weights": {"amp": 2, "codex": 0.5},
        "required_capabilities": ["tool", {"type": "tool", "name": "bash"}],
    }
    assert routing_options_validate({}, registered=REGISTERED) == {}


@pytest.mark.parametrize(
    ("value", "field", "code"),
    [
        ([], "options.routing", "validation_error"),
        ({"policy": {}}, "options.routing", "validation_error"),
        ({"prefer": "amp"}, "options.routing.prefer", "validation_error"),
        ({"prefer": ["nope"]}, "options.routing.prefer", "validation_error"),
        ({"prefer": [1]}, "options.routing.prefer", "validation_error"),
        ({"exclude": ["router"]}, "options.routing.exclude", "validation_error"),
        ({"max_attempts": 0}, "options.routing.max_attempts", "validation_error"),
        ({"max_attempts": 11}, "options.routing.max_attempts", "validation_error"),
        ({"max_attempts": True}, "options.routing.max_attempts", "validation_error"),
        ({"max_attempts": "2"}, "options.routing.max_attempts", "validation_error"),
        ({"strategy": "random"}, "options.routing.strategy", "validation_error"),
        ({"weights": [1]}, "options.routing.weights", "validation_error"),
        ({"weights": {"nope": 1}}, "options.routing.weights", "validation_error"),
        ({"weights": {"amp": 0}}, "options.routing.weights.amp", "validation_error"),
        ({"weights": {"amp": -1}}, "options.routing.weights.amp", "validation_error"),
        ({"weights": {"amp": True}}, "options.routing.weights.amp", "validation_error"),
        ({"weights": {"amp": float("inf")}}, "options.routing.weights.amp", "validation_error"),
        ({"required_capabilities": "tool"}, "options.routing.required_capabilities", None),
        ({"required_capabilities": ["nonsense"]}, None, "invalid_capability_type"),
        ({"required_capabilities": [{"type": "tool", "name": 3}]}, "name", "validation_error"),
    ],
)
def test_invalid_routing_options_are_refused(value, field, code):
    with pytest.raises(AsmError) as info:
        routing_options_validate(value, registered=REGISTERED)
    if code is not None:
        assert info.value.code == code
    else:
        assert info.value.code == "validation_error"
    if field is not None:
        assert info.value.details.get("field") == field


def test_policy_merge_replaces_only_the_given_fields():
    base = RoutingPolicy(prefer=("a",), max_attempts=2, strategy="round_robin")
    merged = base.merge({"prefer": ["b"], "weights": {"b": 2}})
    assert merged == RoutingPolicy(
        prefer=("b",), max_attempts=2, strategy="round_robin", weights={"b": 2.0}
    )
    assert base.merge({}) is base
