"""The SessionStore contract (spec 2.3-2.5, 3.2, 3.3), run against every store.

The `store` fixture (tests/conftest.py) gives the in-memory store and the Django store; the
integration tier re-runs these `contract` tests on PostgreSQL. Only the port's methods are
used, so the same assertions hold for every implementation.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from asm_core.errors import AsmError
from asm_core.records import EventRecord, NewEvent, RunRecord, SessionRecord
from asm_core.store import SessionStore
from tests.threads import in_threads

pytestmark = pytest.mark.contract

T = TypeVar("T")

# Spec 3.3 asks for 100 workers; 40 is enough to interleave and keeps the suite fast.
WORKERS = 40


# --------------------------------------------------------------------------- helpers
def new_session(store: SessionStore, **fields: Any) -> SessionRecord:
    fields.setdefault("agent_id", "agent-1")
    return store.session_save(SessionRecord(**fields))


def new_run(store: SessionStore, session: SessionRecord, **fields: Any) -> RunRecord:
    return store.run_save(RunRecord(session_id=session.id, **fields))


def msg(content: str = "hi", **fields: Any) -> NewEvent:
    return NewEvent(type="message_sent", data={"role": "user", "content": content}, **fields)


def seqs(events: list[EventRecord]) -> list[int]:
    return [e.sequence_number for e in events]


def error_code(excinfo: pytest.ExceptionInfo[AsmError]) -> str:
    return excinfo.value.code


# --------------------------------------------------------------------------- sessions
def test_session_save_then_get_round_trips(store: SessionStore) -> None:
    saved = new_session(
        store, context={"system_prompt": "be brief"}, metadata={"k": [1, 2]}, tags=["a", "b"]
    )
    got = store.session_get(saved.id)
    assert (got.id, got.agent_id, got.status) == (saved.id, "agent-1", "pending")
    assert got.context == {"system_prompt": "be brief"}
    assert got.metadata == {"k": [1, 2]}
    assert got.tags == ["a", "b"]


def test_session_get_unknown_is_session_not_found(store: SessionStore) -> None:
    with pytest.raises(AsmError) as excinfo:
        store.session_get(uuid.uuid4())
    assert error_code(excinfo) == "session_not_found"


def test_session_resave_shows_new_status(store: SessionStore) -> None:
    session = new_session(store)
    session.status = "active"
    store.session_save(session)
    assert store.session_get(session.id).status == "active"


def test_session_saved_three_times_is_one_session(store: SessionStore) -> None:
    session = SessionRecord(agent_id="agent-1")
    for _ in range(3):
        store.session_save(session)
    assert store.session_get(session.id).id == session.id
    assert [s.id for s in store.session_list()] == [session.id]


def test_session_list_returns_both(store: SessionStore) -> None:
    one, two = new_session(store), new_session(store, agent_id="agent-2")
    assert {s.id for s in store.session_list()} == {one.id, two.id}


def test_session_list_status_filter(store: SessionStore) -> None:
    pending = new_session(store)
    active = new_session(store, status="active")
    assert [s.id for s in store.session_list(status="pending")] == [pending.id]
    assert [s.id for s in store.session_list(status="active")] == [active.id]
    assert store.session_list(status="completed") == []


def test_session_list_agent_id_filter(store: SessionStore) -> None:
    a1 = new_session(store, agent_id="a")
    a2 = new_session(store, agent_id="a", status="active")
    new_session(store, agent_id="b")
    assert {s.id for s in store.session_list(agent_id="a")} == {a1.id, a2.id}
    assert [s.id for s in store.session_list(agent_id="a", status="active")] == [a2.id]
    assert store.session_list(agent_id="nobody") == []


def test_session_list_limit(store: SessionStore) -> None:
    for _ in range(3):
        new_session(store)
    assert len(store.session_list(limit=2)) == 2
    assert len(store.session_list(limit=10)) == 3
    assert len(store.session_list(limit=0)) == 3  # non-positive: ignored


# --------------------------------------------------------------------------- runs
def test_run_save_then_get_round_trips(store: SessionStore) -> None:
    session = new_session(store)
    saved = new_run(store, session, input={"prompt": "hello"}, provider="echo")
    got = store.run_get(saved.id)
    assert (got.id, got.session_id, got.status) == (saved.id, session.id, "pending")
    assert got.input == {"prompt": "hello"}
    assert got.provider == "echo"


def test_run_get_unknown_is_run_not_found(store: SessionStore) -> None:
    with pytest.raises(AsmError) as excinfo:
        store.run_get(uuid.uuid4())
    assert error_code(excinfo) == "run_not_found"


def test_run_resave_running_is_visible(store: SessionStore) -> None:
    session = new_session(store)
    run = new_run(store, session)
    run.status = "running"
    store.run_save(run)
    assert store.run_get(run.id).status == "running"
    active = store.run_get_active(session.id)
    assert active is not None
    assert active.id == run.id


def test_run_list_is_the_sessions_runs_oldest_first(store: SessionStore) -> None:
    session, other = new_session(store), new_session(store)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    runs = [
        RunRecord(session_id=session.id, created_at=base + timedelta(seconds=i)) for i in range(3)
    ]
    for run in reversed(runs):  # saved newest first
        store.run_save(run)
    new_run(store, other)
    assert [r.id for r in store.run_list(session.id)] == [r.id for r in runs]
    assert [r.id for r in store.run_list(session.id, limit=2)] == [r.id for r in runs[:2]]


def test_run_list_status_filter(store: SessionStore) -> None:
    session = new_session(store)
    new_run(store, session)
    done = new_run(store, session, status="completed")
    assert [r.id for r in store.run_list(session.id, status="completed")] == [done.id]


def test_run_list_unknown_session_is_empty(store: SessionStore) -> None:
    assert store.run_list(uuid.uuid4()) == []


def test_run_get_active_is_the_running_run_or_none(store: SessionStore) -> None:
    session = new_session(store)
    assert store.run_get_active(session.id) is None
    new_run(store, session)
    assert store.run_get_active(session.id) is None  # pending is not active
    running = new_run(store, session, status="running")
    active = store.run_get_active(session.id)
    assert active is not None
    assert active.id == running.id
    running.status = "completed"
    store.run_save(running)
    assert store.run_get_active(session.id) is None
    assert store.run_get_active(uuid.uuid4()) is None


def test_second_running_run_in_a_session_is_invalid_operation(store: SessionStore) -> None:
    session = new_session(store)
    first = new_run(store, session, status="running")
    second = new_run(store, session)
    second.status = "running"
    with pytest.raises(AsmError) as excinfo:
        store.run_save(second)
    assert error_code(excinfo) == "invalid_operation"
    assert store.run_get(second.id).status == "pending"  # the failed save changed nothing
    with pytest.raises(AsmError) as excinfo:
        store.run_save(RunRecord(session_id=session.id, status="running"))  # a new row too
    assert error_code(excinfo) == "invalid_operation"
    assert [r.id for r in store.run_list(session.id, status="running")] == [first.id]
    assert len(store.run_list(session.id)) == 2


def test_running_runs_in_different_sessions_are_fine(store: SessionStore) -> None:
    one, two = new_session(store), new_session(store)
    new_run(store, one, status="running")
    new_run(store, two, status="running")
    assert store.run_get_active(one.id) is not None
    assert store.run_get_active(two.id) is not None


def test_running_run_can_be_resaved(store: SessionStore) -> None:
    session = new_session(store)
    run = new_run(store, session, status="running")
    run.turn_count = 3
    store.run_save(run)
    assert store.run_get(run.id).turn_count == 3


def test_duplicate_idempotency_key_in_a_session_is_already_exists(store: SessionStore) -> None:
    session, other = new_session(store), new_session(store)
    first = new_run(store, session, idempotency_key="key-1")
    with pytest.raises(AsmError) as excinfo:
        new_run(store, session, idempotency_key="key-1")
    assert error_code(excinfo) == "already_exists"
    assert [r.id for r in store.run_list(session.id)] == [first.id]
    store.run_save(first)  # re-saving the same run keeps its key
    elsewhere = new_run(store, other, idempotency_key="key-1")  # another session: allowed
    assert store.run_get(elsewhere.id).idempotency_key == "key-1"


# --------------------------------------------------------------------------- events: append
def test_append_order_is_preserved(store: SessionStore) -> None:
    session, other = new_session(store), new_session(store)
    run = new_run(store, session)
    store.event_append(session.id, NewEvent(type="session_created", data={}))
    store.event_append(other.id, NewEvent(type="session_created", data={}))
    store.event_append(session.id, NewEvent(type="session_started"))
    store.event_append(session.id, NewEvent(type="run_started", run_id=run.id))
    got = store.event_list(session.id)
    assert [e.type for e in got] == ["session_created", "session_started", "run_started"]
    assert seqs(got) == [1, 2, 3]
    assert {e.session_id for e in got} == {session.id}


def test_appended_event_is_returned_as_stored(store: SessionStore) -> None:
    session = new_session(store)
    run = new_run(store, session)
    event_id = uuid.uuid4()
    new = NewEvent(
        type="message_sent",
        data={"role": "user", "content": "hello", "extra": {"n": 1}},
        run_id=run.id,
        metadata={"actor": "system"},
        provider="echo",
        id=event_id,
    )
    appended = store.event_append(session.id, new)
    assert appended.id == event_id
    assert appended.session_id == session.id
    assert appended.run_id == run.id
    assert appended.sequence_number == 1
    assert appended.data == {"role": "user", "content": "hello", "extra": {"n": 1}}
    assert appended.metadata == {"actor": "system"}
    assert appended.provider == "echo"
    assert appended.timestamp.tzinfo is not None
    assert store.event_list(session.id) == [appended]


def test_run_id_and_type_filters(store: SessionStore) -> None:
    session = new_session(store)
    run_a, run_b = new_run(store, session), new_run(store, session)
    store.event_append(session.id, NewEvent(type="session_created"))  # 1
    store.event_append(session.id, NewEvent(type="run_started", run_id=run_a.id))  # 2
    store.event_append(session.id, msg(run_id=run_a.id))  # 3
    store.event_append(session.id, NewEvent(type="run_started", run_id=run_b.id))  # 4
    store.event_append(session.id, msg(run_id=run_b.id))  # 5
    assert seqs(store.event_list(session.id, run_id=run_a.id)) == [2, 3]
    assert seqs(store.event_list(session.id, run_id=run_b.id)) == [4, 5]
    assert seqs(store.event_list(session.id, types="run_started")) == [2, 4]
    assert seqs(store.event_list(session.id, types=["run_started", "session_created"])) == [1, 2, 4]
    assert seqs(store.event_list(session.id, types=("message_sent",))) == [3, 5]
    assert seqs(store.event_list(session.id, types=[])) == [1, 2, 3, 4, 5]  # empty: no filter
    assert seqs(store.event_list(session.id, types="run_started", run_id=run_b.id)) == [4]
    assert store.event_list(session.id, types="run_failed") == []
    assert store.event_list(session.id, run_id=uuid.uuid4()) == []


def test_sequenced_appends_are_1_then_2(store: SessionStore) -> None:
    session = new_session(store)
    assert store.latest_sequence(session.id) == 0
    assert store.event_append(session.id, msg("one")).sequence_number == 1
    assert store.event_append(session.id, msg("two")).sequence_number == 2
    assert store.latest_sequence(session.id) == 2


def test_sequences_are_per_session(store: SessionStore) -> None:
    one, two = new_session(store), new_session(store)
    assert store.event_append(one.id, msg()).sequence_number == 1
    assert store.event_append(two.id, msg()).sequence_number == 1
    assert store.event_append(one.id, msg()).sequence_number == 2
    assert (store.latest_sequence(one.id), store.latest_sequence(two.id)) == (2, 1)


def test_duplicate_id_append_returns_the_stored_event(store: SessionStore) -> None:
    session = new_session(store)
    event_id = uuid.uuid4()
    first = store.event_append(session.id, msg("original", id=event_id))
    again = store.event_append(session.id, msg("different payload", id=event_id))
    assert (again.id, again.sequence_number) == (first.id, first.sequence_number) == (event_id, 1)
    assert again.data == first.data == {"role": "user", "content": "original"}
    assert again == first
    assert len(store.event_list(session.id)) == 1
    assert store.latest_sequence(session.id) == 1


def test_stored_id_under_another_session_returns_the_original(store: SessionStore) -> None:
    owner, other = new_session(store), new_session(store)
    event_id = uuid.uuid4()
    store.event_append(owner.id, msg("first"))
    original = store.event_append(owner.id, msg("mine", id=event_id))
    store.event_append(other.id, msg("other's own"))
    again = store.event_append(other.id, msg("replayed", id=event_id))
    assert again == original
    assert again.session_id == owner.id
    assert again.sequence_number == 2
    assert store.latest_sequence(other.id) == 1
    assert [e.data["content"] for e in store.event_list(other.id)] == ["other's own"]
    assert store.latest_sequence(owner.id) == 2
    # The next real append to the other session is not shifted by the replay.
    assert store.event_append(other.id, msg()).sequence_number == 2


def test_batch_append_gets_consecutive_numbers(store: SessionStore) -> None:
    session = new_session(store)
    first = store.event_append_many(session.id, [msg("a"), msg("b"), msg("c")])
    assert seqs(first) == [1, 2, 3]
    assert [e.data["content"] for e in first] == ["a", "b", "c"]
    second = store.event_append_many(session.id, [msg("d"), msg("e")])
    assert seqs(second) == [4, 5]
    assert store.latest_sequence(session.id) == 5
    assert store.event_list(session.id) == first + second


def test_empty_batch_stores_nothing(store: SessionStore) -> None:
    session = new_session(store)
    assert store.event_append_many(session.id, []) == []
    assert store.latest_sequence(session.id) == 0


def test_batch_mixing_stored_and_new_ids_stores_only_the_new(store: SessionStore) -> None:
    session = new_session(store)
    stored = store.event_append(session.id, msg("stored"))
    new_a, new_b = uuid.uuid4(), uuid.uuid4()
    got = store.event_append_many(
        session.id,
        [msg("a", id=new_a), msg("replayed", id=stored.id), msg("b", id=new_b)],
    )
    assert [e.id for e in got] == [new_a, stored.id, new_b]
    assert seqs(got) == [2, 1, 3]
    assert got[1] == stored
    assert store.latest_sequence(session.id) == 3
    assert [e.data["content"] for e in store.event_list(session.id)] == ["stored", "a", "b"]


def test_batch_with_a_repeated_new_id_stores_it_once(store: SessionStore) -> None:
    session = new_session(store)
    dup, other = uuid.uuid4(), uuid.uuid4()
    got = store.event_append_many(
        session.id, [msg("x", id=dup), msg("y", id=other), msg("x again", id=dup)]
    )
    assert [e.id for e in got] == [dup, other, dup]
    assert seqs(got) == [1, 2, 1]
    assert got[0] == got[2]
    assert got[2].data["content"] == "x"  # the first occurrence wins
    assert store.latest_sequence(session.id) == 2
    assert seqs(store.event_list(session.id)) == [1, 2]


def test_append_to_unknown_session_is_session_not_found(store: SessionStore) -> None:
    ghost = uuid.uuid4()
    event_id = uuid.uuid4()
    with pytest.raises(AsmError) as excinfo:
        store.event_append(ghost, msg(id=event_id))
    assert error_code(excinfo) == "session_not_found"
    with pytest.raises(AsmError) as excinfo:
        store.event_append_many(ghost, [msg(), msg()])
    assert error_code(excinfo) == "session_not_found"
    assert store.event_list(ghost) == []
    assert store.latest_sequence(ghost) == 0
    # Nothing was stored under that id: it is still free for a real session.
    session = new_session(store)
    stored = store.event_append(session.id, msg(id=event_id))
    assert (stored.session_id, stored.sequence_number) == (session.id, 1)


@pytest.mark.parametrize("position", [0, 2])
def test_unknown_event_type_is_rejected_and_nothing_stored(
    store: SessionStore, position: int
) -> None:
    session = new_session(store)
    store.event_append(session.id, msg("before"))
    batch = [msg("a", id=uuid.uuid4()), msg("b", id=uuid.uuid4())]
    batch.insert(position, NewEvent(type="no_such_type", data={}))
    with pytest.raises(AsmError) as excinfo:
        store.event_append_many(session.id, batch)
    assert error_code(excinfo) == "invalid_event_type"
    with pytest.raises(AsmError) as excinfo:
        store.event_append(session.id, NewEvent(type="no_such_type"))
    assert error_code(excinfo) == "invalid_event_type"
    assert store.latest_sequence(session.id) == 1
    assert seqs(store.event_list(session.id)) == [1]
    # The valid events of the failed batch were not stored either.
    valid = [e for e in batch if e.type == "message_sent"]
    assert seqs(store.event_append_many(session.id, valid)) == [2, 3]


@pytest.mark.parametrize(
    "data",
    [
        {"role": "user"},  # content missing
        {"role": "user", "content": 5},  # wrong type
        {"role": None, "content": "x"},
        "not a dict",
    ],
)
def test_invalid_payload_is_validation_error(store: SessionStore, data: Any) -> None:
    session = new_session(store)
    with pytest.raises(AsmError) as excinfo:
        store.event_append(session.id, NewEvent(type="message_sent", data=data))
    assert error_code(excinfo) == "validation_error"
    with pytest.raises(AsmError) as excinfo:
        store.event_append_many(session.id, [msg(), NewEvent(type="message_sent", data=data)])
    assert error_code(excinfo) == "validation_error"
    assert store.latest_sequence(session.id) == 0
    assert store.event_list(session.id) == []


def test_latest_sequence_of_unknown_session_is_0(store: SessionStore) -> None:
    assert store.latest_sequence(uuid.uuid4()) == 0


# --------------------------------------------------------------------------- events: immutable
def test_stored_events_are_immutable(store: SessionStore) -> None:
    session = new_session(store)
    data: dict[str, Any] = {"role": "user", "content": "original", "nested": {"k": [1]}}
    appended = store.event_append(session.id, NewEvent(type="message_sent", data=data))
    snapshot = {"role": "user", "content": "original", "nested": {"k": [1]}}

    data["content"] = "caller changed the input"  # the caller's dict after the append
    data["nested"]["k"].append(2)
    listed = store.event_list(session.id)
    assert listed[0].data == snapshot

    appended.data["content"] = "changed the returned record"
    listed[0].data["content"] = "changed the listed record"
    listed[0].data["nested"]["k"].append(3)
    listed[0].metadata["x"] = 1
    again = store.event_list(session.id)
    assert again[0].data == snapshot
    assert again[0].metadata == {}

    with pytest.raises(dataclasses.FrozenInstanceError):
        again[0].sequence_number = 7  # type: ignore[misc]


def test_returned_session_and_run_records_are_copies(store: SessionStore) -> None:
    session = new_session(store, context={"a": 1})
    got = store.session_get(session.id)
    got.context["a"] = 2
    got.status = "active"
    assert store.session_get(session.id).context == {"a": 1}
    assert store.session_get(session.id).status == "pending"
    run = new_run(store, session, token_usage={"input_tokens": 1})
    fetched = store.run_get(run.id)
    fetched.token_usage["input_tokens"] = 99
    assert store.run_get(run.id).token_usage == {"input_tokens": 1}


# --------------------------------------------------------------------------- events: queries
@pytest.fixture
def three(store: SessionStore) -> uuid.UUID:
    """A session whose log is events 1..3."""
    session = new_session(store)
    store.event_append_many(session.id, [msg("1"), msg("2"), msg("3")])
    return session.id


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [1, 2, 3]),
        ({"after": 1}, [2, 3]),
        ({"before": 3}, [1, 2]),
        ({"after": 1, "before": 3}, [2]),
        ({"after": 0}, [1, 2, 3]),
        ({"before": 0}, []),
        ({"after": 3}, []),
        ({"after": 2, "before": 3}, []),
        ({"after": 99}, []),
        ({"before": 99}, [1, 2, 3]),
        ({"limit": 2}, [1, 2]),  # limit keeps the oldest N
        ({"limit": 1}, [1]),
        ({"limit": 5}, [1, 2, 3]),
        ({"after": 1, "limit": 1}, [2]),
    ],
)
def test_cursor_semantics(
    store: SessionStore, three: uuid.UUID, filters: dict[str, Any], expected: list[int]
) -> None:
    assert seqs(store.event_list(three, **filters)) == expected


@pytest.mark.parametrize("bad", [-1, -5, True, False, "1", 1.0, 2.5, None, [1]])
@pytest.mark.parametrize("name", ["after", "before", "limit"])
def test_invalid_cursor_or_limit_is_ignored(
    store: SessionStore, three: uuid.UUID, name: str, bad: Any
) -> None:
    assert seqs(store.event_list(three, **{name: bad})) == [1, 2, 3]


def test_limit_0_is_ignored(store: SessionStore, three: uuid.UUID) -> None:
    assert seqs(store.event_list(three, limit=0)) == [1, 2, 3]


def test_cursor_filters_compose_with_run_type_and_limit(store: SessionStore) -> None:
    """Spec 3.2: after, run_id, type and limit=2 together give [2, 4] on a 5-event log."""
    session = new_session(store)
    run, other = new_run(store, session), new_run(store, session)
    store.event_append(session.id, NewEvent(type="run_started", run_id=run.id))  # 1: type
    store.event_append(session.id, msg("2", run_id=run.id))  # 2: matches
    store.event_append(session.id, msg("3", run_id=other.id))  # 3: other run
    store.event_append(session.id, msg("4", run_id=run.id))  # 4: matches
    store.event_append(session.id, msg("5", run_id=run.id))  # 5: matches, cut by the limit
    filters: dict[str, Any] = {"run_id": run.id, "types": "message_sent"}
    assert seqs(store.event_list(session.id, after=1, limit=2, **filters)) == [2, 4]
    # Each filter takes part, and the limit applies after all of them.
    assert seqs(store.event_list(session.id, after=1, **filters)) == [2, 4, 5]
    assert seqs(store.event_list(session.id, run_id=run.id)) == [1, 2, 4, 5]
    assert seqs(store.event_list(session.id, after=1, types="message_sent")) == [2, 3, 4, 5]
    assert seqs(store.event_list(session.id, after=2, limit=2, **filters)) == [4, 5]
    assert seqs(store.event_list(session.id, after=1, before=5, limit=5, **filters)) == [2, 4]
    assert seqs(store.event_list(session.id, after=4, limit=2, **filters)) == [5]


def test_since_is_inclusive(store: SessionStore) -> None:
    session = new_session(store)
    appended = []
    for i in range(3):
        appended.append(store.event_append(session.id, msg(str(i))))
        time.sleep(0.002)  # distinct timestamps
    stored = store.event_list(session.id)
    ts = [e.timestamp for e in stored]
    assert ts == sorted(ts)
    assert seqs(store.event_list(session.id, since=ts[1])) == [2, 3]
    assert seqs(store.event_list(session.id, since=ts[2])) == [3]
    assert store.event_list(session.id, since=ts[2] + timedelta(microseconds=1)) == []
    assert seqs(store.event_list(session.id, since=ts[0] - timedelta(days=1))) == [1, 2, 3]
    assert seqs(store.event_list(session.id, since=ts[1], after=2)) == [3]


def test_event_list_of_unknown_session_is_empty(store: SessionStore) -> None:
    ghost = uuid.uuid4()
    assert store.event_list(ghost) == []
    assert store.event_list(ghost, after=0, before=10, limit=5, types="message_sent") == []


# --------------------------------------------------------------------------- concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_to_one_session_are_dense(store: SessionStore) -> None:
    session = new_session(store)
    ids = [uuid.uuid4() for _ in range(WORKERS)]
    got = in_threads(WORKERS, lambda i: store.event_append(session.id, msg(str(i), id=ids[i])))
    assert sorted(seqs(got)) == list(range(1, WORKERS + 1))
    stored = store.event_list(session.id)
    assert seqs(stored) == list(range(1, WORKERS + 1))
    assert {e.id for e in stored} == set(ids)
    assert store.latest_sequence(session.id) == WORKERS


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_get_consecutive_blocks(store: SessionStore) -> None:
    session = new_session(store)
    n, k = WORKERS // 2, 3
    got = in_threads(n, lambda i: store.event_append_many(session.id, [msg(str(i))] * k))
    for batch in got:
        first = batch[0].sequence_number
        assert seqs(batch) == list(range(first, first + k))
    assert seqs(store.event_list(session.id)) == list(range(1, n * k + 1))
    assert store.latest_sequence(session.id) == n * k


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_of_one_id_store_it_once(store: SessionStore) -> None:
    session = new_session(store)
    store.event_append(session.id, msg("first"))
    event_id = uuid.uuid4()
    n = WORKERS // 2
    got = in_threads(n, lambda i: store.event_append(session.id, msg(str(i), id=event_id)))
    assert {(e.id, e.sequence_number) for e in got} == {(event_id, 2)}
    assert len({e.data["content"] for e in got}) == 1
    assert seqs(store.event_list(session.id)) == [1, 2]
    assert store.latest_sequence(session.id) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_distinct_session_saves_all_land(store: SessionStore) -> None:
    sessions = [SessionRecord(agent_id=f"agent-{i}") for i in range(WORKERS)]
    in_threads(WORKERS, lambda i: store.session_save(sessions[i]))
    listed = store.session_list()
    assert len(listed) == WORKERS
    assert {s.id for s in listed} == {s.id for s in sessions}


@pytest.mark.django_db(transaction=True)
def test_concurrent_get_active_run_never_misses_the_running_run(store: SessionStore) -> None:
    session = new_session(store)
    new_run(store, session)
    running = new_run(store, session, status="running")
    got = in_threads(WORKERS, lambda i: store.run_get_active(session.id))
    assert all(r is not None and r.id == running.id for r in got)


def test_a_run_scoped_event_must_name_a_run_of_that_session(store: SessionStore) -> None:
    session, other = new_session(store), new_session(store)
    foreign = new_run(store, other)
    for run_id in (uuid.uuid4(), foreign.id):
        with pytest.raises(AsmError) as excinfo:
            store.event_append_many(session.id, [msg(), msg(run_id=run_id)])
        assert error_code(excinfo) == "run_not_found"
    assert store.latest_sequence(session.id) == 0
    own = new_run(store, session)
    assert store.event_append(session.id, msg(run_id=own.id)).run_id == own.id


def test_an_empty_batch_is_a_no_op(store: SessionStore) -> None:
    assert store.event_append_many(uuid.uuid4(), []) == []
    session = new_session(store)
    assert store.event_append_many(session.id, []) == []
    assert store.latest_sequence(session.id) == 0


def test_a_returned_event_does_not_share_the_callers_dicts(store: SessionStore) -> None:
    session = new_session(store)
    data: dict[str, Any] = {"role": "user", "content": "hi", "nested": {"k": 1}}
    stored = store.event_append(session.id, NewEvent(type="message_sent", data=data))
    data["content"] = "changed"
    data["nested"]["k"] = 2
    assert stored.data["content"] == "hi"
    assert stored.data["nested"] == {"k": 1}
    assert store.event_list(session.id)[0].data["nested"] == {"k": 1}


# --------------------------------------------------------------------------- retention
# `event_prune_range` (the store's one delete path) and what readers see afterwards; the
# plan (`runs.retention`) works through the port, so the whole pass is checked here too.
def chunk(text: str, run: RunRecord, **metadata: Any) -> NewEvent:
    return NewEvent(
        type="message_streamed",
        data={"delta": text, "content": text},
        run_id=run.id,
        metadata=metadata,
    )


def ev(type_: str, run: RunRecord | None = None, **data: Any) -> NewEvent:
    return NewEvent(type=type_, data=data, run_id=run.id if run is not None else None)


def streamed_session(store: SessionStore) -> tuple[SessionRecord, RunRecord, RunRecord]:
    """One session: run 1 (finished) has an assembled stream split by a usage event and
    holding an empty chunk, a reply streamed before a tool call (Claude's order), and a
    stream cut off by a cancel (never assembled); run 2 streams an assembled reply."""
    session = new_session(store)
    one = new_run(store, session, status="cancelled")
    two = new_run(store, session, status="completed")
    store.event_append_many(
        session.id,
        [
            ev("message_sent", one, role="user", content="hi"),  # 1
            chunk("Hel", one, provider_chunk=1),  # 2
            chunk("lo", one),  # 3
            chunk("", one),  # 4 (ignored by the transcript)
            chunk(" there", one, provider_chunk=4),  # 5
            ev("token_usage_updated", one, input_tokens=3),  # 6
            chunk("!", one),  # 7
            ev("message_received", one, role="assistant", content="Hello there!"),  # 8
            chunk("Let me ", one),  # 9
            chunk("look", one),  # 10
            ev("tool_call_started", one, tool_call_id="t1", tool_name="ls", tool_input={}),
            ev("message_received", one, content="Let me look"),  # 12 (confirms 9-10)
            ev("tool_call_completed", one, tool_call_id="t1", tool_name="ls", tool_output="a"),
            chunk("Partial ", one),  # 14
            chunk("answer", one),  # 15
            ev("run_cancelled", one, reason="user"),  # 16
            ev("message_sent", two, role="user", content="again"),  # 17
            chunk("Sure", two),  # 18
            chunk(".", two),  # 19
            ev("message_received", two, content="Sure."),  # 20
            ev("run_completed", two),  # 21
        ],
    )
    return session, one, two


PRUNED_ONE = [(2, 5), (7, 7), (9, 10), (14, 15)]  # the contiguous chunk ranges of run 1


def walk(store: SessionStore, session_id: uuid.UUID, page: int) -> list[EventRecord]:
    """A cursor reader: pages of `page` events, next `after` = last sequence number seen."""
    seen: list[EventRecord] = []
    cursor = 0
    while batch := store.event_list(session_id, after=cursor, limit=page):
        seen.extend(batch)
        cursor = batch[-1].sequence_number
    return seen


def accounted(events: list[EventRecord]) -> list[int]:
    """Every number an event stands for: its own, or a marker's whole range."""
    numbers: list[int] = []
    for e in events:
        if e.type == "events_pruned":
            assert e.sequence_number == e.data["to_sequence"]
            numbers.extend(range(e.data["from_sequence"], e.data["to_sequence"] + 1))
        else:
            numbers.append(e.sequence_number)
    return numbers


def test_prune_range_replaces_the_chunks_by_one_marker_at_the_last_number(
    store: SessionStore,
) -> None:
    session, one, _ = streamed_session(store)
    before = {e.sequence_number: e for e in store.event_list(session.id)}
    data = {
        "run_id": str(one.id),
        "from_sequence": 2,
        "to_sequence": 5,
        "pruned_count": 4,
        "pruned_type": "message_streamed",
        "reason": "retention",
    }
    marker = store.event_prune_range(
        session.id,
        run_id=one.id,
        from_sequence=2,
        to_sequence=5,
        data=data,
        metadata={"actor": "system"},
    )
    assert marker is not None
    assert (marker.type, marker.sequence_number, marker.run_id) == ("events_pruned", 5, one.id)
    assert marker.data == data
    assert marker.metadata == {"actor": "system"}
    assert marker.timestamp == before[5].timestamp  # it stands where the range ends
    assert marker.id not in {e.id for e in before.values()}
    assert seqs(store.event_list(session.id))[:3] == [1, 5, 6]
    assert store.event_list(session.id, after=1, limit=1)[0].id == marker.id
    assert store.latest_sequence(session.id) == 21  # the counter never moves back


def test_prune_range_refuses_anything_but_exactly_the_runs_chunks(store: SessionStore) -> None:
    session, one, two = streamed_session(store)
    before = store.event_list(session.id)

    def prune(run: RunRecord, a: int, b: int) -> EventRecord | None:
        data = {
            "run_id": str(run.id),
            "from_sequence": a,
            "to_sequence": b,
            "pruned_count": b - a + 1,
            "pruned_type": "message_streamed",
            "reason": "retention",
        }
        return store.event_prune_range(
            session.id, run_id=run.id, from_sequence=a, to_sequence=b, data=data, metadata={}
        )

    assert prune(one, 1, 3) is None  # holds a message_sent
    assert prune(one, 5, 7) is None  # holds a usage event
    assert prune(two, 2, 3) is None  # another run's chunks
    assert prune(one, 18, 19) is None  # run 2's chunks named as run 1's
    assert prune(one, 30, 31) is None  # nothing there
    assert store.event_list(session.id) == before
    assert prune(one, 2, 3) is not None
    assert prune(one, 2, 3) is None  # already pruned: nothing more changes
    assert prune(one, 3, 5) is None  # partly pruned
    with pytest.raises(ValueError, match="bad prune range"):
        prune(one, 5, 4)


def test_pruning_a_run_leaves_every_number_accounted_for(store: SessionStore) -> None:
    from runs.retention import run_streamed_prune

    session, one, _ = streamed_session(store)
    result = run_streamed_prune(store, session_id=session.id, run_id=one.id)
    assert [(m.data["from_sequence"], m.sequence_number) for m in result.markers] == PRUNED_ONE
    assert result.pruned_count == 9
    for page in (1, 2, 3, 5, 100):
        seen = walk(store, session.id, page)
        assert accounted(seen) == list(range(1, 22)), page  # each number exactly once
        assert seqs(seen) == sorted(set(seqs(seen)))  # ascending, no event twice
    assert [e.type for e in store.event_list(session.id, run_id=one.id)].count(
        "message_streamed"
    ) == 0
    assert seqs(store.event_list(session.id, types="message_streamed")) == [5, 7, 10, 15, 18, 19]


def test_a_cursor_inside_a_pruned_range_gets_the_marker(store: SessionStore) -> None:
    from runs.retention import run_streamed_prune

    session, one, _ = streamed_session(store)
    run_streamed_prune(store, session_id=session.id, run_id=one.id)
    for a, b in PRUNED_ONE:
        for after in range(a - 1, b):  # just before the range, and every number inside it
            first = store.event_list(session.id, after=after, limit=1)[0]
            assert (first.type, first.data["from_sequence"], first.sequence_number) == (
                "events_pruned",
                a,
                b,
            ), after


def test_markers_and_filters(store: SessionStore) -> None:
    from runs.retention import run_streamed_prune

    session, one, two = streamed_session(store)
    run_streamed_prune(store, session_id=session.id, run_id=one.id)
    markers = [5, 7, 10, 15]
    assert seqs(store.event_list(session.id, types="events_pruned")) == markers
    # a reader of chunks is told which chunks it will never get
    assert seqs(store.event_list(session.id, types=["message_streamed"])) == [
        *markers,
        18,
        19,
    ]
    assert seqs(store.event_list(session.id, types=["message_sent"])) == [1, 17]
    assert seqs(store.event_list(session.id, run_id=one.id, types="message_streamed")) == markers
    assert 5 in seqs(store.event_list(session.id, run_id=one.id))
    assert 5 not in seqs(store.event_list(session.id, run_id=two.id))
    assert seqs(store.event_list(session.id, after=4, before=8)) == [5, 6, 7]


def test_appends_after_pruning_continue_at_latest_plus_one(store: SessionStore) -> None:
    from runs.retention import run_streamed_prune

    session, one, _ = streamed_session(store)
    run_streamed_prune(store, session_id=session.id, run_id=one.id)
    assert store.latest_sequence(session.id) == 21
    stored = store.event_append_many(session.id, [msg("next"), msg("and next")])
    assert seqs(stored) == [22, 23]
    numbers = seqs(store.event_list(session.id))
    assert len(numbers) == len(set(numbers))


def test_pruning_twice_changes_nothing_more(store: SessionStore) -> None:
    from runs.retention import run_streamed_prune

    session, one, two = streamed_session(store)
    run_streamed_prune(store, session_id=session.id, run_id=one.id)
    once = store.event_list(session.id)
    again = run_streamed_prune(store, session_id=session.id, run_id=one.id)
    assert (again.ranges, again.markers) == ((), ())
    assert store.event_list(session.id) == once
    # run 2 was not asked for: its chunks are all still there
    assert seqs(store.event_list(session.id, run_id=two.id, types="message_streamed")) == [18, 19]


def test_the_transcript_is_the_same_after_pruning(store: SessionStore) -> None:
    from runs.continuation import continuation_events
    from runs.retention import run_streamed_prune
    from runs.transcript import transcript_build, transcript_from_store, transcript_update

    session, one, two = streamed_session(store)
    before = transcript_from_store(store, session.id)
    before_continuation = transcript_build(
        continuation_events(store, session.id), session_id=session.id
    )
    assert [m["content"] for m in before.messages] == [
        "hi",
        "Hello there!",
        "Let me look",
        None,
        None,
        "Partial answer",
        "again",
        "Sure.",
    ]
    for run in (one, two):
        assert run_streamed_prune(store, session_id=session.id, run_id=run.id).markers
    after = transcript_from_store(store, session.id)
    assert after == before  # messages, metadata, message starts, open state
    assert after.to_dict() == before.to_dict()
    assert (
        transcript_build(continuation_events(store, session.id), session_id=session.id)
        == before_continuation
    )
    # incremental readers agree with a full read at every split of the pruned log
    log = store.event_list(session.id)
    for cut in range(len(log) + 1):
        head = transcript_build(log[:cut], session_id=session.id)
        assert transcript_update(head, log[cut:]).messages == after.messages, cut
