"""`runs.policies`: the pure policy model, stacking and evaluator (spec 9 with asm's fixes).

Pinned here: strict parsing of both document forms (asm's objects and the seed's pair lists);
stacking (the strictest limit, the union of denials, the intersection of allow lists, the
strictest stated `on_violation`); the seed's runtime and evaluator tests (spec 9.4) adapted
to the fix that a limit is reported ONCE per run; tool rules on `tool_call_started` only;
`max_cost_usd` evaluated only against a cost figure that is passed in; the final summary and
error. No clock: elapsed time is an argument.
"""

from __future__ import annotations

from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.policies import (
    EffectivePolicy,
    Policy,
    PolicySource,
    PolicyState,
    policy_error,
    policy_observe,
    policy_parse,
    policy_sources,
    policy_stack,
    policy_summary,
    policy_tick,
    policy_tool_guard,
    policy_tool_refusal,
    policy_tool_rules,
)


def run_policy(document: dict[str, Any]) -> EffectivePolicy:
    policy = policy_stack([PolicySource("run", document)])
    assert policy is not None
    return policy


def usage(**tokens: Any) -> tuple[str, dict[str, Any]]:
    return "token_usage_updated", tokens


def tool(name: str, type_: str = "tool_call_started") -> tuple[str, dict[str, Any]]:
    return type_, {"tool_call_id": f"id_{name}", "tool_name": name, "tool_input": {}}


def feed(
    policy: EffectivePolicy,
    events: list[tuple[str, dict[str, Any]]],
    state: PolicyState | None = None,
    elapsed_ms: int = 0,
) -> tuple[PolicyState, list[list[dict[str, Any]]], list[bool]]:
    """Observe each event; return the final state, violations per event, cancel per event."""
    state = state or PolicyState()
    per_event, cancels = [], []
    for type_, data in events:
        decision = policy_observe(policy, state, type_, data, elapsed_ms=elapsed_ms)
        state = decision.state
        per_event.append(list(decision.violations))
        cancels.append(decision.cancel)
    return state, per_event, cancels


# --------------------------------------------------------------------------- parsing
def test_parse_the_documented_object_form() -> None:
    policy = policy_parse(
        {
            "name": "prod",
            "limits": {
                "max_total_tokens": 8000,
                "max_input_tokens": 6000,
                "max_output_tokens": 2000,
                "max_duration_ms": 120_000,
                "max_tool_calls": 20,
                "max_cost_usd": 1,
            },
            "tool_rules": {"allow": ["read", "bash"], "deny": ["bash", "bash"]},
            "on_violation": "warn",
            "metadata": {"team": "x"},
        }
    )
    assert policy == Policy(
        name="prod",
        limits={
            "max_total_tokens": 8000,
            "max_input_tokens": 6000,
            "max_output_tokens": 2000,
            "max_duration_ms": 120_000,
            "max_tool_calls": 20,
            "max_cost_usd": 1.0,
        },
        allow=frozenset({"read", "bash"}),
        deny=frozenset({"bash"}),
        on_violation="warn",
        metadata={"team": "x"},
    )
    assert isinstance(policy.limits["max_cost_usd"], float)


