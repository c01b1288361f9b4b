"""`runs.executor.RunExecutor` on the in-memory store (no DB, no mocks of our code).

Real collaborators: `InMemorySessionStore` (wrapped to count `event_append_many` calls),
`ProviderRegistry`, `EchoProvider`; small fakes: `FakeProvider` (implements the Provider
protocol, runs a per-test script) and a `cancel_requested` callable backed by a set.

Pinned here: the stored order (message_sent per input message, run_started, the provider's
events, exactly ONE terminal event), the terminal status of every ending (completed, failed,
cancelled, timeout), usage accumulation, provider metadata merged into the session without
losing concurrent changes, capability checks before the provider is called, streamed-chunk
batching with a bounded flush interval, and fencing by attempt number.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.event_types import TERMINAL_RUN_EVENT_TYPES
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import EventRecord, NewEvent, RunRecord, SessionRecord, utcnow
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.echo import ECHO_MODEL, EchoProvider
from runs.providers.registry import ProviderRegistry
from tests.fakes.scripted_provider import FakeProvider, ok

OWNER = "w1"
TERMINAL = frozenset(t.value for t in TERMINAL_RUN_EVENT_TYPES)
FAST = ExecutorConfig(
    lease_ms=15_000,
    flush_interval_s=0.05,
    tick_s=0.01,
    cancel_grace_s=1.0,
    db_cancel_check_s=0.05,
)
TWO_MESSAGES = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello big world"},
    ]
}


# --------------------------------------------------------------------------- fakes
class CountingStore(InMemorySessionStore):
    """The in-memory store, recording every `event_append_many` call (time, event types)."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[tuple[float, list[str]]] = []

    def event_append_many(
        self, session_id: uuid.UUID, events: Sequence[NewEvent]
    ) -> list[EventRecord]:
        self.appends.append((time.monotonic(), [str(e.type) for e in events]))
        return super().event_append_many(session_id, events)


def chunk(emit: Emit, text: str) -> None:
    emit("message_streamed", {"delta": text, "content": text})


