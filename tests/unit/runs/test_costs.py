"""Cost tracking: the pure `run_cost`, the executor recording `cost_usd`, and the totals
(sessions in the API, owners at `GET /api/v1/usage`)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User

from asm_core.errors import AsmError
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import RunRecord, SessionRecord
from runs.costs import ECHO_COST_RATES, cost_micros, rates_for, rates_validate, run_cost
from runs.executor import ExecutorConfig, RunExecutor
from runs.models import Run
from runs.providers.echo import EchoProvider
from runs.providers.registry import ProviderRegistry
from runs.scheduling import session_drain
from runs.services import run_submit
from runs.usage import owner_usage, session_usage
from sessions.services import session_create
from tests.unit.api.conftest import bearer_client

RATES: dict[str, Any] = {
    "claude": {
        "claude-sonnet": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
        "claude-sonnet-4-5-special": {"input": 1, "output": 1},
        "*": {"input": 10, "output": 10},
    },
    "codex": {
        "gpt-5.5": {
            "input": 1.25,
            "output": 10,
            "cache_read": 0.125,
            "input_includes_cache_read": True,
        }
    },
    "echo": {"*": {"input": 0, "output": 0}},
}


# --------------------------------------------------------------------------- run_cost (pure)


def test_tokens_times_rates_per_million_rounded_to_the_micro_dollar() -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 100,
    }
    cost, supported = run_cost(usage, "claude", "claude-sonnet-4-5-20250929", RATES)
    # 1000*3 + 500*15 + 2000*0.3 + 100*3.75 = 3000 + 7500 + 600 + 375 = 11475 per million
    assert (cost, supported) == (Decimal("0.011475"), True)
    assert run_cost({"input_tokens": 1}, "claude", "claude-sonnet-x", RATES) == (
        Decimal("0.000003"),
        True,
    )
    assert run_cost(
        {"input_tokens": 1},
        "claude",
        "claude-haiku",
        {"claude": {"claude-haiku": {"input": 0.4, "output": 1}}},
    )[0] == Decimal("0.000000")  # 0.0000004 rounds half-up to 0


def test_model_lookup_exact_then_longest_prefix_then_star() -> None:
    assert rates_for(RATES, "claude", "claude-sonnet-4-5-special-1").input == 1
    assert rates_for(RATES, "claude", "claude-sonnet-4").input == 3
    assert rates_for(RATES, "claude", "something-else").input == 10
    assert rates_for(RATES, "claude", None).input == 10
    assert rates_for(RATES, "codex", "o3") is None
    assert rates_for(RATES, "amp", "x") is None
    assert rates_for(None, "echo", None) is None


def test_cache_defaults_to_the_input_rate_and_openai_style_input_counts_cache_once() -> None:
    rates = {"p": {"m": {"input": 2, "output": 4}}}
    usage = {"input_tokens": 10, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 10}
    assert run_cost(usage, "p", "m", rates) == (Decimal("0.000060"), True)
    # codex: input_tokens (1000) INCLUDES the 800 cached ones
    usage = {"input_tokens": 1000, "cache_read_input_tokens": 800, "output_tokens": 100}
    cost, _ = run_cost(usage, "codex", "gpt-5.5", RATES)
    assert cost == (Decimal(200) * Decimal("1.25") + 800 * Decimal("0.125") + 100 * 10) / 10**6


def test_unknown_rates_are_unsupported_not_zero() -> None:
    assert run_cost({"input_tokens": 5}, "amp", "whatever", RATES) == (None, False)
    assert run_cost({"output_tokens": 5}, "codex", None, RATES) == (None, False)


def test_no_tokens_cost_zero_even_without_rates() -> None:
    assert run_cost({}, "amp", None, RATES) == (Decimal("0.000000"), True)
    assert run_cost(None, "amp", None, None) == (Decimal(0), True)
    assert run_cost({"input_tokens": 0, "model": "x", "odd": True}, "amp", None, {}) == (
        Decimal(0),
        True,
    )


def test_odd_usage_values_count_zero() -> None:
    usage = {"input_tokens": True, "output_tokens": -5, "cache_read_input_tokens": "7"}
    assert run_cost(usage, "claude", "claude-sonnet", RATES) == (Decimal(0), True)
    assert run_cost({"input_tokens": 2.9}, "claude", "claude-sonnet", RATES)[0] == Decimal(
        "0.000006"
    )


def test_rate_table_validation() -> None:
    rates_validate(RATES)
    rates_validate(django_settings.ASM_COST_RATES)  # the shipped defaults are valid
    for bad, where in (
        ([], "ASM_COST_RATES"),
        ({"p": []}, "ASM_COST_RATES.p"),
        ({"p": {"m": {"input": 1}}}, "ASM_COST_RATES.p.m.output"),
        ({"p": {"m": {"input": -1, "output": 1}}}, "ASM_COST_RATES.p.m.input"),
        ({"p": {"m": {"input": True, "output": 1}}}, "ASM_COST_RATES.p.m.input"),
        ({"p": {"m": {"input": 1, "output": "nan"}}}, "ASM_COST_RATES.p.m.output"),
        ({"p": {"m": {"input": 1, "output": 1, "extra": 1}}}, "ASM_COST_RATES.p.m"),
    ):
        with pytest.raises(AsmError) as info:
            rates_validate(bad)
        assert info.value.code == "validation_error"
        assert info.value.details["field"] == where, bad
    # an invalid entry never prices anything
    assert rates_for({"p": {"m": {"input": -1, "output": 1}}}, "p", "m") is None


def test_settings_rates_price_the_adapters_default_claude_model_and_echo_free() -> None:
    from runs.providers.claude import DEFAULT_MODEL

    rates = django_settings.ASM_COST_RATES
    cost, supported = run_cost({"input_tokens": 10**6}, "claude", DEFAULT_MODEL, rates)
    assert supported
    assert cost is not None
    assert cost > 0
    assert run_cost({"input_tokens": 10**6}, "claude_code", "claude-opus-4-5", rates)[1]
    assert run_cost({"input_tokens": 10**6, "output_tokens": 9}, "echo", "echo-1", rates) == (
        Decimal(0),
        True,
    )
    assert cost_micros(Decimal("0.1234565")) == 123457


# --------------------------------------------------------------------------- the executor


def _execute(config: ExecutorConfig, adapter_opts: dict[str, Any]) -> RunRecord:
    store = InMemorySessionStore()
    registry = ProviderRegistry()
    registry.register(EchoProvider())
    session = store.session_save(SessionRecord(agent_id="a", status="active"))
    store.run_save(
        RunRecord(
            session_id=session.id,
            provider="echo",
            input={"prompt": "hi there"},
            options={"adapter_opts": adapter_opts},
        )
    )
    run = store.run_claim_next(session.id, owner="w", lease_ms=10_000)
    assert run is not None
    finished = RunExecutor(store, registry, owner="w", config=config).execute(run, claimed=True)
    assert finished is not None
    assert store.run_get(run.id) == finished
    return finished


def test_the_executor_records_cost_usd_and_cost_supported() -> None:
    rates = {"echo": {"*": {"input": 100, "output": 200}}}
    usage = {"usage": {"input_tokens": 1000, "output_tokens": 3000}}
    finished = _execute(ExecutorConfig(cost_rates=rates), usage)
    assert finished.cost_usd == Decimal("0.700000")  # (1000*100 + 3000*200) / 1e6
    assert finished.metadata["cost_supported"] is True
    # the library default: echo is free
    assert ExecutorConfig().cost_rates == ECHO_COST_RATES
    free = _execute(ExecutorConfig(), usage)
    assert (free.cost_usd, free.metadata["cost_supported"]) == (Decimal(0), True)


def test_a_run_without_rates_says_so() -> None:
    finished = _execute(ExecutorConfig(cost_rates={}), {"usage": {"input_tokens": 5}})
    assert finished.cost_usd is None
    assert finished.metadata["cost_supported"] is False


def test_a_failed_run_is_priced_by_what_it_used() -> None:
    rates = {"echo": {"*": {"input": 1_000_000, "output": 1_000_000}}}
    finished = _execute(
        ExecutorConfig(cost_rates=rates),
        {
            "usage": {"input_tokens": 2, "output_tokens": 1},
            "fail": {"code": "provider_error", "after_chunks": 5},
        },
    )
    assert finished.status == "failed"
    assert finished.token_usage == {}  # echo reports usage after the reply: it never got there
    assert (finished.cost_usd, finished.metadata["cost_supported"]) == (Decimal(0), True)


# --------------------------------------------------------------------------- the service


@pytest.fixture
def priced(settings: Any) -> None:
    settings.ASM_COST_RATES = {"echo": {"*": {"input": 100, "output": 100}}}


def _run(session_id: uuid.UUID, tokens: tuple[int, int]) -> Run:
    opts = {"adapter_opts": {"usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}}
    run = run_submit(session_id=session_id, input="count me", options=opts).run
    session_drain(session_id=session_id, worker_id="w")
    return Run.objects.get(id=run.id)


@pytest.mark.django_db
def test_service_runs_store_cost_and_sessions_and_owners_total_it(priced: None) -> None:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    s1 = session_create(agent_id="a", owner=alice)
    s2 = session_create(agent_id="a", owner=alice)
    s3 = session_create(agent_id="a", owner=bob)
    r1 = _run(s1.id, (1000, 2000))
    _run(s1.id, (500, 0))
    _run(s2.id, (0, 10))
    _run(s3.id, (7, 7))
    assert (r1.status, r1.cost_usd, r1.metadata["cost_supported"]) == (
        "completed",
        Decimal("0.300000"),
        True,
    )
    totals = session_usage([s1.id, s2.id])
    assert totals[s1.id] == {
        "runs": 2,
        "input_tokens": 1500,
        "output_tokens": 2000,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "total_tokens": 3500,
        "cost_usd": 0.35,
        "runs_without_cost": 0,
        "cost_complete": True,
    }
    assert totals[s2.id]["total_tokens"] == 10
    alice_usage = owner_usage(alice.pk)
    assert (alice_usage["runs"], alice_usage["total_tokens"], alice_usage["cost_usd"]) == (
        3,
        3510,
        0.351,
    )
    assert owner_usage(bob.pk)["total_tokens"] == 14


@pytest.mark.django_db
def test_unknown_costs_make_totals_incomplete(settings: Any) -> None:
    settings.ASM_COST_RATES = {}
    alice = User.objects.create_user("alice")
    session = session_create(agent_id="a", owner=alice)
    run = _run(session.id, (3, 4))
    assert run.cost_usd is None
    assert run.metadata["cost_supported"] is False
    totals = session_usage([session.id])[session.id]
    assert (totals["cost_usd"], totals["runs_without_cost"], totals["cost_complete"]) == (
        0.0,
        1,
        False,
    )


@pytest.mark.django_db
def test_odd_token_usage_json_never_breaks_the_totals(priced: None) -> None:
    alice = User.objects.create_user("alice")
    session = session_create(agent_id="a", owner=alice)
    run = _run(session.id, (1, 1))
    Run.objects.filter(id=run.id).update(
        token_usage={"input_tokens": "many", "output_tokens": [1], "cache_read_input_tokens": 2.5}
    )
    totals = session_usage([session.id])[session.id]
    assert (totals["input_tokens"], totals["output_tokens"], totals["cache_read_input_tokens"]) == (
        0,
        0,
        2,
    )


@pytest.mark.django_db
def test_session_api_output_carries_usage_totals(priced: None) -> None:
    alice = User.objects.create_user("alice")
    api = bearer_client(alice)
    created = api.post("/api/v1/sessions", {"agent_id": "a"}, format="json").json()
    assert created["usage"]["runs"] == 0
    assert created["usage"]["cost_complete"] is True
    sid = uuid.UUID(created["id"])
    _run(sid, (1000, 1000))
    one = api.get(f"/api/v1/sessions/{sid}").json()
    assert (one["usage"]["total_tokens"], one["usage"]["cost_usd"]) == (2000, 0.2)
    listed = api.get("/api/v1/sessions").json()["results"]
    assert listed[0]["usage"] == one["usage"]
    run = api.get(f"/api/v1/sessions/{sid}/runs").json()["results"][0]
    assert (run["cost_usd"], run["metadata"]["cost_supported"]) == (0.2, True)


@pytest.mark.django_db
def test_usage_endpoint_is_the_callers_and_staff_may_ask_for_another(priced: None) -> None:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    boss = User.objects.create_user("boss", is_staff=True)
    _run(session_create(agent_id="a", owner=alice).id, (10, 20))
    _run(session_create(agent_id="a", owner=bob).id, (1, 1))
    body = bearer_client(alice).get("/api/v1/usage").json()
    assert body["owner_id"] == alice.pk
    assert body["totals"]["total_tokens"] == 30
    assert body["windows"]["daily"]["usage"]["total_tokens"] == 30
    assert body["windows"]["monthly"]["usage"]["runs"] == 1
    assert body["budgets"] == []
    denied = bearer_client(alice).get(f"/api/v1/usage?owner_id={bob.pk}")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    assert bearer_client(alice).get(f"/api/v1/usage?owner_id={alice.pk}").status_code == 200
    other = bearer_client(boss).get(f"/api/v1/usage?owner_id={bob.pk}").json()
    assert (other["owner_id"], other["totals"]["total_tokens"]) == (bob.pk, 2)
    bad = bearer_client(alice).get("/api/v1/usage?owner_id=x")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"