def test_parse_defaults_and_the_seed_pair_forms() -> None:
    assert policy_parse({}) == Policy()
    assert policy_parse({}).on_violation is None  # silent: cancel unless a layer says warn
    seed = policy_parse(
        {
            "limits": [["max_total_tokens", 5], ["max_tool_calls", 2]],
            "tool_rules": [["deny", ["bash"]], ["allow", ["a", "b"]], ["allow", ["b", "c"]]],
        }
    )
    assert seed.limits == {"max_total_tokens": 5, "max_tool_calls": 2}
    assert seed.deny == frozenset({"bash"})
    assert seed.allow == frozenset({"b"})  # every allow rule must admit the tool


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("deny bash", "options.policy"),
        (["name", "x"], "options.policy"),
        ({"nmae": "typo"}, "options.policy"),
        ({"name": ""}, "options.policy.name"),
        ({"name": 3}, "options.policy.name"),
        ({"on_violation": "ignore"}, "options.policy.on_violation"),
        ({"metadata": []}, "options.policy.metadata"),
        ({"limits": 5}, "options.policy.limits"),
        ({"limits": {"max_tokens": 5}}, "options.policy.limits.max_tokens"),
        ({"limits": {"max_total_tokens": -1}}, "options.policy.limits.max_total_tokens"),
        ({"limits": {"max_total_tokens": 1.5}}, "options.policy.limits.max_total_tokens"),
        ({"limits": {"max_total_tokens": True}}, "options.policy.limits.max_total_tokens"),
        ({"limits": {"max_total_tokens": "5"}}, "options.policy.limits.max_total_tokens"),
        ({"limits": {"max_cost_usd": -0.01}}, "options.policy.limits.max_cost_usd"),
        ({"limits": {"max_cost_usd": float("nan")}}, "options.policy.limits.max_cost_usd"),
        ({"limits": [["max_total_tokens"]]}, "options.policy.limits[0]"),
        ({"limits": [["max_total_tokens", 5, 6]]}, "options.policy.limits[0]"),
        ({"tool_rules": ["bash"]}, "options.policy.tool_rules[0]"),
        ({"tool_rules": [["block", ["bash"]]]}, "options.policy.tool_rules[0]"),
        ({"tool_rules": "bash"}, "options.policy.tool_rules"),
        ({"tool_rules": {"forbid": ["bash"]}}, "options.policy.tool_rules.forbid"),
        ({"tool_rules": {"deny": "bash"}}, "options.policy.tool_rules.deny"),
        ({"tool_rules": {"deny": ["bash", 3]}}, "options.policy.tool_rules.deny"),
        ({"tool_rules": {"deny": [" "]}}, "options.policy.tool_rules.deny"),
    ],
)
def test_invalid_documents_are_validation_errors_naming_the_field(
    document: object, field: str
) -> None:
    with pytest.raises(AsmError) as info:
        policy_parse(document)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field


def test_unknown_keys_are_listed() -> None:
    with pytest.raises(AsmError) as info:
        policy_parse({"name": "x", "budget": 1, "limit": 2})
    assert info.value.details["unsupported"] == ["budget", "limit"]


# --------------------------------------------------------------------------- stacking
def test_policy_sources_orders_the_layers_and_leaves_out_absent_ones() -> None:
    sources = policy_sources(
        default={"name": "d"},
        agent=None,
        session_context={"policy": {"name": "s"}, "other": 1},
        options={"policy": {"name": "r"}},
    )
    assert sources == [
        PolicySource("default", {"name": "d"}),
        PolicySource("session", {"name": "s"}),
        PolicySource("run", {"name": "r"}),
    ]
    assert policy_sources() == []
    assert policy_sources(default={}, session_context={"policy": None}, options={}) == []
    assert [s.label for s in policy_sources(agent={"name": "a"})] == ["agent"]


def test_no_layer_that_restricts_anything_means_no_policy() -> None:
    assert policy_stack([]) is None
    assert policy_stack([PolicySource("default", {}), PolicySource("run", {"name": "x"})]) is None


def test_stacking_keeps_the_strictest_limits_and_every_denial() -> None:
    policy = policy_stack(
        policy_sources(
            default={"name": "org", "limits": {"max_total_tokens": 1000, "max_tool_calls": 3}},
            agent={"name": "coder", "tool_rules": {"deny": ["rm"], "allow": ["rm", "ls", "cat"]}},
            session_context={"policy": {"limits": {"max_total_tokens": 5000}}},
            options={
                "policy": {
                    "name": "mine",
                    "limits": {"max_total_tokens": 800, "max_duration_ms": 60_000},
                    "tool_rules": {"deny": ["curl"], "allow": ["ls", "cat", "curl", "sudo"]},
                }
            },
        )
    )
    assert policy is not None
    assert policy.sources == ("default", "agent", "session", "run")
    assert policy.name == "mine"
    assert {k: (v.value, v.source, v.policy) for k, v in policy.limits.items()} == {
        "max_duration_ms": (60_000, "run", "mine"),
        "max_tool_calls": (3, "default", "org"),
        "max_total_tokens": (800, "run", "mine"),  # the session's 5000 cannot loosen it
    }
    assert policy.deny == frozenset({"rm", "curl"})
    assert policy.allow == frozenset({"ls", "cat"})  # on every allow list
    assert policy.on_violation == "cancel"  # nobody said otherwise
    assert policy_tool_refusal(policy, "ls") is None
    assert "denied" in (policy_tool_refusal(policy, "rm") or "")
    assert "'coder'" in (policy_tool_refusal(policy, "rm") or "")
    assert "not in the allowed tools" in (policy_tool_refusal(policy, "sudo") or "")


