"""Embedded mode (no Redis): the in-process Celery worker runs the same lifecycle.

SQLite, the `memory://` broker and the process-local coordinator, exactly as `make run`
serves them. Runs execute on the embedded worker's threads, so these tests commit
(`transaction=True`) and poll with `run_wait`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import close_old_connections, connections

from events.models import Event
from runs.models import Run
from runs.scheduling import run_reap_stale
from runs.services import (
    run_cancel,
    run_once,
    run_submit,
    run_wait,
    session_cancel_with_runs,
)
from runs.store import DjangoSessionStore
from sessions.models import Session
from sessions.services import session_create
from workers.embedded import EmbeddedWorker, _connections_release

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(settings.REDIS_URL), reason="embedded mode runs without REDIS_URL"),
]

TERMINAL = {"run_completed", "run_failed", "run_cancelled", "run_timeout"}


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedWorker]:
    worker = EmbeddedWorker(threads=4, reaper_interval_s=0.2).start()
    yield worker
    worker.stop()
    connections.close_all()


def _types(run: Run) -> list[str]:
    return list(
        Event.objects.filter(run=run).order_by("sequence_number").values_list("type", flat=True)
    )


def _terminal_count(run: Run) -> int:
    return Event.objects.filter(run=run, type__in=TERMINAL).count()


def test_submit_returns_at_once_and_runs_in_the_background(embedded):
    session = session_create(agent_id="embedded")
    created = run_submit(session_id=session.id, input={"prompt": "hello there"})
    assert created.run.status == "pending"  # returned before any execution
    run = run_wait(run_id=created.run.id, timeout_s=10)
    assert run.status == "completed"
    assert (run.output or {}).get("content") == "hello there"
    assert _types(run) == [
        "message_sent",
        "run_started",
        "message_streamed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
        "run_completed",
    ]


def test_runs_of_a_session_execute_one_at_a_time_in_submission_order(embedded):
    session = session_create(agent_id="fifo")
    ids = [
        run_submit(
            session_id=session.id,
            input={"prompt": f"run {i} of five"},
            options={"adapter_opts": {"delay_ms": 5}},
        ).run.id
        for i in range(5)
    ]
    runs = [run_wait(run_id=i, timeout_s=20) for i in ids]
    assert [r.status for r in runs] == ["completed"] * 5
    for earlier, later in itertools.pairwise(runs):
        assert earlier.ended_at is not None
        assert later.started_at is not None
        assert earlier.ended_at <= later.started_at  # no overlap, submission order
    seqs = list(
        Event.objects.filter(session=session)
        .order_by("sequence_number")
        .values_list("sequence_number", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(_terminal_count(r) == 1 for r in runs)


def test_cancel_a_running_run(embedded):
    session = session_create(agent_id="cancel")
    run = run_submit(
        session_id=session.id, input="wait for me", options={"adapter_opts": {"hang": True}}
    ).run
    deadline = time.monotonic() + 10
    while Run.objects.get(id=run.id).status != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    run_cancel(run_id=run.id)
    run_cancel(run_id=run.id)  # twice is harmless
    done = run_wait(run_id=run.id, timeout_s=2)
    assert done.status == "cancelled"
    types = _types(done)
    assert types.count("run_cancelled") == 1
    assert "run_failed" not in types
    assert _terminal_count(done) == 1


def test_cancel_a_queued_run_never_starts_it(embedded):
    session = session_create(agent_id="queued-cancel")
    blocker = run_submit(
        session_id=session.id, input="block", options={"adapter_opts": {"hang": True}}
    ).run
    queued = run_submit(session_id=session.id, input="never").run
    cancelled = run_cancel(run_id=queued.id)
    assert cancelled.status == "cancelled"
    run_cancel(run_id=blocker.id)
    assert run_wait(run_id=blocker.id, timeout_s=5).status == "cancelled"
    assert _types(Run.objects.get(id=queued.id)) == ["run_cancelled"]


def test_timeout_ends_the_run_as_timeout(embedded):
    session = session_create(agent_id="timeout")
    run = run_submit(
        session_id=session.id,
        input="slow",
        options={"timeout_ms": 300, "adapter_opts": {"hang": True}},
    ).run
    done = run_wait(run_id=run.id, timeout_s=5)
    assert done.status == "timeout"
    assert (done.error or {}).get("code") == "timeout"
    assert _types(done)[-1] == "run_timeout"
    assert _terminal_count(done) == 1


def test_cancelling_a_session_cancels_its_runs(embedded):
    session = session_create(agent_id="session-cancel")
    running = run_submit(
        session_id=session.id, input="hang", options={"adapter_opts": {"hang": True}}
    ).run
    waiting = run_submit(session_id=session.id, input="next").run
    deadline = time.monotonic() + 10
    while Run.objects.get(id=running.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    session_cancel_with_runs(session_id=session.id)
    assert Session.objects.get(id=session.id).status == "cancelled"
    assert run_wait(run_id=running.id, timeout_s=3).status == "cancelled"
    assert Run.objects.get(id=waiting.id).status == "cancelled"


def test_run_once_completes_the_session(embedded):
    result = run_once(input={"prompt": "one shot"}, timeout_s=10)
    assert result["status"] == "completed"
    assert result["output"]["content"] == "one shot"
    assert Session.objects.get(id=result["session_id"]).status == "completed"
    types = list(
        Event.objects.filter(session_id=result["session_id"])
        .order_by("sequence_number")
        .values_list("type", flat=True)
    )
    assert types[:3] == ["session_created", "session_started", "message_sent"]
    assert types[-2:] == ["run_completed", "session_completed"]
    assert result["events_count"] == len(types)


def test_a_lost_worker_is_reaped_and_the_queue_moves_on(embedded):
    session = session_create(agent_id="reaped")
    session.status = "active"
    session.save(update_fields=["status"])
    store = DjangoSessionStore()
    # A run claimed by a worker that then vanished: its lease lapses and nobody renews it.
    lost = Run.objects.create(session=session, input={"prompt": "lost"}, provider="echo")
    claimed = store.run_claim_next(session.id, owner="ghost", lease_ms=50)
    assert claimed is not None
    assert claimed.id == lost.id
    nxt = run_submit(session_id=session.id, input="after the ghost").run
    time.sleep(0.1)
    run_reap_stale()  # the embedded reaper may already have done it
    failed = run_wait(run_id=lost.id, timeout_s=5)
    assert failed.status == "failed"
    assert (failed.error or {}).get("code") == "worker_lost"
    assert _types(failed) == ["run_failed"]
    assert run_wait(run_id=nxt.id, timeout_s=10).status == "completed"
    # The ghost's late result is fenced off: nothing changes.
    from asm_core.records import NewEvent

    late = store.run_finish(
        lost.id,
        attempt=claimed.attempt,
        status="completed",
        output={"content": "late"},
        error=None,
        token_usage={},
        metadata={},
        terminal=NewEvent(type="run_completed", run_id=lost.id),
    )
    assert late is None
    assert Run.objects.get(id=lost.id).status == "failed"
    assert _terminal_count(failed) == 1


def test_a_lost_worker_with_attempts_left_is_requeued_and_completes(embedded):
    session = session_create(agent_id="requeued")
    session.status = "active"
    session.save(update_fields=["status"])
    lost = Run.objects.create(
        session=session, input={"prompt": "try again"}, provider="echo", max_attempts=2
    )
    claimed = DjangoSessionStore().run_claim_next(session.id, owner="ghost", lease_ms=50)
    assert claimed is not None
    time.sleep(0.1)
    run_reap_stale()
    done = run_wait(run_id=lost.id, timeout_s=10)
    assert done.status == "completed"
    assert done.attempt == 2
    types = _types(done)
    assert types.count("run_requeued") == 1
    assert types.count("run_started") == 1  # the ghost never got as far as run_started
    assert _terminal_count(done) == 1


def test_the_reaper_survives_a_database_it_cannot_reach_while_releasing(django_db_blocker):
    """The reaper's end-of-tick connection release must not raise: an unreachable database
    at that moment used to end the reaper thread for good (seen in CI, where pytest-django
    blocked the database between a tick's reap and its release). The blocker makes every
    connection check fail, as an unreachable database would."""
    outcome: list[BaseException | None] = []

    def tick_end() -> None:
        try:
            Session.objects.count()  # this thread's connection is open, as after a reap
            with django_db_blocker.block():
                with pytest.raises(RuntimeError):
                    close_old_connections()  # what the reaper called bare before
                _connections_release()
            outcome.append(None)
        except BaseException as exc:  # reported to the test, not lost in the thread
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=tick_end)
    thread.start()
    thread.join(timeout=10)
    assert outcome == [None]
