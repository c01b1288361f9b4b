"""The SessionStore run-ownership contract (asm_core.store), run against every store.

`run_claim_next`, `run_renew_lease`, `run_finish` (fenced by attempt number, terminal status
and terminal event in one step) and `session_merge_metadata`. The `store` fixture gives the
in-memory and the Django store; the integration tier re-runs these `contract` tests on
PostgreSQL. Only the port's methods are used.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from asm_core.errors import AsmError
from asm_core.records import NewEvent, RunRecord, SessionRecord, utcnow
from asm_core.store import SessionStore
from tests.threads import in_threads

pytestmark = pytest.mark.contract

T = TypeVar("T")
LEASE_MS = 30_000


# --------------------------------------------------------------------------- helpers
def new_session(store: SessionStore, **fields: Any) -> SessionRecord:
    fields.setdefault("agent_id", "agent-1")
    return store.session_save(SessionRecord(**fields))


def new_run(store: SessionStore, session: SessionRecord, **fields: Any) -> RunRecord:
    return store.run_save(RunRecord(session_id=session.id, **fields))


def claim(store: SessionStore, session: SessionRecord, owner: str = "w1") -> RunRecord:
    claimed = store.run_claim_next(session.id, owner=owner, lease_ms=LEASE_MS)
    assert claimed is not None
    return claimed


def msg(content: str = "hi") -> NewEvent:
    return NewEvent(type="message_sent", data={"role": "user", "content": content})


def terminal_for(status: str, run_id: uuid.UUID, **fields: Any) -> NewEvent:
    terminals: dict[str, tuple[str, dict[str, Any]]] = {
        "completed": ("run_completed", {"stop_reason": "end_turn"}),
        "failed": ("run_failed", {"error_code": "provider_error", "error_message": "x"}),
        "cancelled": ("run_cancelled", {}),
        "timeout": ("run_timeout", {"timeout_ms": 1000}),
    }
    type_, data = terminals[status]
    return NewEvent(type=type_, data=data, run_id=run_id, provider="echo", **fields)


def finish(
    store: SessionStore, run: RunRecord, *, attempt: int | None = None, status: str = "completed"
) -> RunRecord | None:
    return store.run_finish(
        run.id,
        attempt=run.attempt if attempt is None else attempt,
        status=status,
        output={"content": "done"},
        error=None,
        token_usage={"input_tokens": 1},
        metadata={},
        terminal=terminal_for(status, run.id),
    )


def close_to(value: datetime | None, expected: datetime, slack_s: float = 5.0) -> bool:
    return value is not None and abs((value - expected).total_seconds()) <= slack_s


# --------------------------------------------------------------------------- run_claim_next
def test_claim_next_takes_the_oldest_pending_run(store: SessionStore) -> None:
    session = new_session(store)
    now = utcnow()
    newer = new_run(store, session, created_at=now)
    older = new_run(store, session, created_at=now - timedelta(seconds=10))
    new_run(store, session, status="completed", created_at=now - timedelta(seconds=20))

    before = utcnow()
    claimed = claim(store, session, owner="worker-7")
    assert claimed.id == older.id
    assert claimed.status == "running"
    assert claimed.attempt == 1
    assert claimed.lease_owner == "worker-7"
    assert close_to(claimed.lease_expires_at, before + timedelta(milliseconds=LEASE_MS))
    assert close_to(claimed.started_at, before)
    stored = store.run_get(older.id)
    assert (stored.status, stored.attempt, stored.lease_owner) == ("running", 1, "worker-7")
    assert stored.lease_expires_at == claimed.lease_expires_at
    assert store.run_get(newer.id).status == "pending"


def test_claim_next_increments_the_attempt_of_a_requeued_run(store: SessionStore) -> None:
    session = new_session(store)
    requeued = new_run(store, session, attempt=2, max_attempts=3)
    assert claim(store, session).attempt == 3
    assert store.run_get(requeued.id).attempt == 3


def test_claim_next_is_none_when_nothing_is_pending(store: SessionStore) -> None:
    session = new_session(store)
    assert store.run_claim_next(session.id, owner="w1", lease_ms=LEASE_MS) is None
    done = new_run(store, session, status="completed")
    new_run(store, session, status="cancelled")
    assert store.run_claim_next(session.id, owner="w1", lease_ms=LEASE_MS) is None
    assert store.run_get(done.id).status == "completed"


def test_claim_next_is_none_while_the_session_has_a_running_run(store: SessionStore) -> None:
    session = new_session(store)
    first = new_run(store, session, created_at=utcnow() - timedelta(seconds=5))
    second = new_run(store, session)
    running = claim(store, session)
    assert running.id == first.id
    assert store.run_claim_next(session.id, owner="w2", lease_ms=LEASE_MS) is None
    assert store.run_get(second.id).status == "pending"
    # Once the running run has ended, the next one can be claimed.
    assert finish(store, running) is not None
    assert claim(store, session, owner="w2").id == second.id


def test_a_running_run_elsewhere_does_not_block_a_claim(store: SessionStore) -> None:
    busy, idle = new_session(store), new_session(store)
    new_run(store, busy, status="running", attempt=1, lease_owner="w9")
    waiting = new_run(store, idle)
    assert claim(store, idle).id == waiting.id


# --------------------------------------------------------------------------- run_renew_lease
def test_renew_lease_extends_the_lease_for_its_owner_and_attempt(store: SessionStore) -> None:
    session = new_session(store)
    new_run(store, session)
    run = claim(store, session, owner="w1")
    before = utcnow()
    assert store.run_renew_lease(run.id, attempt=run.attempt, owner="w1", lease_ms=600_000)
    renewed = store.run_get(run.id)
    assert close_to(renewed.lease_expires_at, before + timedelta(milliseconds=600_000))
    assert renewed.status == "running"
    assert renewed.lease_owner == "w1"


def test_renew_lease_refuses_wrong_owner_attempt_or_ended_run(store: SessionStore) -> None:
    session = new_session(store)
    new_run(store, session)
    run = claim(store, session, owner="w1")
    expires = store.run_get(run.id).lease_expires_at
    assert not store.run_renew_lease(run.id, attempt=run.attempt, owner="w2", lease_ms=600_000)
    assert not store.run_renew_lease(run.id, attempt=run.attempt + 1, owner="w1", lease_ms=600_000)
    assert not store.run_renew_lease(uuid.uuid4(), attempt=1, owner="w1", lease_ms=600_000)
    assert store.run_get(run.id).lease_expires_at == expires
    assert finish(store, run) is not None
    assert not store.run_renew_lease(run.id, attempt=run.attempt, owner="w1", lease_ms=600_000)
    assert store.run_get(run.id).lease_expires_at is None


def test_renew_lease_refuses_a_pending_run(store: SessionStore) -> None:
    session = new_session(store)
    pending = new_run(store, session, attempt=1, lease_owner="w1")
    assert not store.run_renew_lease(pending.id, attempt=1, owner="w1", lease_ms=600_000)


# --------------------------------------------------------------------------- run_finish
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "timeout"])
def test_run_finish_writes_the_outcome_and_exactly_the_terminal_event(
    store: SessionStore, status: str
) -> None:
    session = new_session(store, metadata={"s": 1})
    new_run(store, session, metadata={"a": 1, "b": "old"})
    store.event_append(session.id, msg())
    run = claim(store, session)
    event_id = uuid.uuid4()
    terminal = terminal_for(status, run.id, id=event_id)
    error = None if status == "completed" else {"code": status, "message": "m"}

    before = utcnow()
    finished = store.run_finish(
        run.id,
        attempt=run.attempt,
        status=status,
        output={"content": "done"},
        error=error,
        token_usage={"input_tokens": 3, "output_tokens": 4},
        metadata={"b": "new", "model": "m-1"},
        terminal=terminal,
    )
    assert finished is not None
    stored = store.run_get(run.id)
    for record in (finished, stored):
        assert record.status == status
        assert record.output == {"content": "done"}
        assert record.error == error
        assert record.token_usage == {"input_tokens": 3, "output_tokens": 4}
        assert record.metadata == {"a": 1, "b": "new", "model": "m-1"}
        assert close_to(record.ended_at, before)
        assert (record.lease_owner, record.lease_expires_at) == ("", None)
        assert record.attempt == run.attempt
    events = store.event_list(session.id)
    assert [e.sequence_number for e in events] == [1, 2]
    written = events[1]
    assert (written.id, written.type, written.data) == (event_id, terminal.type, terminal.data)
    assert (written.run_id, written.provider) == (run.id, "echo")
    assert store.latest_sequence(session.id) == 2
    assert store.session_get(session.id).metadata == {"s": 1}  # the run's, not the session's


def test_run_finish_with_a_wrong_attempt_is_fenced(store: SessionStore) -> None:
    session = new_session(store)
    new_run(store, session)
    run = claim(store, session)
    assert finish(store, run, attempt=run.attempt - 1) is None
    assert finish(store, run, attempt=run.attempt + 1) is None
    stored = store.run_get(run.id)
    assert (stored.status, stored.output, stored.ended_at) == ("running", None, None)
    assert stored.lease_owner == "w1"
    assert store.event_list(session.id) == []


def test_run_finish_of_a_run_not_running_is_fenced(store: SessionStore) -> None:
    session = new_session(store)
    pending = new_run(store, session, attempt=1)
    assert finish(store, pending) is None
    assert store.run_get(pending.id).status == "pending"
    assert finish(store, RunRecord(session_id=session.id, attempt=1)) is None  # unknown run

    run = claim(store, session)
    assert finish(store, run, status="cancelled") is not None
    assert finish(store, run) is None  # a second finish of the same attempt
    assert store.run_get(run.id).status == "cancelled"
    assert [e.type for e in store.event_list(session.id)] == ["run_cancelled"]


@pytest.mark.parametrize("status", ["running", "pending"])
def test_run_finish_to_a_non_terminal_status_is_invalid_transition(
    store: SessionStore, status: str
) -> None:
    session = new_session(store)
    new_run(store, session)
    run = claim(store, session)
    with pytest.raises(AsmError) as excinfo:
        store.run_finish(
            run.id,
            attempt=run.attempt,
            status=status,
            output=None,
            error=None,
            token_usage={},
            metadata={},
            terminal=terminal_for("completed", run.id),
        )
    assert excinfo.value.code == "invalid_transition"
    assert store.run_get(run.id).status == "running"
    assert store.event_list(session.id) == []


# --------------------------------------------------------------------------- session_merge_metadata
def test_session_merge_metadata_merges_keys_and_keeps_the_others(store: SessionStore) -> None:
    session = new_session(store, metadata={"keep": 1, "over": "old"})
    before = store.session_get(session.id).updated_at
    store.session_merge_metadata(session.id, {"over": "new", "add": [1, 2]})
    merged = store.session_get(session.id)
    assert merged.metadata == {"keep": 1, "over": "new", "add": [1, 2]}
    assert merged.updated_at >= before
    assert (merged.agent_id, merged.status) == (session.agent_id, session.status)


def test_session_merge_metadata_of_unknown_session_is_session_not_found(
    store: SessionStore,
) -> None:
    with pytest.raises(AsmError) as excinfo:
        store.session_merge_metadata(uuid.uuid4(), {"a": 1})
    assert excinfo.value.code == "session_not_found"


# --------------------------------------------------------------------------- concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_have_exactly_one_winner(store: SessionStore) -> None:
    session = new_session(store)
    pending = new_run(store, session)
    got = in_threads(
        10, lambda i: store.run_claim_next(session.id, owner=f"w{i}", lease_ms=LEASE_MS)
    )
    winners = [r for r in got if r is not None]
    assert len(winners) == 1
    assert winners[0].id == pending.id
    assert winners[0].attempt == 1
    stored = store.run_get(pending.id)
    assert (stored.status, stored.attempt, stored.lease_owner) == (
        "running",
        1,
        winners[0].lease_owner,
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_with_several_pending_runs_keep_one_running(
    store: SessionStore,
) -> None:
    session = new_session(store)
    now = utcnow()
    runs = [new_run(store, session, created_at=now + timedelta(seconds=i)) for i in range(3)]
    got = in_threads(
        10, lambda i: store.run_claim_next(session.id, owner=f"w{i}", lease_ms=LEASE_MS)
    )
    winners = [r for r in got if r is not None]
    assert len(winners) == 1
    assert winners[0].id == runs[0].id
    assert [r.status for r in store.run_list(session.id)] == ["running", "pending", "pending"]
