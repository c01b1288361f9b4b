"""Concurrency proofs for the event store on real PostgreSQL, with real OS processes."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from events.models import Event
from events.selectors import latest_sequence
from events.services import event_append
from sessions.models import Session

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _bare_session() -> Session:
    # No session_created event, so the log the workers write is exactly 1..N.
    return Session.objects.create(agent_id="concurrency")


def test_eight_processes_append_4000_events_dense_and_unique(workers):
    assert connection.vendor == "postgresql"
    session = _bare_session()
    workers.start(
        "tests.integration.append_worker",
        [[str(session.id), "--count", "500", "--seed", str(i)] for i in range(8)],
    )
    answers = workers.go_and_collect()

    returned = [seq for answer in answers for _, seq in answer]
    assert len(returned) == 4000
    assert sorted(returned) == list(range(1, 4001))  # what callers were told: no duplicates
    stored = list(
        Event.objects.filter(session=session)
        .order_by("sequence_number")
        .values_list("sequence_number", flat=True)
    )
    assert stored == list(range(1, 4001))  # what the log holds: 1..4000, no gap
    assert latest_sequence(session_id=session.id) == 4000
    # Each worker saw its own appends in increasing order (batches are consecutive).
    for answer in answers:
        seqs = [seq for _, seq in answer]
        assert seqs == sorted(seqs)


def test_same_event_ids_from_two_processes_are_stored_once(workers, tmp_path: Path):
    session = _bare_session()
    ids = [uuid.uuid4() for _ in range(300)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(str(i) for i in ids))
    workers.start(
        "tests.integration.append_worker",
        [
            [str(session.id), "--ids", str(ids_file), "--seed", "1", "--singles-only"],
            [str(session.id), "--ids", str(ids_file), "--seed", "2"],
        ],
    )
    first, second = workers.go_and_collect()

    assert dict(first) == dict(second)  # both callers got the same sequence for every id
    assert sorted(seq for _, seq in first) == list(range(1, 301))
    assert Event.objects.filter(session=session).count() == 300
    assert set(Event.objects.filter(session=session).values_list("id", flat=True)) == set(ids)
    assert latest_sequence(session_id=session.id) == 300


def test_a_held_session_counter_blocks_only_that_session():
    busy, free = _bare_session(), _bare_session()
    holding = threading.Event()
    release = threading.Event()
    results: dict[str, float] = {}

    def hold_counter() -> None:
        try:
            with transaction.atomic():
                event_append(session_id=busy.id, type="run_started")
                holding.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    def append(name: str, session_id: uuid.UUID) -> None:
        try:
            event_append(session_id=session_id, type="run_started")
            results[name] = time.monotonic()
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_counter)
    holder.start()
    assert holding.wait(timeout=10)

    other = threading.Thread(target=append, args=("free", free.id))
    other.start()
    other.join(timeout=10)
    assert "free" in results, "an append to another session waited for the held counter"

    same = threading.Thread(target=append, args=("busy", busy.id))
    same.start()
    same.join(timeout=1.0)
    assert "busy" not in results, "the held session's counter did not serialize appends"
    released_at = time.monotonic()
    release.set()
    holder.join(timeout=10)
    same.join(timeout=10)
    assert results["busy"] >= released_at
    assert latest_sequence(session_id=busy.id) == 2
    assert latest_sequence(session_id=free.id) == 1


def test_the_append_statement_is_prepared_once_per_connection_and_keeps_its_errors():
    """The hot append statement runs as a server-side prepared statement (events.services
    `_pg_prepared`): planned once per connection, not per append, and a stored id still
    comes back through Django's IntegrityError path (the deduplicated read-back)."""
    session = _bare_session()
    fixed = uuid.uuid4()
    for _ in range(3):
        event_append(session_id=session.id, type="run_started")
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["WITH c AS (UPDATE %"],
        )
        assert cur.fetchone()[0] == 1
    first = event_append(session_id=session.id, type="run_started", event_id=fixed)
    again = event_append(session_id=session.id, type="run_started", event_id=fixed)
    assert (again.id, again.sequence_number) == (first.id, first.sequence_number) == (fixed, 4)
    with transaction.atomic():  # inside a caller's transaction too (savepoint path)
        again = event_append(session_id=session.id, type="run_started", event_id=fixed)
        later = event_append(session_id=session.id, type="run_started")
    assert again.sequence_number == 4
    assert later.sequence_number == 5
    assert latest_sequence(session_id=session.id) == 5


def test_with_prepared_statements_off_appends_are_not_prepared_and_still_work():
    """`ASM_DB_PREPARED_STATEMENTS=false` (poolers in transaction mode) sets the connections'
    `prepare_threshold` to None: the append statement is then bound server-side but never
    prepared, and appends and the deduplicating path behave the same."""
    connection.close()
    connection.ensure_connection()
    connection.connection.prepare_threshold = None  # what the setting gives a new connection
    session = _bare_session()
    fixed = uuid.uuid4()
    for _ in range(6):
        event_append(session_id=session.id, type="run_started")
    first = event_append(session_id=session.id, type="run_started", event_id=fixed)
    again = event_append(session_id=session.id, type="run_started", event_id=fixed)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cur.fetchone()[0] == 0
    assert (again.id, again.sequence_number) == (first.id, first.sequence_number) == (fixed, 7)
    assert latest_sequence(session_id=session.id) == 7
    connection.close()  # the next test gets a connection with the configured threshold