# --------------------------------------------------------------------------- harness
class Harness:
    def __init__(self) -> None:
        self.store = CountingStore()
        self.cancels: set[uuid.UUID] = set()
        self._timers: list[threading.Timer] = []

    def claimed_run(
        self,
        *,
        provider: str = "echo",
        input: Any = None,
        options: Mapping[str, Any] | None = None,
        lease_ms: int = 15_000,
    ) -> RunRecord:
        session = self.store.session_save(
            SessionRecord(agent_id="agent-1", metadata={"keep": "me"})
        )
        pending = self.store.run_save(
            RunRecord(
                session_id=session.id,
                provider=provider,
                input={"prompt": "hello big world"} if input is None else input,
                options=dict(options or {}),
            )
        )
        run = self.store.run_claim_next(session.id, owner=OWNER, lease_ms=lease_ms)
        assert run is not None
        assert (run.id, run.status, run.attempt) == (pending.id, "running", 1)
        return run

    def execute(
        self, run: RunRecord, *providers: FakeProvider, config: ExecutorConfig = FAST
    ) -> RunRecord | None:
        executor = RunExecutor(
            self.store,
            ProviderRegistry([EchoProvider(), *providers]),
            owner=OWNER,
            config=config,
            cancel_requested=self.cancels.__contains__,
        )
        return executor.execute(run)

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay_s, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
            timer.join(timeout=2)

    def events(self, run: RunRecord) -> list[EventRecord]:
        return self.store.event_list(run.session_id)

    def types(self, run: RunRecord) -> list[str]:
        return [e.type for e in self.events(run)]

    def the_terminal(self, run: RunRecord) -> EventRecord:
        """The run's one terminal event (fails unless there is exactly one, and last)."""
        events = self.events(run)
        terminals = [e for e in events if e.type in TERMINAL]
        assert len(terminals) == 1, [e.type for e in events]
        assert events[-1] == terminals[0]
        assert terminals[0].run_id == run.id
        return terminals[0]

    def assert_dense(self, run: RunRecord) -> None:
        seqs = [e.sequence_number for e in self.events(run)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert self.store.latest_sequence(run.session_id) == len(seqs)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# --------------------------------------------------------------------------- success path
def test_plain_echo_run_stores_the_spec_order_with_dense_sequences(h: Harness) -> None:
    run = h.claimed_run(input=TWO_MESSAGES)
    finished = h.execute(run)
    assert finished is not None
    events = h.events(run)
    assert [e.type for e in events] == [
        "message_sent",
        "message_sent",
        "run_started",
        "message_streamed",
        "message_streamed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
        "run_completed",
    ]
    h.assert_dense(run)
    assert all(e.run_id == run.id and e.provider == "echo" for e in events)
    assert [e.data for e in events[:2]] == TWO_MESSAGES["messages"]
    assert events[2].data == {"provider": "echo", "attempt": 1}
    assert [e.data["delta"] for e in events[3:6]] == ["hello ", "big ", "world"]
    assert events[6].data == {"content": "hello big world", "role": "assistant"}
    assert events[7].data == {"input_tokens": 5, "output_tokens": 3}
    assert events[8].data == {
        "stop_reason": "end_turn",
        "token_usage": {"input_tokens": 5, "output_tokens": 3},
    }
    assert h.the_terminal(run) == events[-1]


def test_completed_run_record_has_output_usage_and_provider_metadata(h: Harness) -> None:
    run = h.claimed_run(input=TWO_MESSAGES)
    finished = h.execute(run)
    stored = h.store.run_get(run.id)
    assert finished == stored
    assert stored.status == "completed"
    assert stored.output == {
        "content": "hello big world",
        "stop_reason": "end_turn",
        "tool_calls": [],
    }
    assert stored.error is None
    assert stored.token_usage == {"input_tokens": 5, "output_tokens": 3}
    assert stored.ended_at is not None
    assert (stored.lease_owner, stored.lease_expires_at) == ("", None)
    provider_session_id = f"echo_{run.session_id.hex}"
    assert stored.metadata == {
        "provider": "echo",
        "provider_session_id": provider_session_id,
        "model": ECHO_MODEL,
        "cost_supported": True,  # echo is free (runs.costs.ECHO_COST_RATES)
    }
    assert stored.cost_usd == 0
    assert h.store.session_get(run.session_id).metadata == {
        "keep": "me",
        "provider": "echo",
        "provider_session_id": provider_session_id,
        "provider_session_ids": {"echo": provider_session_id},
        "model": ECHO_MODEL,
    }


def test_provider_metadata_merge_keeps_a_concurrent_session_change(h: Harness) -> None:
    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        # Someone else (the API) changes the session while the run is in flight.
        session = h.store.session_get(ctx.session_id)
        session.metadata["title"] = "renamed"
        h.store.session_save(session)
        emit("message_received", {"content": "ok", "role": "assistant"})
        return ok(provider_session_id="ps-1", model="m-1")

    fake = FakeProvider(script)
    run = h.claimed_run(provider="fake")
    finished = h.execute(run, fake)
    assert finished is not None
    assert finished.status == "completed"
    assert fake.calls[0].session_metadata == {"keep": "me"}
    assert finished.metadata == {
        "provider": "fake",
        "provider_session_id": "ps-1",
        "model": "m-1",
        "cost_supported": True,  # no tokens used: costs 0 without rates
    }
    assert h.store.session_get(run.session_id).metadata == {
        "keep": "me",
        "title": "renamed",
        "provider": "fake",
        "provider_session_id": "ps-1",
        "provider_session_ids": {"fake": "ps-1"},
        "model": "m-1",
    }
    h.the_terminal(run)


def test_token_usage_accumulates_from_usage_events(h: Harness) -> None:
    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        emit("token_usage_updated", {"input_tokens": 10, "output_tokens": 5})
        emit("message_received", {"content": "ok", "role": "assistant"})
        emit("token_usage_updated", {"input_tokens": 3, "output_tokens": 7})
        return ok(token_usage={"input_tokens": 999})

    run = h.claimed_run(provider="fake")
    finished = h.execute(run, FakeProvider(script))
    assert finished is not None
    assert finished.token_usage == {"input_tokens": 13, "output_tokens": 12}
    assert h.store.run_get(run.id).token_usage == {"input_tokens": 13, "output_tokens": 12}
    assert h.the_terminal(run).type == "run_completed"


def test_result_usage_is_used_when_no_usage_events(h: Harness) -> None:
    run = h.claimed_run(provider="fake")
    finished = h.execute(
        run, FakeProvider(lambda *_: ok(token_usage={"input_tokens": 4, "output_tokens": 2}))
    )
    assert finished is not None
    assert finished.token_usage == {"input_tokens": 4, "output_tokens": 2}
    assert h.the_terminal(run).type == "run_completed"


def test_provider_emitted_run_events_are_dropped(h: Harness) -> None:
    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        emit("run_started", {"model": "m"})
        emit("message_received", {"content": "ok", "role": "assistant"})
        emit("run_failed", {"error_code": "provider_error"})
        emit("run_completed", {"stop_reason": "x"})
        emit("run_cancelled", {})
        emit("run_timeout", {"timeout_ms": 1})
        return ok()

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    finished = h.execute(run, FakeProvider(script))
    assert finished is not None
    assert finished.status == "completed"
    assert h.types(run) == ["message_sent", "run_started", "message_received", "run_completed"]
    assert h.events(run)[1].data == {"provider": "fake", "attempt": 1}
    assert h.the_terminal(run).type == "run_completed"


# --------------------------------------------------------------------------- capabilities
def test_unknown_provider_fails_validation_error_without_calling_anything(h: Harness) -> None:
    fake = FakeProvider()
    run = h.claimed_run(provider="nope")
    finished = h.execute(run, fake)
    assert finished is not None
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "validation_error"
    assert h.types(run) == ["run_failed"]
    assert h.the_terminal(run).data["error_code"] == "validation_error"
    assert fake.calls == []
    assert fake.cancelled == []


def test_missing_required_capability_fails_before_the_provider_is_called(h: Harness) -> None:
    fake = FakeProvider(capabilities=[Capability(CapabilityType.STREAMING, "streaming")])
    run = h.claimed_run(
        provider="fake", options={"required_capabilities": ["streaming", "code_execution"]}
    )
    finished = h.execute(run, fake)
    assert fake.calls == []
    assert finished is not None
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "missing_required_capability"
    assert finished.error["details"] == {"missing": ["code_execution"]}
    # The check happens before message_sent / run_started: only the terminal is written.
    assert h.types(run) == ["run_failed"]
    assert h.the_terminal(run).data == {
        "error_code": "missing_required_capability",
        "error_message": "Missing required capabilities: code_execution",
    }


def test_missing_optional_capability_completes_degraded(h: Harness) -> None:
    run = h.claimed_run(options={"optional_capabilities": ["file_access", "streaming"]})
    finished = h.execute(run)
    assert finished is not None
    assert finished.status == "completed"
    started = next(e for e in h.events(run) if e.type == "run_started")
    assert started.data == {
        "provider": "echo",
        "attempt": 1,
        "capabilities": {
            "status": "degraded",
            "warnings": ["Optional capability 'file_access' is not supported by the provider"],
        },
    }
    h.the_terminal(run)


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("after_chunks", "streamed"),
    [(0, 0), (2, 2), (99, 3)],
    ids=["before-first-chunk", "mid-stream", "after-stream"],
)
def test_echo_failure_fails_the_run_and_keeps_earlier_events(
    h: Harness, after_chunks: int, streamed: int
) -> None:
    fail = {"code": "provider_rate_limited", "message": "slow down", "after_chunks": after_chunks}
    run = h.claimed_run(options={"adapter_opts": {"fail": fail}})
    finished = h.execute(run)
    assert finished is not None
    assert finished.status == "failed"
    assert finished.error == {
        "code": "provider_rate_limited",
        "message": "slow down",
        "details": {"provider": "echo", "scripted": True},
    }
    assert finished.output is None
    assert h.types(run) == [
        "message_sent",
        "run_started",
        *["message_streamed"] * streamed,
        "run_failed",
    ]
    assert h.the_terminal(run).data == {
        "error_code": "provider_rate_limited",
        "error_message": "slow down",
    }
    h.assert_dense(run)


