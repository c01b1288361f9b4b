"""`runs.transcript`: the seed's pinned transcript examples (spec 6.2, 6.3) and asm's fixes.

Pinned from the spec: (a) out-of-order events with tool-id and tool-input fallbacks; (b)
sequenced events before unsequenced ones, which go by timestamp then id; (c) a stream closed
by `message_received` is one message; the store variant and its incremental update (2 events,
then a third). asm's fixes: a stream split across an incremental boundary stays ONE message
(in fact every split of a session's events gives the same transcript as one build), and a
reply streamed before a tool call and confirmed after it is not duplicated.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.records import NewEvent, RunRecord, SessionRecord
from asm_core.store import SessionStore
from runs.transcript import (
    Transcript,
    transcript_build,
    transcript_from_store,
    transcript_update,
    transcript_update_from_store,
)

SID = "11111111-2222-3333-4444-555555555555"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = {"role", "content", "tool_call_id", "tool_name", "tool_input", "tool_output", "metadata"}


def ev(seq: int | None, type_: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    event = {
        "id": extra.pop("id", f"evt_{seq if seq is not None else 'x'}"),
        "session_id": SID,
        "run_id": extra.pop("run_id", None),
        "sequence_number": seq,
        "type": type_,
        "data": data,
        "metadata": extra.pop("metadata", {}),
        "timestamp": extra.pop("timestamp", T0 + timedelta(seconds=seq or 0)),
    }
    assert not extra
    return event


def plain(t: Transcript) -> list[dict[str, Any]]:
    """The messages without their metadata (for comparing conversations)."""
    return [{k: v for k, v in m.items() if k != "metadata"} for m in t.messages]


def msg(role: str, content: str | None = None, **tool: Any) -> dict[str, Any]:
    return {
        "role": role,
        "content": content,
        "tool_call_id": tool.get("tool_call_id"),
        "tool_name": tool.get("tool_name"),
        "tool_input": tool.get("tool_input"),
        "tool_output": tool.get("tool_output"),
    }


# --------------------------------------------------------------------------- spec 6.2 pinned


def test_pinned_a_out_of_order_events_with_tool_fallbacks() -> None:
    events = [
        ev(4, "tool_call_completed", {"call_id": "c1", "tool_name": "search", "output": {"n": 3}}),
        ev(
            2,
            "tool_call_started",
            {"tool_use_id": "c1", "tool_name": "search", "input": {"q": "x"}},
        ),
        ev(1, "message_sent", {"role": "user", "content": "find me something"}),
        ev(3, "message_received", {"content": "working on it"}),
    ]
    t = transcript_build(events)
    assert plain(t) == [
        msg("user", "find me something"),
        msg("assistant", tool_call_id="c1", tool_name="search", tool_input={"q": "x"}),
        msg("assistant", "working on it"),
        msg("tool", tool_call_id="c1", tool_name="search", tool_output={"n": 3}),
    ]
    assert t.last_sequence == 4
    assert t.last_timestamp == T0 + timedelta(seconds=4)
    assert t.session_id == SID
    assert t.metadata == {}
    assert all(set(m) == KEYS for m in t.messages)
    assert t.messages[0]["metadata"] == {
        "event_id": "evt_1",
        "timestamp": (T0 + timedelta(seconds=1)).isoformat(),
        "sequence_number": 1,
    }


def test_pinned_b_sequenced_first_then_timestamp_then_id() -> None:
    late, early = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)
    events = [
        ev(None, "message_sent", {"content": "loose late"}, id="b", timestamp=late),
        ev(None, "message_sent", {"content": "loose no time"}, id="a", timestamp=None),
        ev(2, "message_sent", {"content": "seq 2"}),
        ev(None, "message_sent", {"content": "loose early z"}, id="z", timestamp=early),
        ev(None, "message_sent", {"content": "loose early y"}, id="y", timestamp=early),
        ev(1, "message_sent", {"content": "seq 1"}),
    ]
    t = transcript_build(events)
    assert [m["content"] for m in t.messages] == [
        "seq 1",
        "seq 2",
        "loose early y",
        "loose early z",
        "loose late",
        "loose no time",
    ]
    assert t.last_sequence == 2
    assert t.last_timestamp is None  # the last event in sorted order has none


def test_pinned_c_streamed_chunks_then_received_are_one_message() -> None:
    events = [
        ev(1, "message_streamed", {"delta": "Hello"}),
        ev(2, "message_streamed", {"content": " world"}),
        ev(3, "message_received", {"content": "Hello world", "role": "assistant"}),
    ]
    t = transcript_build(events)
    assert plain(t) == [msg("assistant", "Hello world")]
    assert t.messages[0]["metadata"]["sequence_number"] == 2  # the stream's metadata
    assert t.pending is None


# --------------------------------------------------------------------------- the other rules


def test_stream_rules() -> None:
    events = [
        ev(1, "message_streamed", {"delta": "Hel", "content": "ignored"}, metadata={"a": 1}),
        ev(2, "token_usage_updated", {"input_tokens": 1}),  # ignored: the stream stays open
        ev(3, "message_streamed", {"delta": ""}),  # empty chunk: ignored
        ev(4, "message_streamed", {"delta": 42}, metadata={"b": 2}),  # printed
        ev(5, "message_received", {"content": "", "role": "ASSISTANT"}),  # buffered text wins
        ev(6, "message_streamed", {"delta": "tail"}),
        ev(7, "message_sent", {"content": "next", "role": "Developer"}),  # unknown -> user
        ev(8, "message_streamed", {"delta": "open"}),
        ev(9, "run_completed", {}),
    ]
    t = transcript_build(events)
    assert plain(t) == [
        msg("assistant", "Hel42"),
        msg("assistant", "tail"),
        msg("user", "next"),
        msg("assistant", "open"),  # flushed at the end
    ]
    assert t.messages[0]["metadata"] == {
        "event_id": "evt_4",
        "timestamp": (T0 + timedelta(seconds=4)).isoformat(),
        "sequence_number": 4,
        "a": 1,
        "b": 2,
    }
    assert t.starts == (1, 6, 7, 8)
    assert t.last_sequence == 9
    assert t.pending is not None
    assert t.pending.text == "open"


def test_received_with_another_role_flushes_the_stream_first() -> None:
    events = [
        ev(1, "message_streamed", {"delta": "partial"}),
        ev(2, "message_received", {"content": "a tool says", "role": "tool"}),
        ev(3, "message_received", {"content": {"k": [1]}, "role": "user"}),
        ev(4, "message_received", {"content": None}),
    ]
    assert plain(transcript_build(events)) == [
        msg("assistant", "partial"),
        msg("tool", "a tool says"),
        msg("user", '{"k": [1]}'),
    ]


def test_tool_messages_fallbacks_and_failures() -> None:
    events = [
        ev(1, "tool_call_started", {"tool_call_id": "a", "tool_name": 7, "arguments": {"x": 1}}),
        ev(2, "tool_call_started", {"call_id": "b", "tool_name": "t", "tool_input": "not a map"}),
        ev(3, "tool_call_completed", {"tool_call_id": "a", "tool_name": "7", "result": [1, 2]}),
        ev(4, "tool_call_failed", {"tool_call_id": "b", "tool_name": "t", "content": "boom"}),
        ev(5, "tool_call_completed", {"tool_name": "t", "tool_output": False, "output": "o"}),
    ]
    t = transcript_build(events)
    assert plain(t) == [
        msg("assistant", tool_call_id="a", tool_name="7", tool_input={"x": 1}),
        msg("assistant", tool_call_id="b", tool_name="t"),
        msg("tool", tool_call_id="a", tool_name="7", tool_output=[1, 2]),
        msg("tool", tool_call_id="b", tool_name="t", tool_output="boom"),
        msg("tool", tool_name="t", tool_output="o"),  # False counts as absent (seed `||`)
    ]
    assert t.messages[3]["metadata"]["is_error"] is True
    assert "is_error" not in t.messages[2]["metadata"]


def test_a_reply_streamed_before_a_tool_call_is_not_duplicated() -> None:
    """The claude adapter's order: deltas, tool_call_started, then message_received."""
    events = [
        ev(1, "message_sent", {"role": "user", "content": "weather?"}),
        ev(2, "message_streamed", {"delta": "Let me "}),
        ev(3, "message_streamed", {"delta": "check."}),
        ev(4, "tool_call_started", {"tool_call_id": "t1", "tool_name": "w", "tool_input": {}}),
        ev(5, "message_received", {"content": "Let me check.", "role": "assistant"}),
        ev(6, "tool_call_completed", {"tool_call_id": "t1", "tool_name": "w", "tool_output": 21}),
        ev(7, "message_streamed", {"delta": "21C"}),
        ev(8, "message_received", {"content": "21C", "role": "assistant"}),
        ev(9, "message_received", {"content": "21C", "role": "assistant"}),  # a real repeat
    ]
    assert plain(transcript_build(events)) == [
        msg("user", "weather?"),
        msg("assistant", "Let me check."),
        msg("assistant", tool_call_id="t1", tool_name="w", tool_input={}),
        msg("tool", tool_call_id="t1", tool_name="w", tool_output=21),
        msg("assistant", "21C"),
        msg("assistant", "21C"),
    ]


