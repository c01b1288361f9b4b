"""Owner budgets across REAL `celery worker` processes, PostgreSQL and Redis.

The acceptance race (issue 6): 20 concurrent runs by one user against a budget that fits 5
of them. At most 5 (+1 reservation of slack) are dispatched; the rest wait (or fail, as the
budget says); the recorded spend never exceeds the budget plus one run's reservation.

Workers: 2 processes with 6 threads each (`-P threads -c 6`), so up to 12 drains reserve at
the same moment. Costs are deterministic: the echo provider reports 1000 input + 1000 output
tokens per run (`adapter_opts.usage`) at 100 USD per million each (`ASM_COST_RATES`), so a
run costs 0.2 USD, and the reservation per run is 0.2 USD (`ASM_BUDGET_RESERVE_USD`). Each
run streams 5 chunks 150 ms apart, so the admitted runs overlap.

Also: the ledger's Lua scripts against the same rules the process-local ledger follows
(tests/unit/runs/test_budgets.py), and 40 threads racing for 5 reservations in Redis.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections
from django.db.models import Sum

from events.models import Event
from runs.budgets import (
    Entry,
    RedisBudgetLedger,
    WindowLimit,
    budget_ledger,
    budget_window,
)
from runs.models import Run
from runs.services import run_cancel, run_submit
from sessions.models import Budget
from sessions.services import session_create
from tests.integration.celery_workers import Reaper, WorkerPool, use_pool, worker_pool

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
RUNS = 20
COST = Decimal("0.2")  # per run, and the reservation per run
RATES = {"echo": {"*": {"input": 100, "output": 100}}}
OPTIONS = {
    "adapter_opts": {"usage": {"input_tokens": 1000, "output_tokens": 1000}, "delay_ms": 150}
}
PROMPT = "one two three four five"
TIMINGS: dict[str, float] = {
    "ASM_BUDGET_RESERVE_USD": float(COST),
    "ASM_BUDGET_RESERVE_TOKENS": 2000,
    "ASM_BUDGET_CACHE_S": 0.2,
    "ASM_LIMIT_RETRY_S": 0.3,
}


@pytest.fixture
def pool(settings, transactional_db, tmp_path, request) -> Iterator[WorkerPool]:
    failed_before = request.session.testsfailed
    settings.ASM_COST_RATES = RATES
    with (
        worker_pool(
            2,
            log_dir=tmp_path,
            overrides=TIMINGS,
            extra_env={"ASM_COST_RATES": json.dumps(RATES)},
            pool="threads",
            concurrency=6,
        ) as workers,
        use_pool(workers, settings),
        Reaper(0.5) as reaper,
    ):
        budget_ledger.cache_clear()  # this process's ledger: the pool's Redis prefix
        try:
            yield workers
            for run_id in Run.objects.filter(status__in=["pending", "running"]).values_list(
                "id", flat=True
            ):
                run_cancel(run_id=run_id)
            _wait_for(workers, "every run to end", 15, lambda: not _active())
            assert "Traceback" not in workers.logs(), workers.logs(tail=80)
        finally:
            budget_ledger.cache_clear()
            if request.session.testsfailed > failed_before:
                sys.stderr.write(f"\n===== worker logs =====\n{workers.logs(tail=80)}\n")
        assert not reaper.errors, reaper.errors


def _active() -> bool:
    return Run.objects.filter(status="running").exists()


def _wait_for(pool: WorkerPool, what: str, timeout: float, probe: Callable[[], T]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{pool.logs(tail=60)}")
        time.sleep(0.05)


def _submit_concurrently(owner: User, n: int) -> list[uuid.UUID]:
    sessions = [session_create(agent_id=f"budget-{i}", owner=owner) for i in range(n)]
    barrier = threading.Barrier(n)
    ids: list[uuid.UUID] = []
    lock = threading.Lock()

    def submit(session_id: uuid.UUID) -> None:
        try:
            barrier.wait()
            run = run_submit(session_id=session_id, input=PROMPT, options=OPTIONS).run
            with lock:
                ids.append(run.id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(s.id,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == n
    return ids


def _runs(ids: list[uuid.UUID]) -> list[Run]:
    return list(Run.objects.filter(id__in=ids))


def _dispatched(ids: list[uuid.UUID]) -> int:
    """Runs that reached a worker's executor (claimed and kept: attempt >= 1, not refused)."""
    return sum(
        1
        for run in Run.objects.filter(id__in=ids, attempt__gte=1)
        if (run.error or {}).get("code") != "provider_quota_exceeded"
    )


