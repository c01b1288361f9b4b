"""Provider health shared by the fleet: real `celery worker` PROCESSES, PostgreSQL and Redis.

Two worker pools of one process each (`tests/integration/celery_workers.py`), each consuming
a queue of its own, so the test decides which process executes a run, and sharing one Redis
key prefix (so one health store). Registered providers: `echo` and `flaky`
(`tests/fakes/routing_providers.py`: fails with `provider_unavailable` after one chunk when
the prompt says `[flaky-down]`). Cooldown 5 s.

1. Worker A runs a `[flaky-down]` run routed `prefer: [flaky, echo]`: flaky fails after a
   chunk, the run fails over to echo, and Redis records flaky's failure and cooldown.
2. Worker B (another process) runs a healthy prompt with the same routing: it skips flaky
   (cooling) without calling it and routes to echo.
3. After the cooldown, worker B routes to flaky again, and its success resets the health.

Plus the Redis store's Lua against the pure rule (`health_after_failure`), which the
process-local store applies too.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from events.models import Event
from runs.health import RedisHealthStore
from runs.models import Run
from runs.routing import HEALTHY, health_after_failure
from runs.services import run_submit, run_wait
from sessions.services import session_create
from tests.fakes.routing_providers import FLAKY_TRIGGER
from tests.integration.celery_workers import WorkerPool, use_pool

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROVIDERS = ["runs.providers.echo.EchoProvider", "tests.fakes.routing_providers.FlakyEchoProvider"]
COOLDOWN_MS = 5000
ROUTING = {"prefer": ["flaky", "echo"]}


@pytest.fixture
def two_workers(
    settings, transactional_db, tmp_path, request
) -> Iterator[tuple[WorkerPool, WorkerPool]]:
    env = {"ASM_PROVIDERS": ",".join(PROVIDERS)}
    overrides = {"ASM_ROUTER_COOLDOWN_MS": COOLDOWN_MS, "ASM_ROUTER_FAILURE_THRESHOLD": 1}
    a = WorkerPool(1, log_dir=tmp_path, overrides=overrides, extra_env=env)
    b = WorkerPool(
        1, log_dir=tmp_path, overrides=overrides, extra_env={**env, "ASM_REDIS_PREFIX": a.prefix}
    )
    b.prefix = a.prefix  # one fleet: one Redis key space
    settings.ASM_PROVIDERS = PROVIDERS
    failed_before = request.session.testsfailed
    a.start()
    try:
        b.start()
        try:
            yield a, b
        finally:
            if request.session.testsfailed > failed_before:
                sys.stderr.write(a.logs(tail=100) + "\n" + b.logs(tail=100) + "\n")
            b.stop()
    finally:
        a.stop()


def _routed_run(prompt: str) -> Run:
    session = session_create(agent_id="router-health")
    created = run_submit(
        session_id=session.id,
        input={"prompt": prompt},
        provider="router",
        options={"routing": ROUTING},
    )
    run = run_wait(run_id=created.run.id, timeout_s=30)
    assert run.status == "completed", (run.status, run.error)
    return run


def test_a_failure_seen_by_worker_a_makes_worker_b_skip_the_provider_until_cooldown_ends(
    two_workers, settings
):
    from runs.bootstrap import provider_health

    pool_a, pool_b = two_workers

    # 1. Worker A: flaky streams a chunk, fails retryably; the run fails over to echo.
    with use_pool(pool_a, settings):
        first = _routed_run(f"{FLAKY_TRIGGER} hello")
        health = provider_health()
        assert isinstance(health, RedisHealthStore)
        snap = health.snapshot(["flaky", "echo"])
    assert first.routed_provider == "echo"
    routing = first.metadata["routing"]
    assert [(a["provider"], a["status"]) for a in routing["attempts"]] == [
        ("flaky", "failed"),
        ("echo", "completed"),
    ]
    partial = Event.objects.get(run=first, type="message_streamed", data__routing_attempt=1)
    assert partial.data["routed_provider"] == "flaky"
    assert partial.data["delta"] == "partial "
    assert first.output["content"] == f"{FLAKY_TRIGGER} hello"
    flaky = snap.state("flaky")
    assert flaky.consecutive_failures == 1
    assert flaky.last_error_code == "provider_unavailable"
    assert flaky.cooling(snap.now_ms)
    assert "echo" not in snap.states
    cooldown_until_ms = flaky.cooldown_until_ms
    assert cooldown_until_ms is not None

    # 2. Worker B (another process): flaky is cooling, so B does not even call it.
    with use_pool(pool_b, settings):
        second = _routed_run("hello again")
        now_ms = provider_health().snapshot([]).now_ms
    assert now_ms < cooldown_until_ms, "worker B ran after the cooldown: machine too slow?"
    assert second.routed_provider == "echo"
    routing = second.metadata["routing"]
    assert routing["routing_attempt"] == 1
    assert routing["routing_candidates"] == ["echo"]
    assert routing["skipped"]["flaky"].startswith("cooling down until")
    assert [a["provider"] for a in routing["attempts"]] == ["echo"]
    assert not Event.objects.filter(run=second, data__routed_provider="flaky").exists()

    # 3. After the cooldown worker B uses flaky again; the success resets its health.
    with use_pool(pool_b, settings):
        wait_s = (cooldown_until_ms - provider_health().snapshot([]).now_ms) / 1000 + 0.1
        time.sleep(max(0.0, wait_s))
        third = _routed_run("hello at last")
        after = provider_health().snapshot(["flaky"])
    assert third.routed_provider == "flaky"
    assert third.metadata["routing"]["routing_candidates"] == ["flaky", "echo"]
    assert third.output["content"] == "hello at last"
    assert after.states == {}


def test_redis_store_applies_the_same_rule_as_the_pure_function():
    prefix = f"asm-test-{uuid.uuid4()}:"
    store = RedisHealthStore.from_url(
        django_settings.REDIS_URL, prefix=prefix, failure_threshold=3, cooldown_ms=700
    )
    try:
        expected = HEALTHY
        for i in range(4):
            state = store.record_failure("p", f"code{i}")
            assert state.last_failure_ms is not None
            expected = health_after_failure(
                expected,
                now_ms=state.last_failure_ms,
                code=f"code{i}",
                failure_threshold=3,
                cooldown_ms=700,
            )
            assert state == expected
            snap = store.snapshot(["p"])
            assert snap.state("p") == expected
            assert snap.state("p").cooling(snap.now_ms) is (i >= 2)
        assert store.snapshot(["p"], rotate=True).rr_counter == 1
        assert store.snapshot(["p"], rotate=True).rr_counter == 2
        store.record_success("p")
        assert store.snapshot(["p"]).states == {}
        store.record_failure("p", "x")
        store.reset("p")
        assert store.snapshot(["p"]).states == {}
    finally:
        keys = list(store.client.scan_iter(match=f"{prefix}*"))
        if keys:
            store.client.delete(*keys)
        store.client.close()