def test_max_messages_keeps_the_newest() -> None:
    events = [ev(i, "message_sent", {"content": f"m{i}"}) for i in range(1, 6)]
    assert [m["content"] for m in transcript_build(events, max_messages=2).messages] == [
        "m4",
        "m5",
    ]
    for ignored in (0, -1, True, "2", None):
        assert len(transcript_build(events, max_messages=ignored).messages) == 5  # type: ignore[arg-type]


def test_session_id() -> None:
    assert transcript_build([], session_id="s").session_id == "s"
    assert transcript_build([], session_id="s").messages == ()
    with pytest.raises(AsmError) as info:
        transcript_build([])
    assert info.value.code == "validation_error"
    with pytest.raises(AsmError):
        transcript_build([{"type": "message_sent", "data": {"content": "x"}}])


def test_records_and_to_dict() -> None:
    t = transcript_build(
        [ev(1, "message_sent", {"content": "hi"}, run_id="r1")],
        session_id=uuid.UUID(SID),
    )
    out = t.to_dict()
    assert out["session_id"] == SID
    assert out["last_timestamp"] == (T0 + timedelta(seconds=1)).isoformat()
    assert out["messages"][0]["metadata"]["run_id"] == "r1"
    assert set(out) == {"session_id", "messages", "last_sequence", "last_timestamp", "metadata"}


