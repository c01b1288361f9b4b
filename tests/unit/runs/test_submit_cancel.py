"""run_submit / run_cancel / the reaper and the drain's limits, without a worker running."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from asm_core.errors import AsmError
from events.models import Event
from events.selectors import latest_sequence
from runs.coordination import LocalCoordinator, coordinator
from runs.dispatch import DRAIN_TASK
from runs.models import Run
from runs.scheduling import run_reap_stale, session_drain
from runs.selectors import run_queue_position
from runs.services import run_cancel, run_submit
from runs.store import DjangoSessionStore
from sessions.models import Session
from sessions.services import session_activate, session_complete, session_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def session() -> Session:
    return session_create(agent_id="submit")


def _nothing_changed(session: Session, seq_before: int) -> None:
    assert not Run.objects.filter(session=session).exists()
    assert latest_sequence(session_id=session.id) == seq_before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input": 42}, "input"),
        ({"input": {"messages": []}}, "input"),
        ({"input": "hi", "options": {"bogus_option": True}}, "options"),
        ({"input": "hi", "options": {"continuation": "always"}}, "options.continuation"),
        ({"input": "hi", "options": {"timeout_ms": 0}}, "options.timeout_ms"),
        ({"input": "hi", "options": {"max_attempts": True}}, "options.max_attempts"),
        ({"input": "hi", "options": {"adapter_opts": {"delay": 5}}}, "adapter_opts.delay"),
        ({"input": "hi", "options": {"adapter_opts": {"fail": {"code": "nope"}}}}, None),
        ({"input": "hi", "options": {"required_capabilities": ["telepathy"]}}, None),
        ({"input": "hi", "provider": "nosuch"}, None),
    ],
)
def test_bad_submissions_are_refused_and_change_nothing(session, kwargs, field):
    with pytest.raises(AsmError) as err:
        run_submit(session_id=session.id, **kwargs)
    assert err.value.code in {"validation_error", "invalid_capability_type"}
    if field:
        assert err.value.details.get("field") == field
    _nothing_changed(session, 1)
    assert Session.objects.get(id=session.id).status == "pending"


def _drains_queued() -> int:
    """Messages waiting on the (in-process, memory://) broker queue: what a worker would get."""
    from django.conf import settings

    from asm_project.celery import app

    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel  # kombu's virtual channel (memory transport)
        declared = channel.queue_declare(
            queue=settings.CELERY_TASK_DEFAULT_QUEUE, durable=True, auto_delete=False
        )
        return int(declared.message_count)


def test_submit_activates_a_pending_session_and_enqueues_a_drain_on_commit(
    session, django_capture_on_commit_callbacks
):
    before = _drains_queued()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = run_submit(session_id=session.id, input={"prompt": "hi"})
        assert _drains_queued() == before  # nothing is sent before commit
    for callback in callbacks:
        callback()
    assert _drains_queued() == before + 1
    assert created.created
    assert created.run.status == "pending"
    assert Session.objects.get(id=session.id).status == "active"
    types = list(Event.objects.filter(session=session).values_list("type", flat=True))
    assert types == ["session_created", "session_started"]


def test_submit_to_a_finished_session_is_refused(session):
    session_activate(session_id=session.id)
    session_complete(session_id=session.id)
    with pytest.raises(AsmError) as err:
        run_submit(session_id=session.id, input="late")
    assert err.value.code == "invalid_operation"
    _nothing_changed(session, 3)


def test_submit_to_an_unknown_session(session):
    with pytest.raises(AsmError) as err:
        run_submit(session_id=uuid.uuid4(), input="x")
    assert err.value.code == "session_not_found"


def test_the_queue_limit_refuses_more_runs(session, settings):
    settings.ASM_MAX_QUEUED_RUNS = 2
    first = run_submit(session_id=session.id, input="1", idempotency_key="k1").run
    run_submit(session_id=session.id, input="2")
    with pytest.raises(AsmError) as err:
        run_submit(session_id=session.id, input="3")
    assert err.value.code == "max_runs_exceeded"
    assert err.value.http_status == 429
    assert Run.objects.filter(session=session).count() == 2
    # An idempotent replay is not a new run, so a full queue does not refuse it.
    replay = run_submit(session_id=session.id, input="1", idempotency_key="k1")
    assert not replay.created
    assert replay.run.id == first.id


def test_queue_position(session):
    runs = [run_submit(session_id=session.id, input=str(i)).run for i in range(3)]
    assert [run_queue_position(run=r) for r in runs] == [1, 2, 3]
    run_cancel(run_id=runs[0].id)
    assert run_queue_position(run=Run.objects.get(id=runs[0].id)) is None
    assert run_queue_position(run=runs[2]) == 2


def test_cancel_a_pending_run_at_once_and_twice_is_harmless(session):
    run = run_submit(session_id=session.id, input="x").run
    cancelled = run_cancel(run_id=run.id, actor="system:test")
    assert cancelled.status == "cancelled"
    assert cancelled.error["code"] == "cancelled"
    before = latest_sequence(session_id=session.id)
    again = run_cancel(run_id=run.id)
    assert again.status == "cancelled"
    assert latest_sequence(session_id=session.id) == before
    events = list(Event.objects.filter(run=run))
    assert [e.type for e in events] == ["run_cancelled"]
    assert events[0].metadata["actor"] == "system:test"


def test_cancel_a_running_run_records_the_request_and_signals_after_commit(
    session, django_capture_on_commit_callbacks
):
    run = run_submit(session_id=session.id, input="x").run
    claimed = DjangoSessionStore().run_claim_next(session.id, owner="w", lease_ms=60_000)
    assert claimed is not None
    coord = coordinator()
    assert isinstance(coord, LocalCoordinator)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        requested = run_cancel(run_id=run.id)
    assert requested.status == "running"
    assert requested.cancel_requested_at is not None
    assert not coord.cancel_requested(run.id)  # nothing is signalled before commit
    for callback in callbacks:
        callback()
    assert coord.cancel_requested(run.id)
    first = Run.objects.get(id=run.id).cancel_requested_at
    run_cancel(run_id=run.id)
    assert Run.objects.get(id=run.id).cancel_requested_at == first


def test_cancel_unknown_run():
    with pytest.raises(AsmError) as err:
        run_cancel(run_id=uuid.uuid4())
    assert err.value.code == "run_not_found"


def _running(session: Session, *, max_attempts: int = 1, lease_ms: int = 60_000) -> Run:
    run = run_submit(session_id=session.id, input="x", options={"max_attempts": max_attempts}).run
    assert DjangoSessionStore().run_claim_next(session.id, owner="w", lease_ms=lease_ms)
    return Run.objects.get(id=run.id)


def test_reaper_leaves_live_leases_alone(session):
    run = _running(session)
    assert run_reap_stale() == 0
    assert Run.objects.get(id=run.id).status == "running"


def test_reaper_fails_a_lost_run_with_worker_lost(session, django_capture_on_commit_callbacks):
    run = _running(session)
    before = _drains_queued()
    with django_capture_on_commit_callbacks(execute=True):
        assert run_reap_stale(now=timezone.now() + timedelta(minutes=5)) == 1
    run = Run.objects.get(id=run.id)
    assert run.status == "failed"
    assert run.error["code"] == "worker_lost"
    event = Event.objects.get(run=run)
    assert event.type == "run_failed"
    assert event.data["error_code"] == "worker_lost"
    # The session is woken now, and again once a dead worker's session lock has surely expired.
    assert _drains_queued() == before + 2
    assert run_reap_stale(now=timezone.now() + timedelta(minutes=5)) == 0


def test_reaper_requeues_when_attempts_remain(session):
    run = _running(session, max_attempts=2)
    run_reap_stale(now=timezone.now() + timedelta(minutes=5))
    run = Run.objects.get(id=run.id)
    assert run.status == "pending"
    assert run.attempt == 1
    assert "lost its worker" in run.waiting_reason
    event = Event.objects.get(run=run)
    assert (event.type, event.data) == ("run_requeued", {"attempt": 1, "reason": "worker_lost"})


def test_reaper_cancels_a_lost_run_that_was_being_cancelled(session):
    run = _running(session)
    run_cancel(run_id=run.id)
    run_reap_stale(now=timezone.now() + timedelta(minutes=5))
    run = Run.objects.get(id=run.id)
    assert run.status == "cancelled"
    assert Event.objects.get(run=run).type == "run_cancelled"


def test_drain_waits_with_a_reason_when_the_run_limit_is_full(session, settings):
    settings.ASM_MAX_PARALLEL_RUNS = 1
    coord = coordinator()
    slots = coord.slots("runs", 1)
    assert slots.acquire("someone-else", 60_000)
    try:
        run = run_submit(session_id=session.id, input="x").run
        session_drain(session_id=session.id, worker_id="w")
        run = Run.objects.get(id=run.id)
        assert run.status == "pending"
        assert run.waiting_reason == "max_parallel_runs (1) reached"
    finally:
        slots.release("someone-else")


def test_drain_leaves_a_paused_session_alone(session):
    run = run_submit(session_id=session.id, input="x").run
    from sessions.services import session_pause

    session_pause(session_id=session.id)
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "pending"
    assert run.waiting_reason == "the session is paused"


def test_drain_task_name_is_stable():
    from asm_project.celery import app

    app.loader.import_default_modules()
    assert DRAIN_TASK in app.tasks
    assert "workers.run_reap_stale" in app.tasks


def test_one_drain_message_per_session_until_the_drain_starts(
    session, django_capture_on_commit_callbacks
):
    before = _drains_queued()
    with django_capture_on_commit_callbacks(execute=True):
        run_submit(session_id=session.id, input="1")
    with django_capture_on_commit_callbacks(execute=True):
        run_submit(session_id=session.id, input="2")  # the queued drain will see this run
    assert _drains_queued() == before + 1
    session_drain(session_id=session.id, worker_id="w")  # clears the flag first
    with django_capture_on_commit_callbacks(execute=True):
        run_submit(session_id=session.id, input="3")
    assert _drains_queued() == before + 2


def test_the_reaper_wakes_a_session_whose_drain_message_was_lost(
    session, django_capture_on_commit_callbacks
):
    from runs.coordination import coordinator
    from runs.dispatch import drain_flag

    run = run_submit(session_id=session.id, input="stranded").run  # its message never sent
    coordinator().flag_clear(drain_flag(session.id))
    before = _drains_queued()
    with django_capture_on_commit_callbacks(execute=True):
        run_reap_stale()  # too recent to call stranded
    assert _drains_queued() == before
    with django_capture_on_commit_callbacks(execute=True):
        run_reap_stale(now=timezone.now() + timedelta(minutes=1))
    assert _drains_queued() == before + 1
    # A session whose run is running is not stranded: its drain is busy with it.
    coordinator().flag_clear(drain_flag(session.id))
    assert DjangoSessionStore().run_claim_next(session.id, owner="w", lease_ms=600_000)
    run_submit(session_id=session.id, input="behind it")
    with django_capture_on_commit_callbacks(execute=True):
        run_reap_stale(now=timezone.now() + timedelta(minutes=1))
    assert _drains_queued() == before + 1
    assert Run.objects.get(id=run.id).status == "running"
