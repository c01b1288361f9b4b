"""Retention of streamed chunks: the plan (pure), `runs.retention.events_prune_streamed`
(the audited service), its Celery task, beat entry and management command.

Pinned: only finished runs that ended before the cutoff lose their chunks (running, pending
and recent runs are untouched; 0 days = off); each contiguous chunk range becomes one
`events_pruned` marker at its last number; every number stays accounted for; sequence
numbers are never reused; a pass is idempotent and batched (`run_limit`); the transcript of
real executed runs (assembled replies, a tool call, a run failed mid-stream) is the same
before and after; every pruned run leaves one `events.prune` audit entry. The store-level
rules (readers, filters, both stores) are in tests/unit/events/test_store_contract.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from asm_core.records import NewEvent
from events.models import Event
from events.selectors import event_list, latest_sequence
from runs.models import Run
from runs.retention import events_prune_streamed, streamed_prune_plan
from runs.store import DjangoSessionStore
from runs.transcript import transcript_from_store
from sessions.models import AuditEntry
from tests.echo_sessions import echo_session_execute
from workers.tasks import events_prune_streamed_task

OWNER = "retention-test"
RUN = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


# --------------------------------------------------------------------------- the plan (pure)
def ev(seq: int, type_: str, run: uuid.UUID | None = RUN, **data: Any) -> dict[str, Any]:
    return {"sequence_number": seq, "type": type_, "run_id": run, "data": data, "metadata": {}}


def chunk(seq: int, text: str, run: uuid.UUID | None = RUN) -> dict[str, Any]:
    return ev(seq, "message_streamed", run, delta=text, content=text)


def ranges(plan: list[Any]) -> list[tuple[int, int, str | None]]:
    """(from, to, kept text or None) per planned marker."""
    return [
        (r.from_sequence, r.to_sequence, (r.data.get("stream") or {}).get("text")) for r in plan
    ]


def test_plan_drops_the_text_only_where_the_assembled_message_carries_it() -> None:
    events = [
        chunk(1, "a"),
        chunk(2, "b"),
        ev(3, "message_received", content="ab"),  # assembled: text not kept
        chunk(4, "c"),
        ev(5, "tool_call_started", tool_call_id="t", tool_name="x", tool_input={}),
        chunk(6, "d"),
        ev(7, "message_received", role="assistant", content=""),  # empty: the stream's text
        chunk(8, "e"),
        ev(9, "message_received", role="user", content="u"),  # another role flushes
        chunk(10, "f"),  # never closed
    ]
    assert ranges(streamed_prune_plan(events, run_id=RUN)) == [
        (1, 2, None),
        (4, 4, "c"),
        (6, 6, "d"),
        (8, 8, "e"),
        (10, 10, "f"),
    ]


def test_plan_ranges_are_contiguous_numbers_of_the_runs_own_chunks() -> None:
    other = uuid.uuid4()
    events = [
        chunk(1, "a"),
        chunk(2, "b"),
        chunk(4, "c"),  # 3 is some other event (not given to the plan)
        chunk(5, "x", run=other),
        chunk(6, "d"),
        ev(7, "events_pruned"),  # an earlier marker: does not close the stream
        ev(8, "message_received", content="abcxd"),
    ]
    plan = streamed_prune_plan(events, run_id=RUN)
    assert ranges(plan) == [(1, 2, None), (4, 4, None), (6, 6, None)]
    assert plan[0].data == {
        "run_id": str(RUN),
        "from_sequence": 1,
        "to_sequence": 2,
        "pruned_count": 2,
        "pruned_type": "message_streamed",
        "reason": "retention",
        "stream": {
            "first_sequence": 1,
            "metadata": {"run_id": str(RUN), "sequence_number": 2},
        },
    }


def test_plan_of_only_empty_chunks_keeps_no_stream() -> None:
    plan = streamed_prune_plan(
        [chunk(1, ""), chunk(2, ""), ev(3, "message_received", content="hi")], run_id=RUN
    )
    assert [r.data.get("stream") for r in plan] == [None]
    assert plan[0].data["pruned_count"] == 2


# --------------------------------------------------------------------------- the service
def executed_session(
    prompts: list[tuple[str, dict[str, Any]]], owner: User | None = None
) -> uuid.UUID:
    """A session whose echo runs were executed by the real executor; its id."""
    return echo_session_execute(
        prompts,
        agent_id="retention",
        owner=owner,
        metadata={"continuation": True},
        flush_interval_s=0.0,
    )


CONVERSATION: list[tuple[str, dict[str, Any]]] = [
    ("the first question is here", {}),
    ("now with a tool", {"tool_calls": [{"name": "ls", "output": "a b"}]}),
    ("this one fails mid stream", {"fail": {"code": "provider_error", "after_chunks": 2}}),
    ("and the last one", {}),
]


def age_runs(session_id: uuid.UUID, days: int) -> None:
    Run.objects.filter(session_id=session_id).update(ended_at=timezone.now() - timedelta(days=days))


def chunks_of(session_id: uuid.UUID) -> int:
    return Event.objects.filter(session_id=session_id, type="message_streamed").count()


def accounted(session_id: uuid.UUID, page: int) -> list[int]:
    numbers: list[int] = []
    cursor = 0
    while batch := event_list(session_id=session_id, after=cursor, limit=page):
        for e in batch:
            if e.type == "events_pruned":
                numbers.extend(range(e.data["from_sequence"], e.data["to_sequence"] + 1))
            else:
                numbers.append(e.sequence_number)
        cursor = batch[-1].sequence_number
    return numbers


@pytest.mark.django_db
def test_retention_is_off_by_default() -> None:
    sid = executed_session(CONVERSATION[:1])
    age_runs(sid, 400)
    assert settings.ASM_RETENTION_STREAMED_DAYS == 0
    report = events_prune_streamed()
    assert not report.enabled
    assert chunks_of(sid) > 0


@pytest.mark.django_db
def test_a_pass_prunes_old_finished_runs_and_keeps_the_transcript(settings: Any) -> None:
    settings.ASM_RETENTION_STREAMED_DAYS = 30
    sid = executed_session(CONVERSATION)
    store = DjangoSessionStore()
    before = transcript_from_store(store, sid)
    latest = latest_sequence(session_id=sid)
    had = chunks_of(sid)
    assert had > 10
    age_runs(sid, 31)
    statuses = sorted(Run.objects.filter(session_id=sid).values_list("status", flat=True))
    assert statuses == ["completed", "completed", "completed", "failed"]

    report = events_prune_streamed()
    assert (report.enabled, report.runs, report.pruned) == (True, 4, had)
    assert chunks_of(sid) == 0
    assert transcript_from_store(store, sid) == before
    # the failed run's reply was never assembled: its streamed text survives in the markers
    assert [m["content"] for m in before.messages if m["role"] == "assistant"] == [
        "the first question is here",
        None,
        "now with a tool",
        "this one ",
        "and the last one",
    ]
    assert latest_sequence(session_id=sid) == latest
    for page in (1, 4, 1000):
        assert accounted(sid, page) == list(range(1, latest + 1))
    entries = AuditEntry.objects.filter(action="events.prune")
    assert entries.count() == 4
    assert {e.actor for e in entries} == {"system"}
    assert sum(e.detail["pruned_count"] for e in entries) == had
    # idempotent: nothing is left to do
    assert events_prune_streamed().runs == 0


@pytest.mark.django_db
def test_running_pending_and_recent_runs_are_untouched(settings: Any) -> None:
    settings.ASM_RETENTION_STREAMED_DAYS = 30
    old = executed_session(CONVERSATION[:1])
    recent = executed_session(CONVERSATION[:1])
    unfinished = executed_session(CONVERSATION[:1])
    age_runs(old, 31)
    age_runs(recent, 29)
    age_runs(unfinished, 400)
    Run.objects.filter(session_id=unfinished).update(status="running")  # as if still going
    before = {sid: chunks_of(sid) for sid in (recent, unfinished)}
    assert events_prune_streamed().runs == 1
    assert chunks_of(old) == 0
    assert {sid: chunks_of(sid) for sid in (recent, unfinished)} == before


@pytest.mark.django_db
def test_a_dry_run_changes_nothing_and_a_pass_is_batched() -> None:
    sid = executed_session(CONVERSATION)
    age_runs(sid, 2)
    had = chunks_of(sid)
    cutoff = timezone.now() - timedelta(days=1)
    dry = events_prune_streamed(older_than=cutoff, dry_run=True)
    assert (dry.dry_run, dry.runs, dry.pruned) == (True, 4, had)
    assert chunks_of(sid) == had
    assert not AuditEntry.objects.filter(action="events.prune").exists()
    passes = [events_prune_streamed(older_than=cutoff, run_limit=3).runs for _ in range(3)]
    assert passes == [3, 1, 0]
    assert chunks_of(sid) == 0
    latest = latest_sequence(session_id=sid)
    stored = DjangoSessionStore().event_append(
        sid, NewEvent(type="message_sent", data={"role": "user", "content": "after"})
    )
    assert stored.sequence_number == latest + 1  # numbers are never reused
    assert accounted(sid, 1000) == list(range(1, latest + 2))


@pytest.mark.django_db
def test_the_task_and_the_beat_schedule(settings: Any) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["prune-streamed-events"]["task"] == (
        "workers.events_prune_streamed"
    )
    assert events_prune_streamed_task.name == "workers.events_prune_streamed"
    sid = executed_session(CONVERSATION[:2])
    age_runs(sid, 10)
    events_prune_streamed_task()  # off: nothing
    assert chunks_of(sid) > 0
    settings.ASM_RETENTION_STREAMED_DAYS = 7
    events_prune_streamed_task()  # called directly, never through eager mode
    assert chunks_of(sid) == 0


@pytest.mark.django_db
def test_the_management_command() -> None:
    sid = executed_session(CONVERSATION[:2])
    age_runs(sid, 10)
    had = chunks_of(sid)
    out = StringIO()
    call_command("prune_events", "--dry-run", "--days", "5", stdout=out)
    assert f"2 runs: would replace {had} message_streamed events" in out.getvalue()
    assert chunks_of(sid) == had
    out = StringIO()
    call_command("prune_events", stdout=out)
    assert "retention is off" in out.getvalue()
    out = StringIO()
    call_command("prune_events", "--days", "5", stdout=out)
    assert f"2 runs: replaced {had} message_streamed events" in out.getvalue()
    assert chunks_of(sid) == 0
    entry = AuditEntry.objects.filter(action="events.prune").first()
    assert entry is not None
    assert entry.actor == "command:prune_events"


@pytest.mark.django_db
def test_an_http_client_paging_with_next_after_sees_every_number_once() -> None:
    alice = User.objects.create_user("alice")
    sid = executed_session(CONVERSATION, owner=alice)
    age_runs(sid, 10)
    assert events_prune_streamed(older_than=timezone.now()).pruned > 0
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=alice)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    latest = latest_sequence(session_id=sid)
    for limit in (1, 3):
        numbers: list[int] = []
        after = 0
        while True:
            page = client.get(f"/api/v1/sessions/{sid}/events", {"after": after, "limit": limit})
            assert page.status_code == 200
            body = page.json()
            for e in body["results"]:
                if e["type"] == "events_pruned":
                    numbers.extend(range(e["data"]["from_sequence"], e["data"]["to_sequence"] + 1))
                else:
                    numbers.append(e["sequence_number"])
            if not body["results"]:
                break
            after = body["next_after"]
        assert numbers == list(range(1, latest + 1)), limit
    streamed = client.get(f"/api/v1/sessions/{sid}/events", {"type": "message_streamed"})
    assert {e["type"] for e in streamed.json()["results"]} == {"events_pruned"}
