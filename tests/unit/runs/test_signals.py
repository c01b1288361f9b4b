"""Django signals for integrators (`runs.signals`): sent after commit, from the Django side,
robustly. Real receivers are connected for each test; runs execute through the real drain
(`session_drain`, echo provider, SQLite) with the commit hooks captured and run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.dispatch import Signal
from django.utils import timezone

from asm_core.errors import AsmError
from runs.models import Run
from runs.scheduling import run_reap_stale, session_drain
from runs.services import run_cancel, run_submit
from runs.signals import run_finished, run_started, run_submitted, session_status_changed
from sessions.models import Session
from sessions.services import session_complete, session_create

pytestmark = pytest.mark.django_db

SIGNALS = {
    "run_submitted": run_submitted,
    "run_started": run_started,
    "run_finished": run_finished,
    "session_status_changed": session_status_changed,
}


class Recorder:
    """Receivers for every asm signal: (signal name, sender, kwargs, thread) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, type[Any], dict[str, Any], threading.Thread]] = []
        self._receivers: list[tuple[Signal, Any]] = []

    def connect(self) -> None:
        for name, signal in SIGNALS.items():

            def receiver(sender: type[Any], _name: str = name, **kwargs: Any) -> None:
                kwargs.pop("signal")
                self.calls.append((_name, sender, kwargs, threading.current_thread()))

            signal.connect(receiver, weak=False)
            self._receivers.append((signal, receiver))

    def disconnect(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def names(self) -> list[str]:
        return [name for name, *_ in self.calls]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for n, _, kwargs, _ in self.calls if n == name]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.connect()
    try:
        yield rec
    finally:
        rec.disconnect()


@pytest.fixture
def session() -> Session:
    return session_create(agent_id="signals")


def test_a_run_sends_submitted_started_finished_after_commit(
    recorder, session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        run = run_submit(session_id=session.id, input="hi").run
        assert recorder.calls == []  # nothing before the commit
    for hook in hooks:
        hook()
    assert recorder.names() == ["session_status_changed", "run_submitted"]
    (changed,) = recorder.of("session_status_changed")
    assert (changed["status"], changed["previous_status"]) == ("active", "pending")
    assert changed["session"].id == session.id
    (submitted,) = recorder.of("run_submitted")
    assert submitted["run"].id == run.id
    assert {sender for _, sender, _, _ in recorder.calls} == {Session, Run}

    recorder.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        session_drain(session_id=session.id, worker_id="w")
    assert recorder.names() == ["run_started", "run_finished"]
    (started,) = recorder.of("run_started")
    assert (started["run"].id, started["attempt"], started["run"].status) == (run.id, 1, "running")
    (finished,) = recorder.of("run_finished")
    assert (finished["run"].id, finished["status"]) == (run.id, "completed")
    assert finished["run"].ended_at is not None
    # sent by the thread that committed (the drain's), never by the provider's thread
    assert {thread for *_, thread in recorder.calls} == {threading.current_thread()}


def test_nothing_is_sent_for_a_refused_submit_or_a_replay(
    recorder, session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run_submit(session_id=session.id, input="hi", idempotency_key="k")
    recorder.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        run_submit(session_id=session.id, input="hi", idempotency_key="k")  # a replay
        with pytest.raises(AsmError):
            run_submit(session_id=session.id, input="hi", options={"bogus": 1})
    assert recorder.calls == []


def test_cancel_while_queued_and_session_changes_are_sent(
    recorder, session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = run_submit(session_id=session.id, input="hi").run
        run_cancel(run_id=run.id)
        session_complete(session_id=session.id)
    assert recorder.names() == [
        "session_status_changed",
        "run_submitted",
        "run_finished",
        "session_status_changed",
    ]
    assert recorder.of("run_finished")[0]["status"] == "cancelled"
    last = recorder.of("session_status_changed")[-1]
    assert (last["status"], last["previous_status"]) == ("completed", "active")


def test_the_reaper_sends_run_finished_for_a_lost_run(
    recorder, session, django_capture_on_commit_callbacks
):
    run = run_submit(session_id=session.id, input="hi").run
    past = timezone.now() - timedelta(minutes=5)
    Run.objects.filter(id=run.id).update(
        status="running", attempt=1, lease_owner="gone", lease_expires_at=past, started_at=past
    )
    recorder.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert run_reap_stale() == 1
    (finished,) = recorder.of("run_finished")
    assert (finished["run"].id, finished["status"]) == (run.id, "failed")


def test_a_failing_receiver_is_logged_and_breaks_nothing(
    recorder, session, django_capture_on_commit_callbacks, caplog
):
    def broken(sender: type[Any], **kwargs: Any) -> None:
        raise RuntimeError("integrator bug")

    run_finished.connect(broken, weak=False)
    run_submitted.connect(broken, weak=False)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="django.dispatch"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            run = run_submit(session_id=session.id, input="hi").run
            session_drain(session_id=session.id, worker_id="w")
    finally:
        run_finished.disconnect(broken)
        run_submitted.disconnect(broken)
    assert Run.objects.get(id=run.id).status == "completed"
    assert recorder.of("run_finished")[0]["status"] == "completed"  # the others still ran
    failures = [r for r in caplog.records if r.name == "django.dispatch"]
    assert len(failures) == 2
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)