def _spend(ids: list[uuid.UUID]) -> Decimal:
    return Run.objects.filter(id__in=ids).aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


def _errors(run_id: uuid.UUID) -> list[Event]:
    return list(Event.objects.filter(run_id=run_id, type="error_occurred"))


def _ledger_spent(owner: User) -> int:
    from django.utils import timezone

    key = budget_window("daily", timezone.now()).key
    return int(budget_ledger().snapshot(owner.pk, key)["spent_cost"])


# --------------------------------------------------------------------------- the acceptance race


def test_20_concurrent_runs_against_a_budget_for_5_wait(pool: WorkerPool) -> None:
    alice = User.objects.create_user("alice")
    budget = Budget.objects.create(owner=alice, window="daily", max_cost_usd=5 * COST)
    ids = _submit_concurrently(alice, RUNS)

    def settled() -> bool:
        runs = _runs(ids)
        done = [r for r in runs if r.status == "completed"]
        waiting = [r for r in runs if r.status == "pending" and r.waiting_reason]
        return len(done) + len(waiting) == RUNS and len(done) >= 5

    _wait_for(pool, "5 runs completed and the rest waiting", 60, settled)
    time.sleep(2.0)  # several more retry rounds: nothing else may start
    runs = _runs(ids)
    completed = [r for r in runs if r.status == "completed"]
    waiting = [r for r in runs if r.status == "pending"]
    assert 5 <= len(completed) <= 6, [r.status for r in runs]
    assert _dispatched(ids) == len(completed)
    assert len(waiting) == RUNS - len(completed)
    assert _spend(ids) <= budget.max_cost_usd + COST
    assert all(r.cost_usd == COST for r in completed)
    for run in waiting:
        assert run.attempt == 0
        assert run.waiting_reason.startswith("Owner budget exceeded: the daily cost_usd limit")
        [error] = _errors(run.id)  # one event per waiting run, however many retries
        assert error.data["error_code"] == "provider_quota_exceeded"
        assert error.data["budget"]["on_exceed"] == "wait"
        assert error.data["budget"]["spent"] + error.data["budget"]["reserved"] >= 1.0
    assert _ledger_spent(alice) == int(_spend(ids) * 1_000_000)  # Redis agrees with the DB

    # Raise the budget to fit 10: 5 more go (the waiting runs resume by themselves).
    before = len(completed)
    budget.max_cost_usd = 10 * COST
    budget.save()

    def ten_done() -> bool:
        return Run.objects.filter(id__in=ids, status="completed").count() >= 10

    _wait_for(pool, "10 runs completed", 60, ten_done)
    _wait_for(pool, "no run executing", 30, lambda: not _active())
    time.sleep(1.5)
    completed_now = Run.objects.filter(id__in=ids, status="completed").count()
    assert 10 <= completed_now <= before + 6
    assert _spend(ids) <= budget.max_cost_usd + COST

    # Redis forgets everything it knew of the window: the spend is recomputed from the runs,
    # and nothing more is dispatched.
    key = budget_window("daily", Run.objects.get(id=ids[0]).created_at).key
    ledger = budget_ledger()
    assert isinstance(ledger, RedisBudgetLedger)
    ledger.forget(alice.pk, key)
    time.sleep(2.0)
    assert Run.objects.filter(id__in=ids, status="completed").count() == completed_now
    assert _dispatched(ids) == completed_now
    assert _ledger_spent(alice) == int(_spend(ids) * 1_000_000)