# --------------------------------------------------------------------------- incremental


def session_events() -> list[dict[str, Any]]:
    """Every rule at once: chunks with metadata, tools, ignored types, the tool-call dedup."""
    return [
        ev(1, "session_created", {}),
        ev(2, "message_sent", {"role": "user", "content": "hi"}),
        ev(3, "run_started", {}),
        ev(4, "message_streamed", {"delta": "He"}, metadata={"m": 1}),
        ev(5, "message_streamed", {"delta": "llo"}),
        ev(6, "token_usage_updated", {"input_tokens": 2}),
        ev(7, "message_streamed", {"delta": "!"}, metadata={"m": 2, "n": 1}),
        ev(8, "message_received", {"content": "Hello!"}),
        ev(9, "message_streamed", {"delta": "Let me look."}),
        ev(10, "tool_call_started", {"tool_call_id": "t", "tool_name": "ls", "tool_input": {}}),
        ev(11, "message_received", {"content": "Let me look."}),
        ev(12, "tool_call_completed", {"tool_call_id": "t", "tool_name": "ls", "output": "a"}),
        ev(13, "message_streamed", {"delta": "Found "}),
        ev(14, "message_streamed", {"delta": "a."}),
        ev(15, "run_completed", {}),
        ev(16, "message_sent", {"role": "user", "content": "thanks"}),
        ev(17, "message_streamed", {"delta": "You're "}),
        ev(18, "message_streamed", {"delta": "welcome"}),
    ]


