"""Compaction: the plan (pure), `sessions.compaction.session_compact` and its API.

Pinned: the cut is at a message boundary keeping the newest N messages, moved earlier so a
tool call is never compacted while its result is kept (parallel calls included); a second
compaction covers the first and carries its summary; the extractive summary is deterministic
and bounded; the service writes exactly one event (nothing for nothing to compact or bad
input) and leaves a running run's events alone; continuation then starts from it; the API
answers 201/200/400/404 in the usual envelope.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from asm_core.errors import AsmError
from asm_core.records import NewEvent, RunRecord
from events.models import Event
from runs.continuation import compaction_plan, continuation_events, continuation_transcript
from runs.store import DjangoSessionStore
from sessions.compaction import session_compact
from sessions.services import session_create
from tests.echo_sessions import echo_session_execute

OWNER = "compaction-test"
SID = "c0000000-0000-0000-0000-000000000001"


def ev(seq: int, type_: str, **data: Any) -> dict[str, Any]:
    return {
        "id": f"e{seq}",
        "session_id": SID,
        "sequence_number": seq,
        "type": type_,
        "data": data,
    }


def conversation() -> list[dict[str, Any]]:
    """q1, call A, result A, a1, q2, calls B and C (parallel), results B and C, a2."""
    return [
        ev(1, "session_created"),
        ev(2, "message_sent", role="user", content="q1"),
        ev(3, "tool_call_started", tool_call_id="A", tool_name="ls", tool_input={}),
        ev(4, "tool_call_completed", tool_call_id="A", tool_name="ls", tool_output="x"),
        ev(5, "message_received", content="a1"),
        ev(6, "message_sent", role="user", content="q2"),
        ev(7, "tool_call_started", tool_call_id="B", tool_name="cat", tool_input={"f": 1}),
        ev(8, "tool_call_started", tool_call_id="C", tool_name="cat", tool_input={"f": 2}),
        ev(9, "tool_call_completed", tool_call_id="B", tool_name="cat", tool_output="b"),
        ev(10, "tool_call_failed", tool_call_id="C", tool_name="cat", tool_output="c"),
        ev(11, "message_streamed", delta="a"),
        ev(12, "message_streamed", delta="2"),
        ev(13, "message_received", content="a2"),
        ev(14, "run_completed"),
    ]


# --------------------------------------------------------------------------- the plan


def test_keeps_the_newest_messages() -> None:
    plan = compaction_plan(conversation(), keep_messages=1)
    assert plan is not None
    assert (plan.from_sequence, plan.to_sequence) == (1, 10)  # a2 starts at its first chunk
    assert (plan.messages_compacted, plan.messages_kept) == (9, 1)
    assert plan.method == "extractive"


@pytest.mark.parametrize("keep", [2, 3, 4])
def test_never_keeps_a_result_without_its_call(keep: int) -> None:
    # keeping 2-4 messages would cut inside the parallel calls B and C: the cut moves back
    # to call B, so calls B and C and both results are kept together.
    plan = compaction_plan(conversation(), keep_messages=keep)
    assert plan is not None
    assert plan.to_sequence == 6
    assert plan.messages_kept == 5
    kept = continuation_transcript([*conversation(), compacted(plan)]).messages
    assert [m["tool_call_id"] for m in kept[1:5]] == ["B", "C", "B", "C"]


def compacted(plan: Any, seq: int = 15) -> dict[str, Any]:
    return ev(
        seq,
        "session_compacted",
        summary=plan.summary,
        from_sequence=plan.from_sequence,
        to_sequence=plan.to_sequence,
    )


def test_nothing_to_compact() -> None:
    assert compaction_plan(conversation(), keep_messages=10) is None
    assert compaction_plan(conversation(), keep_messages=100) is None
    assert compaction_plan([ev(1, "session_created")], keep_messages=0) is None
    everything = compaction_plan(conversation(), keep_messages=0)
    assert everything is not None
    assert everything.to_sequence == 14


def test_a_second_compaction_covers_the_first() -> None:
    first = compaction_plan(conversation(), keep_messages=5)
    assert first is not None
    events = [
        *conversation(),
        compacted(first),
        ev(16, "message_sent", role="user", content="q3"),
        ev(17, "message_received", content="a3"),
    ]
    assert compaction_plan(events, keep_messages=7) is None  # would end before the first
    second = compaction_plan(events, keep_messages=1)
    assert second is not None
    assert (second.from_sequence, second.to_sequence) == (1, 16)
    assert "Earlier summary:\n" + first.summary in second.summary
    transcript = continuation_transcript([*events, compacted(second, 18)])
    assert [m["content"] for m in transcript.messages] == [second.summary, "a3"]


def test_the_extractive_summary() -> None:
    plan = compaction_plan(conversation(), keep_messages=1)
    assert plan is not None
    assert plan.summary == (
        "Summary of the earlier conversation (events 1-10, compacted): 2 user message(s), "
        "1 assistant message(s), 3 tool call(s).\n\n"
        "Tools used: cat x2, ls x1.\n\n"
        "User requests:\n- q1\n- q2\n\n"
        "Last assistant reply:\na1"
    )
    assert compaction_plan(conversation(), keep_messages=1) == plan  # deterministic
    short = compaction_plan(conversation(), keep_messages=1, summary_max_chars=60)
    assert short is not None
    assert len(short.summary) == 60


def test_a_provided_summary_and_keep_chars() -> None:
    plan = compaction_plan(conversation(), keep_messages=1, summary="  my words ")
    assert plan is not None
    assert (plan.summary, plan.method) == ("my words", "provided")
    by_size = compaction_plan(conversation(), keep_chars=2)  # only "a2" fits
    assert by_size is not None
    assert by_size.messages_kept == 1


# --------------------------------------------------------------------------- the service


def bearer(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice")


def three_runs(owner: User | None) -> uuid.UUID:
    """A session with three echo runs (the second with a tool call); its id."""
    return echo_session_execute(
        [
            ("first question", {}),
            ("second question", {"tool_calls": [{"name": "ls", "output": "a b"}]}),
            ("third question", {}),
        ],
        agent_id="compaction",
        owner=owner,
    )


def test_session_compact_writes_one_event(alice: User) -> None:
    sid = three_runs(alice)
    before = list(Event.objects.filter(session_id=sid).order_by("sequence_number").values())
    result = session_compact(session_id=sid, keep_messages=2, actor=alice)
    assert result.compacted
    assert result.event is not None
    after = list(Event.objects.filter(session_id=sid).order_by("sequence_number").values())
    assert after[:-1] == before  # nothing changed, one event added
    assert after[-1]["type"] == "session_compacted"
    assert after[-1]["run_id"] is None
    assert after[-1]["metadata"] == {"actor": f"user:{alice.pk}"}
    assert result.event.data["reason"] == "manual"
    assert result.event.data["messages_kept"] == 2

    transcript = continuation_transcript(continuation_events(DjangoSessionStore(), sid))
    assert [(m["role"], m["content"]) for m in transcript.messages] == [
        ("system", result.event.data["summary"]),
        ("user", "third question"),
        ("assistant", "third question"),
    ]
    assert "second question" in result.event.data["summary"]
    assert "ls x1" in result.event.data["summary"]

    again = session_compact(session_id=sid, keep_messages=2)
    assert not again.compacted
    assert Event.objects.filter(session_id=sid).count() == len(after)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"keep_messages": -1}, "keep_messages"),
        ({"keep_messages": True}, "keep_messages"),
        ({"keep_messages": "2"}, "keep_messages"),
        ({"keep_messages": 10_001}, "keep_messages"),
        ({"summary": "   "}, "summary"),
        ({"summary": 3}, "summary"),
    ],
)
def test_bad_input_writes_nothing(alice: User, kwargs: dict[str, Any], field: str) -> None:
    sid = session_create(agent_id="compaction", owner=alice).id
    count = Event.objects.count()
    with pytest.raises(AsmError) as info:
        session_compact(session_id=sid, **kwargs)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field
    assert Event.objects.count() == count


def test_a_session_without_messages(alice: User) -> None:
    sid = session_create(agent_id="compaction", owner=alice).id
    assert not session_compact(session_id=sid, keep_messages=0).compacted
    assert compaction_plan([], keep_messages=0) is None


@pytest.mark.django_db
def test_unknown_session() -> None:
    with pytest.raises(AsmError) as info:
        session_compact(session_id=uuid.uuid4())
    assert info.value.code == "session_not_found"


def test_a_running_run_is_left_alone(alice: User) -> None:
    sid = three_runs(alice)
    store = DjangoSessionStore()
    store.run_save(RunRecord(session_id=sid, provider="echo", input={"prompt": "running"}))
    running = store.run_claim_next(sid, owner=OWNER, lease_ms=15_000)
    assert running is not None
    [first, *_] = store.event_append_many(
        sid,
        [
            NewEvent("message_sent", {"role": "user", "content": "running"}, running.id),
            NewEvent("message_streamed", {"delta": "part"}, running.id),
        ],
    )
    result = session_compact(session_id=sid, keep_messages=0)
    assert result.event is not None
    assert result.event.data["to_sequence"] < first.sequence_number
    assert "running" not in result.event.data["summary"]


# --------------------------------------------------------------------------- the API


def test_api(alice: User) -> None:
    sid = three_runs(alice)
    api = bearer(alice)
    url = f"/api/v1/sessions/{sid}/compact"
    response = api.post(url, {"keep_messages": 2, "summary": "We talked."}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["compacted"] is True
    event = body["event"]
    assert event["type"] == "session_compacted"
    assert event["data"]["summary"] == "We talked."
    assert event["data"]["method"] == "provided"
    assert event["sequence_number"] == Event.objects.filter(session_id=sid).count()

    again = api.post(url, {"keep_messages": 2}, format="json")
    assert again.status_code == 200
    assert again.json() == {"compacted": False, "event": None}

    bad = api.post(url, {"keep_messages": -3}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"

    bob = bearer(User.objects.create_user("bob"))
    assert bob.post(url, {}, format="json").status_code == 404
    assert APIClient().post(url, {}, format="json").status_code == 401
    missing = api.post(f"/api/v1/sessions/{uuid.uuid4()}/compact", {}, format="json")
    assert missing.json()["error"]["code"] == "session_not_found"