def test_non_asm_exception_is_internal_error(h: Harness) -> None:
    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        chunk(emit, "partial")
        raise RuntimeError("boom")

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    finished = h.execute(run, FakeProvider(script))
    assert finished is not None
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "internal_error"
    assert "RuntimeError: boom" in finished.error["message"]
    assert h.types(run) == ["message_sent", "run_started", "message_streamed", "run_failed"]
    assert h.the_terminal(run).data["error_code"] == "internal_error"


# --------------------------------------------------------------------------- cancel / timeout
HANG = {"adapter_opts": {"hang": True}}


def test_cancel_via_callable_while_echo_hangs(h: Harness) -> None:
    run = h.claimed_run(options=HANG)
    h.later(0.1, lambda: h.cancels.add(run.id))
    finished, elapsed = timed(lambda: h.execute(run))
    assert elapsed < 1.0
    assert finished is not None
    assert finished.status == "cancelled"
    assert finished.error is not None
    assert finished.error["code"] == "cancelled"
    types = h.types(run)
    assert types[-3:] == ["message_received", "token_usage_updated", "run_cancelled"]
    assert "run_failed" not in types
    assert h.the_terminal(run).type == "run_cancelled"
    assert h.store.run_get(run.id).status == "cancelled"


def test_cancel_recorded_only_in_the_store_is_honoured(h: Harness) -> None:
    run = h.claimed_run(options=HANG)

    def record_cancel() -> None:
        stored = h.store.run_get(run.id)
        stored.cancel_requested_at = utcnow()
        h.store.run_save(stored)

    h.later(0.1, record_cancel)
    config = ExecutorConfig(tick_s=0.01, flush_interval_s=0.05, db_cancel_check_s=0.05)
    finished, elapsed = timed(lambda: h.execute(run, config=config))
    assert h.cancels == set()
    assert elapsed < 1.0
    assert finished is not None
    assert finished.status == "cancelled"
    assert h.the_terminal(run).type == "run_cancelled"
    assert "run_failed" not in h.types(run)