def test_every_incremental_split_equals_one_build() -> None:
    events = session_events()
    whole = transcript_build(events)
    assert [m["content"] for m in whole.messages] == [
        "hi",
        "Hello!",
        "Let me look.",
        None,
        None,
        "Found a.",
        "thanks",
        "You're welcome",
    ]
    for k in range(len(events) + 1):
        for j in range(k, len(events) + 1):
            first = transcript_build(events[:k], session_id=SID)
            second = transcript_update(first, events[k:j])
            third = transcript_update(second, events[j:])
            assert third.messages == whole.messages, (k, j)
            assert third.starts == whole.starts
            assert third.last_sequence == whole.last_sequence
            assert third.pending == whole.pending


def test_a_stream_split_across_the_boundary_is_one_message() -> None:
    events = [
        ev(1, "message_sent", {"content": "q"}),
        ev(2, "message_streamed", {"delta": "Hello"}),
        ev(3, "message_streamed", {"delta": " world"}),
        ev(4, "message_received", {"content": "Hello world"}),
    ]
    before = transcript_build(events[:2])
    assert [m["content"] for m in before.messages] == ["q", "Hello"]  # provisional
    after = transcript_update(before, events[2:])
    assert [m["content"] for m in after.messages] == ["q", "Hello world"]


def test_update_skips_known_events_and_keeps_max_messages() -> None:
    events = [ev(i, "message_sent", {"content": f"m{i}"}) for i in range(1, 5)]
    t = transcript_build(events[:3], max_messages=2)
    assert [m["content"] for m in t.messages] == ["m2", "m3"]
    t = transcript_update(t, events, max_messages=2, metadata={"k": "v"})  # 1-3 already in
    assert [m["content"] for m in t.messages] == ["m3", "m4"]
    assert t.last_sequence == 4
    assert t.metadata == {"k": "v"}
    unchanged = transcript_update(t, [], max_messages=1)
    assert [m["content"] for m in unchanged.messages] == ["m4"]


# --------------------------------------------------------------------------- from the store


@pytest.mark.django_db
def test_pinned_store_build_and_update(store: SessionStore) -> None:
    session = store.session_save(SessionRecord(agent_id="a"))
    run = store.run_save(RunRecord(session_id=session.id))
    store.event_append_many(
        session.id,
        [
            NewEvent("message_sent", {"role": "user", "content": "hello"}, run.id),
            NewEvent("message_received", {"role": "assistant", "content": "hi"}, run.id),
        ],
    )
    t = transcript_from_store(store, session.id)
    assert (t.last_sequence, len(t.messages)) == (2, 2)
    assert t.messages[0]["metadata"]["run_id"] == str(run.id)
    store.event_append(
        session.id, NewEvent("message_sent", {"role": "user", "content": "follow-up"}, run.id)
    )
    t = transcript_update_from_store(store, t)
    assert (t.last_sequence, len(t.messages)) == (3, 3)
    assert t.messages[-1]["content"] == "follow-up"
    assert transcript_update_from_store(store, t) == t  # nothing new


@pytest.mark.django_db
def test_store_stream_split_and_query_options(store: SessionStore) -> None:
    session = store.session_save(SessionRecord(agent_id="a"))
    run = store.run_save(RunRecord(session_id=session.id))
    store.event_append_many(
        session.id,
        [
            NewEvent("message_sent", {"role": "user", "content": "q"}, run.id),
            NewEvent("message_streamed", {"delta": "Hel"}, run.id),
        ],
    )
    t = transcript_from_store(store, session.id)
    store.event_append_many(
        session.id,
        [
            NewEvent("message_streamed", {"delta": "lo"}, run.id),
            NewEvent("message_received", {"content": "Hello"}, run.id),
        ],
    )
    t = transcript_update_from_store(store, t)
    assert [m["content"] for m in t.messages] == ["q", "Hello"]
    oldest = transcript_from_store(store, session.id, limit=1)  # limit: the OLDEST events
    assert [m["content"] for m in oldest.messages] == ["q"]
    typed = transcript_from_store(store, session.id, types=["message_sent"], after=0)
    assert [m["content"] for m in typed.messages] == ["q"]
    with pytest.raises(AsmError) as info:
        transcript_from_store(store, session.id, bogus=1)
    assert info.value.code == "validation_error"
