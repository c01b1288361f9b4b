"""The `router` provider end to end through the real `RunExecutor` (in-memory store), plus
the service path (`run_submit`/`run_once` on the embedded worker, SQLite).

No mocks: real `RunExecutor`, `InMemorySessionStore`, `ProviderRegistry`, `RouterProvider`
and `LocalHealthStore` (with a fake clock where time matters); providers are the scriptable
`RouteFake`s of `tests/fakes/routing_providers.py`.

Pinned: the seed's router tests (spec 8.8: capability + prefer/exclude, retryable failover,
non-retryable stop, cooldown, cancel routing, routing hints through execution and run_once);
failover after streamed chunks (the failed attempt's events stay, marked by
`routing_attempt`; the output is the successful attempt's); every forwarded event carries
the routing keys; the run records its routing decision (metadata `routing`, and the
`routed_provider` column through the Django store).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.conf import settings

from asm_core.memory_store import InMemorySessionStore
from asm_core.records import EventRecord, RunRecord, SessionRecord
from runs.executor import ExecutorConfig, RunExecutor
from runs.health import LocalHealthStore
from runs.providers.registry import ProviderRegistry
from runs.providers.router import RouterProvider
from tests.fakes.routing_providers import RouteFake, caps

OWNER = "w1"
FAST = ExecutorConfig(
    lease_ms=15_000, flush_interval_s=0.02, tick_s=0.01, cancel_grace_s=2.0, db_cancel_check_s=0.05
)
ROUTING_KEYS = ("routed_provider", "routing_attempt", "routing_candidates")


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


class Routed:
    """A store, a registry of fakes plus the router, and helpers to run through it."""

    def __init__(self, *providers: RouteFake, cooldown_ms: int = 30_000, **router: Any) -> None:
        self.store = InMemorySessionStore()
        self.clock = Clock()
        self.health = LocalHealthStore(cooldown_ms=cooldown_ms, clock_ms=self.clock)
        self.registry = ProviderRegistry(providers)
        self.router = RouterProvider(self.registry, self.health, **router)
        self.registry.register(self.router)
        self.cancels: set[uuid.UUID] = set()

    def run(self, routing: Mapping[str, Any] | None = None, **options: Any) -> RunRecord:
        if routing is not None:
            options["routing"] = dict(routing)
        session = self.store.session_save(SessionRecord(agent_id="routing"))
        self.store.run_save(
            RunRecord(
                session_id=session.id, provider="router", input={"prompt": "hi"}, options=options
            )
        )
        run = self.store.run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
        assert run is not None
        executor = RunExecutor(
            self.store,
            self.registry,
            owner=OWNER,
            config=FAST,
            cancel_requested=self.cancels.__contains__,
        )
        finished = executor.execute(run)
        assert finished is not None
        return finished

    def events(self, run: RunRecord) -> list[EventRecord]:
        return [e for e in self.store.event_list(run.session_id) if e.run_id == run.id]

    def provider_events(self, run: RunRecord) -> list[EventRecord]:
        skip = {"message_sent", "run_started", "run_completed", "run_failed", "run_cancelled"}
        return [e for e in self.events(run) if e.type not in skip]


def failing(name: str, code: str, after_chunks: int = 0, **kw: Any) -> RouteFake:
    return RouteFake(name, fail=code, fail_after_chunks=after_chunks, **kw)


# --------------------------------------------------------------------------- spec 8.8
def test_seed_capability_prefer_exclude_runs_amp_only():
    amp = RouteFake("amp", caps("tool:bash"))
    codex = RouteFake("codex", caps("tool:bash"))
    claude = RouteFake("claude", caps("sampling:chat"))
    r = Routed(amp, codex, claude)
    run = r.run(
        {
            "prefer": ["claude", "amp", "codex"],
            "exclude": ["claude"],
            "required_capabilities": [{"type": "tool", "name": "bash"}],
        }
    )
    assert run.status == "completed"
    assert run.output == {"content": "amp says hi"}
    assert (len(amp.calls), len(codex.calls), len(claude.calls)) == (1, 0, 0)
    routing = run.metadata["routing"]
    assert routing["routed_provider"] == "amp"
    assert routing["routing_candidates"] == ["amp", "codex"]
    assert routing["skipped"] == {"claude": "missing required capabilities"}


def test_seed_retryable_failover_uses_the_secondary_and_counts_the_primary_failure():
    primary = failing("primary", "provider_timeout")
    secondary = RouteFake("secondary")
    r = Routed(primary, secondary)
    run = r.run({"prefer": ["primary", "secondary"], "max_attempts": 2})
    assert run.status == "completed"
    assert run.output == {"content": "secondary says hi"}
    state = r.health.snapshot(["primary", "secondary"]).states
    assert state["primary"].consecutive_failures == 1
    assert state["primary"].last_failure_ms == r.clock.ms
    assert state["primary"].last_error_code == "provider_timeout"
    assert "secondary" not in state  # healthy
    routing = run.metadata["routing"]
    assert routing["routed_provider"] == "secondary"
    assert routing["routing_attempt"] == 2
    assert (routing["failover_from"], routing["failover_reason"]) == (
        "primary",
        "provider_timeout",
    )
    assert [(a["provider"], a["status"]) for a in routing["attempts"]] == [
        ("primary", "failed"),
        ("secondary", "completed"),
    ]


def test_seed_non_retryable_error_is_returned_and_the_secondary_never_runs():
    primary = failing("primary", "provider_authentication_failed")
    secondary = RouteFake("secondary")
    r = Routed(primary, secondary)
    run = r.run({"prefer": ["primary", "secondary"]})
    assert run.status == "failed"
    assert run.error["code"] == "provider_authentication_failed"
    assert secondary.calls == []
    assert r.health.snapshot(["primary"]).states == {}  # non-retryable: health unchanged
    assert run.metadata["routing"]["routed_provider"] == "primary"
    assert run.error["details"]["routing"]["attempts"][0]["error_code"] == (
        "provider_authentication_failed"
    )
    assert not [e for e in r.events(run) if e.type == "error_occurred"]


def test_seed_cooldown_skips_the_primary_until_it_ends():
    primary = failing("primary", "provider_unavailable")
    secondary = RouteFake("secondary")
    r = Routed(primary, secondary, cooldown_ms=200)
    routing = {"prefer": ["primary", "secondary"]}

    first = r.run(routing)  # fails over
    assert first.metadata["routing"]["routed_provider"] == "secondary"
    assert len(primary.calls) == 1

    primary.fail = None  # would succeed now, but it is cooling
    r.clock.ms += 150
    second = r.run(routing)
    assert second.metadata["routing"]["routed_provider"] == "secondary"
    assert second.metadata["routing"]["routing_attempt"] == 1
    assert second.metadata["routing"]["skipped"]["primary"].startswith("cooling down")
    assert len(primary.calls) == 1  # skipped

    r.clock.ms += 100  # 250 ms after the failure
    third = r.run(routing)
    assert third.metadata["routing"]["routed_provider"] == "primary"
    assert len(primary.calls) == 2
    assert r.health.snapshot(["primary"]).states == {}  # the success reset it


def test_seed_cancel_is_forwarded_to_the_provider_handling_the_run_only():
    primary = RouteFake("primary", wait_s=5.0)
    secondary = RouteFake("secondary")
    r = Routed(primary, secondary)
    seen: list[str | None] = []

    def cancel_soon() -> None:
        while not primary.calls:
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)  # the 500 ms-class execution is under way
        seen.append(r.router.active_provider(primary.calls[0].run_id))
        r.cancels.add(primary.calls[0].run_id)

    t = threading.Thread(target=cancel_soon, daemon=True)
    t.start()
    run = r.run({"prefer": ["primary", "secondary"]})
    t.join(5)
    assert run.status == "cancelled"
    assert seen == ["primary"]
    assert primary.cancelled == [run.id]
    assert secondary.cancelled == []
    assert secondary.calls == []  # no failover after a cancel
    assert r.health.snapshot(["primary"]).states == {}  # a cancel is not a failure
    assert r.router.active_provider(run.id) is None


def test_seed_routing_hints_through_execution_choose_the_provider_with_bash():
    amp = RouteFake("amp", caps("tool:read"))
    codex = RouteFake("codex", caps("tool:bash"))
    r = Routed(amp, codex)
    run = r.run({"prefer": ["amp"], "required_capabilities": [{"type": "tool", "name": "bash"}]})
    assert run.metadata["routing"]["routed_provider"] == "codex"
    assert amp.calls == []
    # The run's own required_capabilities route too.
    run = r.run({"prefer": ["amp"]}, required_capabilities=[{"type": "tool", "name": "bash"}])
    assert run.metadata["routing"]["routed_provider"] == "codex"


# --------------------------------------------------------------------------- failover mid-stream
def test_failover_after_streamed_chunks_keeps_the_failed_attempt_marked_and_its_output_out():
    primary = failing("primary", "provider_rate_limited", after_chunks=2, reply="one two three")
    secondary = RouteFake("secondary", reply="fine answer")
    r = Routed(primary, secondary)
    run = r.run({"prefer": ["primary", "secondary"]})

    assert run.status == "completed"
    assert run.output == {"content": "fine answer"}
    events = r.provider_events(run)
    first = [e for e in events if e.data["routing_attempt"] == 1]
    second = [e for e in events if e.data["routing_attempt"] == 2]
    assert [e.type for e in first] == ["message_streamed", "message_streamed", "error_occurred"]
    assert "".join(e.data["delta"] for e in first[:2]) == "one two "
    assert first[-1].data["error_code"] == "provider_rate_limited"
    assert first[-1].data["failover_to"] == "secondary"
    assert all(e.data["routed_provider"] == "primary" for e in first)
    assert all("failover_from" not in e.data for e in first)
    assert [e.type for e in second] == [
        "message_streamed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    for e in second:
        assert e.data["routed_provider"] == "secondary"
        assert e.data["failover_from"] == "primary"
        assert e.data["failover_reason"] == "provider_rate_limited"
    for e in events:
        assert all(k in e.data for k in ROUTING_KEYS)
        assert e.data["routing_candidates"] == ["primary", "secondary"]
    # The successful attempt's streamed text is the output; the failed one's is not in it.
    assert (
        "".join(e.data["delta"] for e in second if e.type == "message_streamed")
        == (run.output["content"])
    )
    attempts = run.metadata["routing"]["attempts"]
    assert attempts[0]["provider"] == "primary"
    assert attempts[0]["error_code"] == "provider_rate_limited"
    assert attempts[1]["token_usage"] == {"input_tokens": 1, "output_tokens": 2}


def test_every_attempt_failing_retryably_returns_the_last_error_with_the_decision():
    a = failing("a", "provider_timeout")
    b = failing("b", "provider_unavailable")
    c = RouteFake("c")
    r = Routed(a, b, c)
    run = r.run({"max_attempts": 2})
    assert run.status == "failed"
    assert run.error["code"] == "provider_unavailable"
    assert c.calls == []
    routing = run.metadata["routing"]
    assert routing["routed_provider"] == "b"
    assert routing["routing_candidates"] == ["a", "b", "c"]
    assert [x["status"] for x in routing["attempts"]] == ["failed", "failed"]
    snap = r.health.snapshot(["a", "b"])
    assert {n: s.consecutive_failures for n, s in snap.states.items()} == {"a": 1, "b": 1}
    # The next run skips both (cooling) and goes straight to c.
    run = r.run({"max_attempts": 2})
    assert run.metadata["routing"]["routed_provider"] == "c"
    assert run.metadata["routing"]["routing_attempt"] == 1


def test_all_cooling_fails_the_run_with_provider_unavailable_and_calls_nothing():
    a = failing("a", "provider_timeout")
    r = Routed(a)
    r.run()
    run = r.run()
    assert run.status == "failed"
    assert run.error["code"] == "provider_unavailable"
    assert run.error["message"].startswith("No eligible provider")
    assert len(a.calls) == 1
    assert run.metadata["routing"]["routed_provider"] is None
    assert "a" in run.metadata["routing"]["skipped"]


def test_misconfigured_providers_are_skipped():
    broken = RouteFake("aaa", problem="no API key")
    good = RouteFake("bbb")
    r = Routed(broken, good)
    run = r.run()
    assert run.metadata["routing"]["routed_provider"] == "bbb"
    assert run.metadata["routing"]["skipped"] == {"aaa": "unavailable: aaa: no API key"}
    assert broken.calls == []


def test_a_provider_raising_a_plain_exception_is_provider_error_without_failover():
    class Exploding(RouteFake):
        def execute(self, context, emit, cancel_token):
            raise RuntimeError("boom")

    r = Routed(Exploding("a"), RouteFake("b"))
    run = r.run()
    assert run.status == "failed"
    assert run.error["code"] == "provider_error"
    assert "boom" in run.error["message"]


def test_the_candidate_gets_the_options_without_routing_and_its_own_session_id():
    a = RouteFake("a")
    r = Routed(a)
    run = r.run({"prefer": ["a"]}, adapter_opts={"x": 1})
    context = a.calls[0]
    assert "routing" not in context.options
    assert context.adapter_opts == {"x": 1}
    assert context.provider_session_id is None
    session = r.store.session_get(run.session_id)
    assert session.metadata["provider_session_ids"]["a"] == "a-thread"
    r.store.run_save(
        RunRecord(
            session_id=run.session_id,
            provider="router",
            input={"prompt": "again"},
            options={"routing": {"prefer": ["a"]}},
        )
    )
    again = r.store.run_claim_next(run.session_id, owner=OWNER, lease_ms=15_000)
    assert again is not None
    RunExecutor(r.store, r.registry, owner=OWNER, config=FAST).execute(again)
    assert a.calls[1].provider_session_id == "a-thread"


def test_round_robin_spreads_runs_over_the_candidates():
    fakes = [RouteFake(n) for n in ("a", "b", "c")]
    r = Routed(*fakes, policy={"strategy": "round_robin"})
    routed = [r.run().metadata["routing"]["routed_provider"] for _ in range(6)]
    assert routed == ["b", "c", "a", "b", "c", "a"]  # the shared counter advances per run


def test_the_default_policy_is_overridden_key_by_key():
    fakes = [RouteFake(n) for n in ("a", "b")]
    r = Routed(*fakes, policy={"prefer": ["b"], "max_attempts": 1})
    assert r.run().metadata["routing"]["routed_provider"] == "b"
    assert r.run({"prefer": ["a"]}).metadata["routing"]["routed_provider"] == "a"


def test_router_capabilities_are_the_union_of_its_members():
    r = Routed(RouteFake("a", caps("tool:bash", "streaming")), RouteFake("b", caps("streaming")))
    assert sorted((str(c.type), c.name) for c in r.router.capabilities()) == [
        ("streaming", "streaming"),
        ("tool", "bash"),
    ]


# --------------------------------------------------------------------------- the service path
@pytest.fixture
def routed_registry(settings) -> Iterator[None]:
    """The service's registry built from fakes (alpha: no bash; beta: bash), fresh health."""
    from runs.bootstrap import provider_registry

    settings.ASM_PROVIDERS = [
        "tests.fakes.routing_providers.AlphaProvider",
        "tests.fakes.routing_providers.BetaProvider",
    ]
    settings.ASM_ROUTER_POLICY = {}
    provider_registry.cache_clear()
    yield
    provider_registry.cache_clear()