def test_a_later_layer_cannot_loosen_a_limit_or_lift_a_denial() -> None:
    policy = policy_stack(
        policy_sources(
            default={"limits": {"max_tool_calls": 1}, "tool_rules": {"deny": ["bash"]}},
            options={"policy": {"limits": {"max_tool_calls": 100}, "tool_rules": {"allow": []}}},
        )
    )
    assert policy is not None
    assert policy.limits["max_tool_calls"].value == 1
    assert policy.allow == frozenset()  # an empty allow list: no tool at all
    assert policy_tool_refusal(policy, "bash") is not None
    assert policy_tool_refusal(policy, "ls") is not None


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ((None, None), "cancel"),
        ((None, "warn"), "warn"),
        (("warn", "warn"), "warn"),
        (("cancel", "warn"), "cancel"),
        (("warn", "cancel"), "cancel"),
    ],
)
def test_on_violation_is_the_strictest_any_layer_states(
    actions: tuple[str | None, str | None], expected: str
) -> None:
    default: dict[str, Any] = {"limits": {"max_tool_calls": 1}}
    run: dict[str, Any] = {"limits": {"max_tool_calls": 1}}
    for document, action in zip((default, run), actions, strict=True):
        if action is not None:
            document["on_violation"] = action
    policy = policy_stack(policy_sources(default=default, options={"policy": run}))
    assert policy is not None
    assert policy.on_violation == expected


def test_an_invalid_layer_names_its_source() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"default": {"limits": {"max_tool_calls": -1}}}, "ASM_DEFAULT_POLICY.limits"),
        ({"agent": {"bogus": 1}}, "agent.default_policy"),
        ({"session_context": {"policy": "x"}}, "session.context.policy"),
        ({"options": {"policy": {"on_violation": 1}}}, "options.policy.on_violation"),
    ]
    for kwargs, field in cases:
        with pytest.raises(AsmError) as info:
            policy_stack(policy_sources(**kwargs))
        assert info.value.code == "validation_error"
        assert info.value.details["field"].startswith(field)


# --------------------------------------------------------------------------- the seed's tests
def test_runtime_cancel_is_requested_once_across_two_identical_violating_events() -> None:
    # Seed: two identical violating events each report 1 violation, cancel only once. asm:
    # each denied tool call is its own breach (1 violation each), cancel still only once.
    policy = run_policy({"tool_rules": {"deny": ["bash"]}})
    state, per_event, cancels = feed(policy, [tool("bash"), tool("bash")])
    assert [len(v) for v in per_event] == [1, 1]
    assert cancels == [True, False]
    assert state.cancel_requested
    assert per_event[0][0] == {
        "policy": "default",
        "kind": "tool_denied",
        "action": "cancel",
        "details": {
            "tool_name": "bash",
            "rule": "deny",
            "denied_tools": ["bash"],
            "source": "run",
        },
    }


def test_a_breached_limit_is_reported_once_however_many_events_follow() -> None:
    policy = run_policy({"limits": {"max_total_tokens": 5}})
    state, per_event, cancels = feed(
        policy, [usage(total_tokens=40), usage(total_tokens=40), tool("x"), usage(input_tokens=1)]
    )
    assert [len(v) for v in per_event] == [1, 0, 0, 0]
    assert cancels == [True, False, False, False]
    assert per_event[0][0]["details"] == {
        "metric": "total_tokens",
        "actual": 40,
        "limit": 5,
        "source": "run",
    }
    assert len(state.violations) == 1


def test_warn_mode_token_breach_gives_one_violation_and_no_cancel() -> None:
    policy = run_policy({"name": "p", "limits": {"max_total_tokens": 10}, "on_violation": "warn"})
    state, per_event, cancels = feed(policy, [usage(input_tokens=8, output_tokens=8)])
    assert [len(v) for v in per_event] == [1]
    assert per_event[0][0]["action"] == "warn"
    assert cancels == [False]
    assert not state.cancel_requested
    summary = policy_summary(policy, state)
    assert summary["violated"] is True
    assert summary["action"] == "warn"
    assert summary["usage"]["total_tokens"] == 16
    assert policy_error(policy, state) is None


def test_cost_limits_are_not_evaluated_without_a_cost_figure() -> None:
    policy = run_policy({"limits": {"max_cost_usd": 0.01}})
    state, per_event, _ = feed(policy, [usage(input_tokens=10**6, output_tokens=10**6)])
    assert per_event == [[]]
    assert state.cost_usd is None
    summary = policy_summary(policy, state)
    assert summary["metadata"] == {"warnings": ["cost_unsupported"], "cost_supported": False}
    assert summary["usage"]["cost_usd"] is None


