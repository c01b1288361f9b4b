"""Owner budgets: windows, the estimate, the ledger's rules (process-local ledger), and the
gate in the drain (`runs.budgets.budget_claim`) on SQLite. The same rules against Redis with
real worker processes: tests/integration/test_budgets.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from events.models import Event
from runs.budgets import (
    Entry,
    LocalBudgetLedger,
    WindowLimit,
    budget_cache_clear,
    budget_estimate,
    budget_ledger,
    budget_status,
    budget_window,
)
from runs.models import Run
from runs.scheduling import session_drain
from runs.services import run_submit
from sessions.admin import BudgetAdmin
from sessions.agents import agent_cache_clear
from sessions.models import Budget
from sessions.services import session_create
from tests.unit.api.conftest import bearer_client

# --------------------------------------------------------------------------- pure parts


def test_windows_are_utc_days_and_months() -> None:
    at = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    day = budget_window("daily", at)
    assert (day.key, day.start, day.end) == (
        "d20251231",
        datetime(2025, 12, 31, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    month = budget_window("monthly", at)
    assert (month.key, month.start, month.end) == (
        "m202512",
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert budget_window("monthly", datetime(2025, 2, 10, tzinfo=UTC)).end == datetime(
        2025, 3, 1, tzinfo=UTC
    )


def test_the_estimate_is_the_policy_cap_or_the_configured_default() -> None:
    rates = {"claude": {"a": {"input": 3, "output": 15}, "b": {"input": 1, "output": 30}}}
    kw: dict[str, Any] = {"rates": rates, "default_cost_usd": 0.25, "default_tokens": 20_000}
    assert budget_estimate({}, provider="claude", **kw) == (Decimal("0.25"), 20_000)
    assert budget_estimate({"max_cost_usd": 0.05}, provider="claude", **kw) == (
        Decimal("0.05"),
        20_000,
    )
    # tokens x the provider's dearest rate (30 per million)
    assert budget_estimate({"max_total_tokens": 10_000}, provider="claude", **kw) == (
        Decimal("0.3"),
        10_000,
    )
    assert budget_estimate(
        {"max_total_tokens": 10_000, "max_cost_usd": 0.01}, provider="claude", **kw
    ) == (Decimal("0.01"), 10_000)
    assert budget_estimate({"max_total_tokens": 10}, provider="amp", **kw) == (Decimal("0.25"), 10)


# --------------------------------------------------------------------------- the ledger


def _limits(cost: int | None = None, tokens: int | None = None) -> list[WindowLimit]:
    return [WindowLimit("d1", cost, tokens)]


def _reserve(ledger: LocalBudgetLedger, run: str, limits: list[WindowLimit], **kw: Any) -> str:
    args: dict[str, Any] = {"cost": 300, "tokens": 10, "ttl_ms": 60_000, "key_ttl_s": 60} | kw
    return ledger.reserve(1, run, limits, **args).outcome


def test_a_window_must_be_seeded_from_the_database_first() -> None:
    ledger = LocalBudgetLedger()
    verdict = ledger.reserve(1, "r1", _limits(1000), cost=1, tokens=1, ttl_ms=1, key_ttl_s=1)
    assert (verdict.outcome, verdict.seed) == ("seed", (0,))
    ledger.seed(1, "d1", [], 60)
    assert _reserve(ledger, "r1", _limits(1000)) == "ok"


def test_admission_while_spend_plus_reservations_is_below_the_limit() -> None:
    ledger = LocalBudgetLedger()
    ledger.seed(1, "d1", [Entry("old", 100, 0)], 60)
    outcomes = [_reserve(ledger, f"r{i}", _limits(1000)) for i in range(5)]
    # 100 spent; reserved 0, 300, 600 -> admitted (100+600 < 1000); 100+900 = 1000 -> no
    assert outcomes == ["ok", "ok", "ok", "deny", "deny"]
    denied = ledger.reserve(1, "r9", _limits(1000), cost=300, tokens=1, ttl_ms=1, key_ttl_s=1)
    assert (denied.metric, denied.spent, denied.reserved, denied.limit) == (
        "cost_usd",
        100,
        900,
        1000,
    )
    # a run already holding its reservation is re-admitted (a requeued run), even when full
    assert _reserve(ledger, "r1", _limits(1000)) == "ok"
    snap = ledger.snapshot(1, "d1")
    assert (snap["spent_cost"], snap["reserved_cost"], snap["reservations"]) == (100, 900, 3)


def test_tokens_are_limited_like_cost() -> None:
    ledger = LocalBudgetLedger()
    ledger.seed(1, "d1", [], 60)
    assert _reserve(ledger, "a", _limits(tokens=15), tokens=10) == "ok"
    assert _reserve(ledger, "b", _limits(tokens=15), tokens=10) == "ok"  # 10 < 15: room left
    verdict = ledger.reserve(1, "c", _limits(tokens=15), cost=0, tokens=10, ttl_ms=1, key_ttl_s=1)
    assert (verdict.outcome, verdict.metric) == ("deny", "tokens")


def test_settle_releases_and_charges_once_and_seeding_merges_by_run() -> None:
    ledger = LocalBudgetLedger()
    ledger.seed(1, "d1", [], 60)
    assert _reserve(ledger, "a", _limits(1000)) == "ok"
    ledger.settle(1, "a", ["d1"], Entry("a", 250, 7), 60)
    ledger.settle(1, "a", ["d1"], Entry("a", 250, 7), 60)  # a second settle changes nothing
    snap = ledger.snapshot(1, "d1")
    assert (snap["spent_cost"], snap["spent_tokens"], snap["reserved_cost"]) == (250, 7, 0)
    # the database seeds what it knows: "a" is not counted twice, "b" is added
    ledger.seed(1, "d1", [Entry("a", 250, 7), Entry("b", 50, 1)], 60)
    assert ledger.snapshot(1, "d1")["spent_cost"] == 300


def test_expired_reservations_are_dropped_and_reported() -> None:
    ledger = LocalBudgetLedger()
    ledger.seed(1, "d1", [], 60)
    assert _reserve(ledger, "dead", _limits(300), ttl_ms=0) == "ok"
    verdict = ledger.reserve(
        1, "next", _limits(300), cost=300, tokens=1, ttl_ms=60_000, key_ttl_s=1
    )
    assert (verdict.outcome, verdict.stale) == ("ok", ("dead",))


def test_concurrent_reservations_never_pass_the_limit_plus_one_reservation() -> None:
    ledger = LocalBudgetLedger()
    ledger.seed(1, "d1", [], 60)
    barrier = threading.Barrier(40)
    admitted: list[str] = []

    def go(i: int) -> None:
        barrier.wait()
        if _reserve(ledger, f"r{i}", _limits(1500)) == "ok":
            admitted.append(f"r{i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5  # 0, 300, 600, 900, 1200 < 1500
    assert ledger.snapshot(1, "d1")["reserved_cost"] <= 1500 + 300


# --------------------------------------------------------------------------- the gate


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    budget_cache_clear()
    budget_ledger.cache_clear()
    agent_cache_clear()
    yield
    budget_cache_clear()
    budget_ledger.cache_clear()


@pytest.fixture
def alice(db: Any, settings: Any) -> User:
    # each run: 1000 in + 1000 out at 100 USD per million = 0.2 USD; reservations 0.2 too
    settings.ASM_COST_RATES = {"echo": {"*": {"input": 100, "output": 100}}}
    settings.ASM_BUDGET_RESERVE_USD = 0.2
    settings.ASM_BUDGET_RESERVE_TOKENS = 2000
    return User.objects.create_user("alice")


OPTS = {"adapter_opts": {"usage": {"input_tokens": 1000, "output_tokens": 1000}}}


def _submit(owner: User, options: dict[str, Any] | None = None) -> tuple[uuid.UUID, Run]:
    session = session_create(agent_id="budgeted", owner=owner)
    run = run_submit(session_id=session.id, input="spend", options=options or OPTS).run
    return session.id, run


def _drain(session_id: uuid.UUID) -> Run:
    session_drain(session_id=session_id, worker_id="w")
    return Run.objects.filter(session_id=session_id).order_by("-created_at").first()  # type: ignore[return-value]


def _types(run: Run) -> list[str]:
    return list(
        Event.objects.filter(run=run).order_by("sequence_number").values_list("type", flat=True)
    )


def test_a_run_within_budget_is_charged_its_actual_cost(alice: User) -> None:
    budget = Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("1"))
    sid, _ = _submit(alice)
    run = _drain(sid)
    assert run.status == "completed"
    assert run.cost_usd == Decimal("0.2")
    assert run.metadata["budget"] == {
        "windows": [budget_window("daily", run.started_at).key],  # type: ignore[arg-type]
        "reserved_cost_usd": 0.2,
        "reserved_tokens": 2000,
        "charged_cost_usd": 0.2,
        "charged_tokens": 2000,
        "cost_known": True,
    }
    status = budget_status(budget)
    assert (status["spent_cost_usd"], status["spent_tokens"], status["reserved_cost_usd"]) == (
        0.2,
        2000,
        0.0,
    )
    snap = budget_ledger().snapshot(alice.pk, budget_window("daily", run.started_at).key)  # type: ignore[arg-type]
    assert (snap["spent_cost"], snap["reserved_cost"]) == (200_000, 0)


def test_over_budget_runs_wait_with_a_reason_and_one_event(alice: User) -> None:
    budget = Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("0.2"))
    first_sid, _ = _submit(alice)
    assert _drain(first_sid).status == "completed"
    sid, _ = _submit(alice)
    for _ in range(3):  # the drain retries; only the first refusal writes an event
        run = _drain(sid)
    assert run.status == "pending"
    assert run.attempt == 0  # the claim was rolled back
    assert run.waiting_reason.startswith("Owner budget exceeded: the daily cost_usd limit (0.2)")
    [event] = Event.objects.filter(run=run)
    assert event.type == "error_occurred"
    assert event.data["error_code"] == "provider_quota_exceeded"
    assert event.data["budget"] | {"window_start": None, "window_end": None} == {
        "budget_id": budget.pk,
        "window": "daily",
        "window_start": None,
        "window_end": None,
        "metric": "cost_usd",
        "limit": 0.2,
        "spent": 0.2,
        "reserved": 0.0,
        "estimate": 0.2,
        "on_exceed": "wait",
    }
    # room again (a bigger budget): the waiting run goes, its reason cleared
    budget.max_cost_usd = Decimal("0.5")
    budget.save()
    budget_cache_clear()
    run = _drain(sid)
    assert (run.status, run.waiting_reason) == ("completed", "")


def test_over_budget_runs_fail_when_the_budget_says_so(alice: User) -> None:
    Budget.objects.create(owner=alice, window="monthly", max_tokens=1500, on_exceed="fail")
    first_sid, _ = _submit(alice)
    assert _drain(first_sid).status == "completed"  # 0 < 1500: admitted, spends 2000
    sid, _ = _submit(alice)
    run = _drain(sid)
    assert run.status == "failed"
    assert run.error["code"] == "provider_quota_exceeded"
    assert run.error["details"]["budget"]["metric"] == "tokens"
    assert (run.cost_usd, run.token_usage) == (Decimal(0), {})
    assert _types(run) == ["error_occurred", "run_failed"]  # never reached a provider
    assert run.metadata["budget"]["refused"]["limit"] == 1500


def test_the_database_is_the_truth_when_the_ledger_forgets(alice: User) -> None:
    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("0.2"))
    first_sid, _ = _submit(alice)
    first = _drain(first_sid)
    ledger = budget_ledger()
    assert isinstance(ledger, LocalBudgetLedger)
    ledger.forget(alice.pk, budget_window("daily", first.started_at).key)  # type: ignore[arg-type]
    sid, _ = _submit(alice)
    assert _drain(sid).status == "pending"  # reseeded from the runs: 0.2 spent


def test_a_run_of_unknown_cost_is_charged_its_reservation(alice: User, settings: Any) -> None:
    settings.ASM_COST_RATES = {}
    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("0.3"))
    sid, _ = _submit(alice)
    run = _drain(sid)
    assert (run.status, run.cost_usd) == ("completed", None)
    assert run.metadata["budget"]["charged_cost_usd"] == 0.2
    assert run.metadata["budget"]["cost_known"] is False
    ledger = budget_ledger()
    assert isinstance(ledger, LocalBudgetLedger)
    ledger.forget(alice.pk, budget_window("daily", run.started_at).key)  # type: ignore[arg-type]
    second, _ = _submit(alice)
    assert _drain(second).status == "completed"  # 0.2 (from metadata) < 0.3
    third, _ = _submit(alice)
    assert _drain(third).status == "pending"  # 0.4 >= 0.3


def test_the_policy_cap_is_the_reservation(alice: User) -> None:
    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("5"))
    options = {**OPTS, "policy": {"limits": {"max_cost_usd": 0.7, "max_total_tokens": 4000}}}
    sid, _ = _submit(alice, options)
    run = _drain(sid)
    assert run.status == "completed"
    assert (
        run.metadata["budget"]["reserved_cost_usd"],
        run.metadata["budget"]["reserved_tokens"],
    ) == (
        0.7,
        4000,
    )


def test_owners_without_budgets_and_disabled_budgets_are_not_gated(alice: User) -> None:
    bob = User.objects.create_user("bob")
    Budget.objects.create(owner=bob, window="daily", max_cost_usd=Decimal("0"))
    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("0"), enabled=False)
    sid, _ = _submit(alice)
    run = _drain(sid)
    assert run.status == "completed"
    assert "budget" not in run.metadata
    bob_sid, _ = _submit(bob)
    assert _drain(bob_sid).status == "pending"  # a zero budget admits nothing


def test_usage_endpoint_and_admin_show_the_budget_window(alice: User) -> None:
    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("1"), max_tokens=10**6)
    sid, _ = _submit(alice)
    _drain(sid)
    body = bearer_client(alice).get("/api/v1/usage").json()
    [budget] = body["budgets"]
    assert (budget["window"], budget["max_cost_usd"], budget["max_tokens"]) == ("daily", 1.0, 10**6)
    assert (budget["spent_cost_usd"], budget["spent_tokens"], budget["reservations"]) == (
        0.2,
        2000,
        0,
    )
    assert budget["window_start"] < budget["window_end"]
    shown = BudgetAdmin(Budget, admin_site=None).current_window(Budget.objects.get())  # type: ignore[arg-type]
    assert "spent 2,000 tokens, $0.2" in shown


def test_a_budget_needs_a_limit_and_one_per_window(alice: User) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(owner=alice, window="daily")
    Budget.objects.create(owner=alice, window="daily", max_tokens=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(owner=alice, window="daily", max_tokens=2)


def test_the_admin_edits_budgets(alice: User, client: Any) -> None:
    root = User.objects.create_superuser("root", password="pw")
    client.force_login(root)
    response = client.post(
        "/admin/agent_sessions/budget/add/",
        {
            "owner": alice.pk,
            "window": "daily",
            "max_cost_usd": "1.5",
            "on_exceed": "fail",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get()
    assert (budget.max_cost_usd, budget.on_exceed) == (Decimal("1.5"), "fail")
    page = client.get(f"/admin/agent_sessions/budget/{budget.pk}/change/")
    assert page.status_code == 200
    assert "spent 0 tokens" in page.content.decode()
    assert client.get("/admin/agent_sessions/budget/").status_code == 200


def test_each_run_that_reaches_the_head_of_its_queue_says_why_once(alice: User) -> None:
    from runs.services import run_cancel

    Budget.objects.create(owner=alice, window="daily", max_cost_usd=Decimal("0"))
    sid, first = _submit(alice)
    second = run_submit(session_id=sid, input="spend", options=OPTS).run
    _drain(sid)
    _drain(sid)
    assert [e.type for e in Event.objects.filter(run=first)] == ["error_occurred"]
    assert Run.objects.get(id=second.id).waiting_reason  # held too, no event yet
    assert not Event.objects.filter(run=second).exists()
    run_cancel(run_id=first.id)
    _drain(sid)
    _drain(sid)
    assert [e.type for e in Event.objects.filter(run=second)] == ["error_occurred"]
