"""Retention of streamed chunks on real PostgreSQL (docs/event-store.md, Retention).

A session of several finished runs (streams split by usage events, a reply streamed before a
tool call, a stream cut off by a failure) is pruned in batches, by concurrent pruners, while
another run keeps appending to the same session. Afterwards: every number 1..latest is
accounted for exactly once by a cursor reader at any page size (an event, or a marker's
range), a cursor inside a pruned range gets the marker, new events continue at latest + 1,
a second pass changes nothing, and the transcript is the one built before pruning.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from asm_core.records import NewEvent, RunRecord
from events.models import Event
from events.selectors import event_list, latest_sequence
from runs.models import Run
from runs.retention import events_prune_streamed
from runs.store import DjangoSessionStore
from runs.transcript import transcript_from_store
from sessions.models import AuditEntry, Session
from tests.threads import in_threads

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

RUNS = 6
CHUNKS = 60  # per stream


def ev(type_: str, run: RunRecord, **data: Any) -> NewEvent:
    return NewEvent(type=type_, data=data, run_id=run.id)


def run_events(run: RunRecord, i: int) -> list[NewEvent]:
    words = [f"w{i}_{k} " for k in range(CHUNKS)]
    stream = [ev("message_streamed", run, delta=w, content=w) for w in words]
    half = CHUNKS // 2
    out = [ev("message_sent", run, role="user", content=f"question {i}")]
    out += [*stream[:half], ev("token_usage_updated", run, output_tokens=half), *stream[half:]]
    out.append(ev("message_received", run, content="".join(words)))  # assembled
    out += [ev("message_streamed", run, delta="checking ", content="checking ")]
    out.append(ev("tool_call_started", run, tool_call_id=f"t{i}", tool_name="ls", tool_input={}))
    out.append(ev("message_received", run, content="checking "))  # Claude's order
    out.append(ev("tool_call_completed", run, tool_call_id=f"t{i}", tool_name="ls", tool_output=i))
    if i % 3 == 2:  # cut off mid-stream: never assembled
        out += [*stream[:5], ev("run_failed", run, error_code="provider_error")]
    else:
        out += [ev("run_completed", run)]
    return out


def build_session(store: DjangoSessionStore) -> uuid.UUID:
    session = Session.objects.create(agent_id="retention")
    ended = timezone.now() - timedelta(days=30)
    for i in range(RUNS):
        run = store.run_save(
            RunRecord(session_id=session.id, status="failed" if i % 3 == 2 else "completed")
        )
        store.event_append_many(session.id, run_events(run, i))
        Run.objects.filter(id=run.id).update(ended_at=ended)
    return session.id


def walk(session_id: uuid.UUID, page: int) -> list[int]:
    numbers: list[int] = []
    cursor = 0
    while batch := event_list(session_id=session_id, after=cursor, limit=page):
        for e in batch:
            if e.type == "events_pruned":
                assert e.sequence_number == e.data["to_sequence"]
                numbers.extend(range(e.data["from_sequence"], e.data["to_sequence"] + 1))
            else:
                numbers.append(e.sequence_number)
        cursor = batch[-1].sequence_number
    return numbers


def test_concurrent_batched_pruning_while_the_session_grows() -> None:
    assert connection.vendor == "postgresql"
    store = DjangoSessionStore()
    sid = build_session(store)
    before = transcript_from_store(store, sid)
    built = latest_sequence(session_id=sid)
    cutoff = timezone.now() - timedelta(days=1)
    live = store.run_save(RunRecord(session_id=sid, status="running"))  # not finished

    def work(i: int) -> int:
        if i == 0:  # a live run keeps streaming into the same session
            for k in range(100):
                store.event_append(sid, ev("message_streamed", live, delta=f"{k} "))
            return 0
        pruned = 0
        while (report := events_prune_streamed(older_than=cutoff, run_limit=2)).runs:
            pruned += report.pruned
        return pruned

    pruned = in_threads(4, work)
    chunks_left = Event.objects.filter(session_id=sid, type="message_streamed")
    assert set(chunks_left.values_list("run_id", flat=True)) == {live.id}
    assert chunks_left.count() == 100
    expected = RUNS * (CHUNKS + 1) + sum(5 for i in range(RUNS) if i % 3 == 2)
    assert sum(pruned) == expected  # each chunk replaced once, whoever got there first
    markers = Event.objects.filter(session_id=sid, type="events_pruned")
    # per run: the two halves of the assembled stream, the tool-call text, (the cut stream)
    assert markers.count() == RUNS * 3 + sum(1 for i in range(RUNS) if i % 3 == 2)
    entries = AuditEntry.objects.filter(action="events.prune")
    assert sum(e.detail["pruned_count"] for e in entries) == expected

    latest = latest_sequence(session_id=sid)
    for page in (1, 7, 500):
        assert walk(sid, page) == list(range(1, latest + 1)), page
    for marker in markers:
        a, b = marker.data["from_sequence"], marker.data["to_sequence"]
        for after in range(a - 1, b):  # just before the range, and inside it
            first = event_list(session_id=sid, after=after, limit=1)[0]
            assert first.id == marker.id
    stored = store.event_append(sid, ev("message_sent", live, role="user", content="more"))
    assert stored.sequence_number == latest + 1

    live.status, live.ended_at = "completed", timezone.now()
    store.run_save(live)
    assert transcript_from_store(store, sid, before=built + 1) == before  # the pruned history
    assert events_prune_streamed(older_than=cutoff).runs == 0  # the live run is recent
    again = list(Event.objects.filter(session_id=sid).values_list("id", flat=True))
    assert events_prune_streamed(older_than=cutoff).runs == 0
    assert list(Event.objects.filter(session_id=sid).values_list("id", flat=True)) == again


def test_the_transcript_is_the_same_after_pruning_on_postgres() -> None:
    store = DjangoSessionStore()
    sid = build_session(store)
    before = transcript_from_store(store, sid)
    kinds = ["message_streamed", "message_received"]  # a type-filtered reader
    typed = transcript_from_store(store, sid, types=kinds)
    report = events_prune_streamed(older_than=timezone.now())
    assert report.runs == RUNS
    assert transcript_from_store(store, sid) == before
    assert transcript_from_store(store, sid, types=kinds) == typed