def test_cost_limits_are_evaluated_against_the_cost_figure_passed_in() -> None:
    policy = run_policy({"limits": {"max_cost_usd": 0.5}})
    first = policy_observe(
        policy, PolicyState(), *usage(input_tokens=1), elapsed_ms=0, cost_usd=0.5
    )
    assert first.violations == ()  # strictly greater
    second = policy_observe(policy, first.state, *usage(), elapsed_ms=0, cost_usd=0.75)
    [violation] = second.violations
    assert violation["details"] == {
        "metric": "cost_usd",
        "actual": 0.75,
        "limit": 0.5,
        "source": "run",
    }
    assert policy_summary(policy, second.state)["metadata"] == {
        "warnings": [],
        "cost_supported": True,
    }
    # A later event without a new figure keeps the last one known.
    third = policy_observe(policy, second.state, *tool("x"), elapsed_ms=1)
    assert third.state.cost_usd == 0.75


# --------------------------------------------------------------------------- evaluation rules
def test_limits_are_breached_only_when_strictly_greater() -> None:
    policy = run_policy({"limits": {"max_tool_calls": 2}})
    _, per_event, _ = feed(policy, [tool("a"), tool("b"), tool("c")])
    assert [len(v) for v in per_event] == [0, 0, 1]
    assert per_event[2][0]["details"]["metric"] == "tool_calls"
    assert per_event[2][0]["details"]["actual"] == 3


def test_each_breached_limit_gets_its_own_single_violation() -> None:
    policy = run_policy(
        {
            "limits": {"max_input_tokens": 10, "max_output_tokens": 10, "max_total_tokens": 15},
            "on_violation": "warn",
        }
    )
    state, per_event, _ = feed(
        policy,
        [
            usage(input_tokens=9, output_tokens=2),  # total 11
            usage(input_tokens=2, output_tokens=2),  # input 11 > 10, total 15
            usage(output_tokens=1),  # total 16 > 15
            usage(input_tokens=5, output_tokens=50),  # output 55 > 10
            usage(input_tokens=5, output_tokens=5),
        ],
    )
    assert [[v["details"]["metric"] for v in vs] for vs in per_event] == [
        [],
        ["input_tokens"],
        ["total_tokens"],
        ["output_tokens"],
        [],
    ]
    assert state.breached == frozenset(
        {"max_input_tokens", "max_output_tokens", "max_total_tokens"}
    )


def test_token_values_are_read_like_the_seed() -> None:
    policy = run_policy({"limits": {"max_total_tokens": 10**9}})
    state, _, _ = feed(
        policy,
        [
            usage(input_tokens=3.9, output_tokens="7"),  # floats truncated, strings are 0
            usage(input_tokens=-4, output_tokens=True, total_tokens=None),  # all 0
            usage(input_tokens=2, output_tokens=1),
        ],
    )
    assert (state.input_tokens, state.output_tokens, state.total_tokens) == (5, 1, 6)
    # A reported total counts when it is larger than input + output (it may include more).
    state, _, _ = feed(policy, [usage(input_tokens=1, output_tokens=1, total_tokens=30)], state)
    assert state.total_tokens == 30


def test_tool_rules_apply_to_tool_call_started_only() -> None:
    # The seed checked every event carrying a tool name, so a denied call was reported again
    # on its tool_call_completed / tool_call_failed.
    policy = run_policy({"tool_rules": {"deny": ["bash"]}, "on_violation": "warn"})
    _, per_event, _ = feed(
        policy,
        [
            tool("bash"),
            tool("bash", "tool_call_failed"),
            tool("bash", "tool_call_completed"),
            ("message_received", {"content": "x", "name": "bash"}),
        ],
    )
    assert [len(v) for v in per_event] == [1, 0, 0, 0]


def test_the_tool_name_falls_back_to_name_and_allow_lists_refuse_the_rest() -> None:
    policy = run_policy({"name": "ro", "tool_rules": {"allow": ["read"]}})
    _, per_event, _ = feed(
        policy,
        [
            ("tool_call_started", {"name": "write"}),
            ("tool_call_started", {"name": "read"}),
            ("tool_call_started", {"tool_name": 7}),  # not a name: counted, not judged
        ],
    )
    assert [len(v) for v in per_event] == [1, 0, 0]
    assert per_event[0][0] == {
        "policy": "ro",
        "kind": "tool_denied",
        "action": "cancel",
        "details": {
            "tool_name": "write",
            "rule": "allow",
            "allowed_tools": ["read"],
            "source": "run",
        },
    }