def test_cancelled_run_is_not_overwritten_by_the_providers_error(h: Harness) -> None:
    fake_errors: list[str] = []

    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        chunk(emit, "partial")
        token.wait(2)
        fake_errors.append("raised")
        raise AsmError("provider_error", "connection reset while stopping")

    fake = FakeProvider(script)
    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    h.later(0.1, lambda: h.cancels.add(run.id))
    finished, elapsed = timed(lambda: h.execute(run, fake))
    assert elapsed < 1.0
    assert fake_errors == ["raised"]
    assert fake.cancelled == [run.id]  # provider.cancel was called too
    assert finished is not None
    assert finished.status == "cancelled"
    assert finished.error is not None
    assert finished.error["code"] == "cancelled"
    assert h.types(run) == ["message_sent", "run_started", "message_streamed", "run_cancelled"]


def test_provider_ignoring_cancel_is_abandoned_after_the_grace_period(h: Harness) -> None:
    done = threading.Event()

    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        time.sleep(0.6)  # ignores the token
        chunk(emit, "too late")
        done.set()
        return ok()

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    h.later(0.05, lambda: h.cancels.add(run.id))
    config = ExecutorConfig(tick_s=0.01, cancel_grace_s=0.1)
    finished, elapsed = timed(lambda: h.execute(run, FakeProvider(script), config=config))
    assert elapsed < 0.5
    assert finished is not None
    assert finished.status == "cancelled"
    assert done.wait(2)
    # The late chunk and result change nothing.
    assert h.types(run) == ["message_sent", "run_started", "run_cancelled"]
    assert h.store.run_get(run.id).status == "cancelled"


def test_timeout_ends_timeout_with_one_run_timeout(h: Harness) -> None:
    run = h.claimed_run(options={"timeout_ms": 150, **HANG})
    finished, elapsed = timed(lambda: h.execute(run))
    assert 0.15 <= elapsed < 1.0
    assert finished is not None
    assert finished.status == "timeout"
    assert finished.error is not None
    assert finished.error["code"] == "timeout"
    terminal = h.the_terminal(run)
    assert (terminal.type, terminal.data) == ("run_timeout", {"timeout_ms": 150})
    assert "run_failed" not in h.types(run)


def test_cancel_after_the_provider_returned_still_completes(h: Harness) -> None:
    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        emit("message_received", {"content": "ok", "role": "assistant"})
        time.sleep(0.1)  # the supervisor is idle, waiting for the next item
        h.cancels.add(ctx.run_id)  # the cancel arrives as the provider returns
        return ok()

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    # A long tick: the supervisor's next look is at the provider's end-of-stream marker.
    config = ExecutorConfig(tick_s=1.0, db_cancel_check_s=5.0)
    finished = h.execute(run, FakeProvider(script), config=config)
    assert run.id in h.cancels
    assert finished is not None
    assert finished.status == "completed"
    assert h.the_terminal(run).type == "run_completed"
    assert "run_cancelled" not in h.types(run)
    assert h.store.run_get(run.id).status == "completed"


# --------------------------------------------------------------------------- batching
def test_token_rate_stream_is_appended_in_few_batches(h: Harness) -> None:
    run = h.claimed_run(input={"prompt": "tok"}, options={"adapter_opts": {"repeat": 300}})
    finished = h.execute(run)
    assert finished is not None
    assert finished.status == "completed"
    streamed = [e for e in h.events(run) if e.type == "message_streamed"]
    assert len(streamed) == 300
    assert "".join(e.data["delta"] for e in streamed) == " ".join(["tok"] * 300)
    assert [e.sequence_number for e in streamed] == list(range(3, 303))
    stream_calls = [types for _, types in h.store.appends if "message_streamed" in types]
    assert len(h.store.appends) < 30
    assert sum(types.count("message_streamed") for types in stream_calls) == 300
    h.assert_dense(run)
    h.the_terminal(run)