def test_20_concurrent_runs_against_a_budget_for_5_fail(pool: WorkerPool) -> None:
    alice = User.objects.create_user("alice")
    budget = Budget.objects.create(
        owner=alice, window="monthly", max_cost_usd=5 * COST, on_exceed="fail"
    )
    ids = _submit_concurrently(alice, RUNS)
    _wait_for(
        pool,
        "every run finished",
        60,
        lambda: Run.objects.filter(id__in=ids, status__in=["completed", "failed"]).count() == RUNS,
    )
    runs = _runs(ids)
    completed = [r for r in runs if r.status == "completed"]
    failed = [r for r in runs if r.status == "failed"]
    assert 5 <= len(completed) <= 6
    assert len(failed) == RUNS - len(completed)
    assert _spend(ids) <= budget.max_cost_usd + COST
    for run in failed:
        assert run.error["code"] == "provider_quota_exceeded"
        types = list(
            Event.objects.filter(run_id=run.id)
            .order_by("sequence_number")
            .values_list("type", flat=True)
        )
        assert types == ["error_occurred", "run_failed"]  # no provider was ever called
        assert run.cost_usd == 0


# --------------------------------------------------------------------------- the ledger in Redis


@pytest.fixture
def ledger() -> Iterator[RedisBudgetLedger]:
    prefix = f"asm-test-{uuid.uuid4()}:"
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield RedisBudgetLedger(client, prefix)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _reserve(ledger: RedisBudgetLedger, run: str, limit: int, **kw: Any) -> str:
    args: dict[str, Any] = {"cost": 300, "tokens": 10, "ttl_ms": 60_000, "key_ttl_s": 60} | kw
    return ledger.reserve(1, run, [WindowLimit("d1", limit, None)], **args).outcome


def test_the_lua_ledger_follows_the_rules(ledger: RedisBudgetLedger) -> None:
    verdict = ledger.reserve(
        1, "r", [WindowLimit("d1", 1000, None)], cost=1, tokens=1, ttl_ms=1, key_ttl_s=1
    )
    assert (verdict.outcome, verdict.seed) == ("seed", (0,))
    ledger.seed(1, "d1", [Entry("old", 100, 0)], 60)
    assert [_reserve(ledger, f"r{i}", 1000) for i in range(5)] == ["ok", "ok", "ok", "deny", "deny"]
    denied = ledger.reserve(
        1, "x", [WindowLimit("d1", 1000, None)], cost=300, tokens=1, ttl_ms=1, key_ttl_s=1
    )
    assert (denied.metric, denied.spent, denied.reserved, denied.limit) == (
        "cost_usd",
        100,
        900,
        1000,
    )
    assert _reserve(ledger, "r1", 1000) == "ok"  # already holding: re-admitted
    ledger.settle(1, "r0", ["d1"], Entry("r0", 250, 7), 60)
    ledger.settle(1, "r0", ["d1"], Entry("r0", 250, 7), 60)
    snap = ledger.snapshot(1, "d1")
    assert (snap["spent_cost"], snap["spent_tokens"], snap["reserved_cost"]) == (350, 7, 600)
    ledger.seed(1, "d1", [Entry("r0", 250, 7), Entry("new", 50, 1)], 60)
    assert ledger.snapshot(1, "d1")["spent_cost"] == 400
    assert _reserve(ledger, "dying", 10**6, ttl_ms=0) == "ok"
    time.sleep(0.01)
    later = ledger.reserve(
        1, "y", [WindowLimit("d1", 10**6, None)], cost=1, tokens=1, ttl_ms=60_000, key_ttl_s=1
    )
    assert (later.outcome, later.stale) == ("ok", ("dying",))
    tokens = ledger.reserve(
        1, "t", [WindowLimit("d2", None, 5)], cost=0, tokens=5, ttl_ms=1, key_ttl_s=1
    )
    assert tokens.outcome == "seed"
    ledger.seed(1, "d2", [Entry("a", 0, 5)], 60)
    tokens = ledger.reserve(
        1, "t", [WindowLimit("d2", None, 5)], cost=0, tokens=5, ttl_ms=1, key_ttl_s=1
    )
    assert (tokens.outcome, tokens.metric) == ("deny", "tokens")


def test_40_threads_race_for_5_reservations_in_redis(ledger: RedisBudgetLedger) -> None:
    ledger.seed(1, "d1", [], 60)
    barrier = threading.Barrier(40)
    admitted: list[str] = []

    def go(i: int) -> None:
        barrier.wait()
        if _reserve(ledger, f"r{i}", 1500) == "ok":
            admitted.append(f"r{i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5
    snap = ledger.snapshot(1, "d1")
    assert (snap["reserved_cost"], snap["reservations"]) == (1500, 5)