@pytest.mark.django_db
def test_submitted_router_run_records_routed_provider_and_decision(routed_registry):
    from runs.bootstrap import build_executor
    from runs.models import Run
    from runs.services import run_submit
    from runs.store import DjangoSessionStore
    from sessions.services import session_create

    session = session_create(agent_id="routing")
    created = run_submit(
        session_id=session.id,
        input={"prompt": "hi"},
        provider="router",
        options={"routing": {"prefer": ["alpha"], "required_capabilities": ["tool"]}},
    )
    run = DjangoSessionStore().run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
    assert run is not None
    assert run.id == created.run.id
    build_executor(OWNER).execute(run, claimed=True)
    stored = Run.objects.get(id=run.id)
    assert stored.status == "completed"
    assert stored.provider == "router"
    assert stored.routed_provider == "alpha"
    assert stored.metadata["routing"]["routed_provider"] == "alpha"
    assert stored.output == {"content": "alpha says hi"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("provider", "routing", "field"),
    [
        ("router", {"prefer": ["nope"]}, "options.routing.prefer"),
        ("router", {"prefer": ["router"]}, "options.routing.prefer"),
        ("router", {"strategy": "fastest"}, "options.routing.strategy"),
        ("router", {"weights": {"alpha": 0}}, "options.routing.weights.alpha"),
        ("router", {"max_attempts": 0}, "options.routing.max_attempts"),
        ("router", {"colour": "red"}, "options.routing"),
        ("router", "alpha", "options.routing"),
        ("alpha", {"prefer": ["alpha"]}, "options.routing"),  # routing is for the router only
    ],
)
def test_bad_routing_options_are_refused_at_submit_and_store_nothing(
    routed_registry, provider, routing, field
):
    from asm_core.errors import AsmError
    from runs.models import Run
    from runs.services import run_submit
    from sessions.services import session_create

    session = session_create(agent_id="routing")
    with pytest.raises(AsmError) as info:
        run_submit(
            session_id=session.id,
            input={"prompt": "hi"},
            provider=provider,
            options={"routing": routing},
        )
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field
    assert not Run.objects.filter(session_id=session.id).exists()


@pytest.fixture
def embedded(routed_registry) -> Iterator[None]:
    from django.db import connections

    from workers.embedded import EmbeddedWorker

    worker = EmbeddedWorker(threads=2, reaper_interval_s=0.5).start()
    yield
    worker.stop()
    connections.close_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(bool(settings.REDIS_URL), reason="embedded mode runs without REDIS_URL")
def test_seed_run_once_routes_to_the_provider_with_bash(embedded):
    from runs.services import run_once

    result = run_once(
        input={"prompt": "hi"},
        provider="router",
        options={
            "routing": {
                "prefer": ["alpha"],
                "required_capabilities": [{"type": "tool", "name": "bash"}],
            }
        },
        timeout_s=10,
    )
    assert result["status"] == "completed"
    assert result["output"] == {"content": "beta says hi"}
    assert result["routing"]["routed_provider"] == "beta"
    assert result["routing"]["skipped"] == {"alpha": "missing required capabilities"}