def test_chunks_before_a_silent_gap_are_flushed_within_the_interval(h: Harness) -> None:
    seen: dict[str, Any] = {}

    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        for word in ("a ", "b ", "c"):
            chunk(emit, word)
        seen["emitted_at"] = time.monotonic()
        time.sleep(0.2)
        seen["visible"] = [
            e.data["delta"] for e in h.store.event_list(ctx.session_id, types="message_streamed")
        ]
        time.sleep(0.1)
        return ok()

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    finished = h.execute(run, FakeProvider(script))
    assert finished is not None
    assert finished.status == "completed"
    assert seen["visible"] == ["a ", "b ", "c"]  # before the provider returned
    flushed_at = next(t for t, types in h.store.appends if "message_streamed" in types)
    assert flushed_at - seen["emitted_at"] < 0.2
    assert h.the_terminal(run).type == "run_completed"


# --------------------------------------------------------------------------- fencing
def _requeue(store: InMemorySessionStore, run_id: uuid.UUID) -> RunRecord:
    """What the reaper does to a run whose lease it judged lost: back to pending."""
    stored = store.run_get(run_id)
    stored.status, stored.lease_owner, stored.lease_expires_at = "pending", "", None
    return store.run_save(stored)


def _reclaim(store: InMemorySessionStore, run_id: uuid.UUID) -> RunRecord:
    """Requeued and claimed again by another worker: a newer attempt is running."""
    stored = store.run_get(run_id)
    stored.attempt += 1
    stored.lease_owner = "w2"
    return store.run_save(stored)


@pytest.mark.parametrize("take_back", [_requeue, _reclaim], ids=["requeued", "reclaimed"])
def test_lost_lease_stops_the_provider_and_writes_no_terminal(
    h: Harness, take_back: Callable[[InMemorySessionStore, uuid.UUID], RunRecord]
) -> None:
    taken: dict[str, RunRecord] = {}

    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        taken["record"] = take_back(h.store, ctx.run_id)
        token.wait(2)
        return ok(provider_session_id="late", model="late")

    fake = FakeProvider(script)
    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    config = ExecutorConfig(lease_ms=300, tick_s=0.01)  # renews every 0.1 s
    finished, elapsed = timed(lambda: h.execute(run, fake, config=config))
    assert finished is None
    assert elapsed < 1.0
    assert fake.cancelled == [run.id]
    assert h.store.run_get(run.id) == taken["record"]  # not overwritten
    assert not any(t in TERMINAL for t in h.types(run))
    assert h.types(run) == ["message_sent", "run_started"]


def test_late_result_of_a_reaped_attempt_is_fenced(h: Harness) -> None:
    taken: dict[str, RunRecord] = {}

    def script(ctx: RunContext, emit: Emit, token: CancelToken) -> ProviderResult:
        taken["record"] = _reclaim(h.store, ctx.run_id)
        emit("message_received", {"content": "late", "role": "assistant"})
        return ok(output={"content": "late"}, token_usage={"input_tokens": 1})

    run = h.claimed_run(provider="fake", input={"prompt": "hi"})
    finished = h.execute(run, FakeProvider(script))  # no lease renewal before the end
    assert finished is None
    stored = h.store.run_get(run.id)
    assert stored == taken["record"]
    assert (stored.status, stored.attempt, stored.lease_owner) == ("running", 2, "w2")
    assert (stored.output, stored.token_usage, stored.ended_at) == (None, {}, None)
    assert not any(t in TERMINAL for t in h.types(run))


def test_run_finish_twice_for_the_same_attempt_is_fenced(h: Harness) -> None:
    run = h.claimed_run()
    finished = h.execute(run)
    assert finished is not None
    assert finished.status == "completed"
    again = h.store.run_finish(
        run.id,
        attempt=run.attempt,
        status="failed",
        output=None,
        error={"code": "internal_error", "message": "late"},
        token_usage={},
        metadata={"late": True},
        terminal=NewEvent(type="run_failed", data={"error_code": "internal_error"}, run_id=run.id),
    )
    assert again is None
    assert h.store.run_get(run.id) == finished
    assert h.the_terminal(run).type == "run_completed"