def test_a_denied_tool_is_one_violation_even_when_also_off_the_allow_list() -> None:
    policy = run_policy({"tool_rules": {"deny": ["bash"], "allow": ["read"]}})
    _, per_event, _ = feed(policy, [tool("bash")])
    assert [v["details"]["rule"] for v in per_event[0]] == ["deny"]


def test_duration_is_checked_by_the_tick_with_no_event() -> None:
    policy = run_policy({"limits": {"max_duration_ms": 100}})
    quiet = policy_tick(policy, PolicyState(), elapsed_ms=100)
    assert quiet.violations == ()
    late = policy_tick(policy, quiet.state, elapsed_ms=101)
    [violation] = late.violations
    assert violation["details"] == {
        "metric": "duration_ms",
        "actual": 101,
        "limit": 100,
        "source": "run",
    }
    assert late.cancel
    again = policy_tick(policy, late.state, elapsed_ms=5000)
    assert (again.violations, again.cancel) == ((), False)
    # ...and an event arriving late is also judged on the run's age.
    event = policy_observe(policy, PolicyState(), *usage(), elapsed_ms=250)
    assert [v["details"]["actual"] for v in event.violations] == [250]


def test_the_evaluator_never_changes_the_state_it_was_given() -> None:
    policy = run_policy({"limits": {"max_tool_calls": 0}})
    state = PolicyState()
    decision = policy_observe(policy, state, *tool("x"), elapsed_ms=5)
    assert state == PolicyState()
    assert decision.state.tool_calls == 1
    assert decision.state.elapsed_ms == 5


# --------------------------------------------------------------------------- outputs
def test_policy_error_in_cancel_mode_carries_the_violations() -> None:
    policy = run_policy({"name": "strict", "limits": {"max_total_tokens": 5}})
    assert policy_error(policy, PolicyState()) is None
    state, _, _ = feed(policy, [usage(total_tokens=40)])
    error = policy_error(policy, state)
    assert error is not None
    assert error.code == "policy_violation"
    assert error.details == {"policy": "strict", "violations": list(state.violations)}


def test_summary_shape() -> None:
    policy = policy_stack(
        policy_sources(
            default={"limits": {"max_tool_calls": 4}, "metadata": {"owner": "ops"}},
            options={"policy": {"name": "r", "on_violation": "warn"}},
        )
    )
    assert policy is not None
    state, _, _ = feed(policy, [tool("a"), usage(input_tokens=2, output_tokens=3)], elapsed_ms=7)
    assert policy_summary(policy, state) == {
        "name": "r",
        "sources": ["default", "run"],
        "action": "warn",
        "violated": False,
        "violations": [],
        "cancel_requested": False,
        "limits": {"max_tool_calls": 4},
        "usage": {
            "tool_calls": 1,
            "input_tokens": 2,
            "output_tokens": 3,
            "total_tokens": 5,
            "elapsed_ms": 7,
            "cost_usd": None,
        },
        "metadata": {"warnings": [], "cost_supported": False},
        "policy_metadata": {"owner": "ops"},
    }


def test_tool_guard_and_compiled_tool_rules() -> None:
    assert policy_tool_guard(None) is None
    assert policy_tool_rules(None) is None
    limits_only = run_policy({"limits": {"max_tool_calls": 1}})
    assert policy_tool_guard(limits_only) is None
    assert policy_tool_rules(limits_only) is None

    policy = policy_stack(
        policy_sources(
            default={"tool_rules": {"deny": ["Bash"]}},
            options={"policy": {"tool_rules": {"allow": ["Read", "Grep"], "deny": ["WebFetch"]}}},
        )
    )
    guard = policy_tool_guard(policy)
    assert guard is not None
    assert guard("Read", {}) is None
    assert "denied" in (guard("Bash", {"command": "ls"}) or "")
    assert "not in the allowed tools" in (guard("Write", {}) or "")
    assert policy_tool_rules(policy) == {"allow": ["Grep", "Read"], "deny": ["Bash", "WebFetch"]}
    deny_only = run_policy({"tool_rules": {"deny": ["Bash"]}})
    assert policy_tool_rules(deny_only) == {"allow": [], "deny": ["Bash"]}
