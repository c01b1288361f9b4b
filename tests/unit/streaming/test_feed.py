"""`SessionEventFeed`, the one cursor/backfill/dedupe implementation behind WS and SSE.

Driven directly: doorbell messages are handed to `offer()` (as the consumer's handler and
the SSE group listener do) while a task consumes `frames()`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from events.layers import LocalChannelLayer
from events.streaming import (
    PING,
    EventFrame,
    Frame,
    SessionEventFeed,
    StreamFilter,
    StreamOverflow,
    StreamParams,
    db_call,
    feed_subscription,
)
from tests.unit.streaming.conftest import append, append_silently, as_json, doorbell, in_thread

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]


class CountingFeed(SessionEventFeed):
    """Counts the database backfills (a fake-free way to see when the feed goes to the DB)."""

    catch_ups = 0

    def _catch_up(self) -> AsyncGenerator[Frame, None]:
        self.catch_ups += 1
        return super()._catch_up()


class Reader:
    """Consumes `feed.frames()` on a task, collecting what it yields."""

    def __init__(self, feed: SessionEventFeed) -> None:
        self.feed = feed
        self.frames: list[Frame] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.feed.frames():
                self.frames.append(frame)
        except StreamOverflow as exc:
            self.error = exc

    @property
    def sequences(self) -> list[int]:
        return [f.sequence for f in self.frames if isinstance(f, EventFrame)]

    async def until(self, predicate, timeout: float = 3) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            assert asyncio.get_running_loop().time() < deadline, self.frames
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def feed_for(
    session, *, after: int = 0, cls: type[SessionEventFeed] = SessionEventFeed, **kwargs
) -> SessionEventFeed:
    kwargs.setdefault("poll_interval_s", 60.0)
    kwargs.setdefault("heartbeat_s", 60.0)
    filter_ = kwargs.pop("filter", StreamFilter())
    return cls(session_id=session.id, params=StreamParams(after, filter_), **kwargs)


async def test_backfills_in_pages_then_follows_doorbells(session):
    await in_thread(append)(session, 9)  # 2..10
    reader = Reader(feed_for(session, after=0, page_size=4))
    await reader.until(lambda r: r.sequences[-1:] == [10])
    live = as_json(await in_thread(append_silently)(session, 2))  # 11..12
    reader.feed.offer(doorbell(session.id, live))
    await reader.until(lambda r: r.sequences[-1:] == [12])
    assert reader.sequences == list(range(1, 13))
    await reader.stop()


async def test_duplicates_and_reordering_are_dropped_and_gaps_backfilled(session):
    reader = Reader(feed_for(session, after=1, cls=CountingFeed))
    await reader.until(lambda r: cast(CountingFeed, r.feed).catch_ups == 1)
    events = as_json(await in_thread(append_silently)(session, 8))  # 2..9
    feed = reader.feed
    feed.offer(doorbell(session.id, events[0:2]))  # 2, 3
    feed.offer(doorbell(session.id, events[1:3]))  # 3 again, 4
    feed.offer(doorbell(session.id, [events[6], events[5]]))  # 8, 7: gap 5..6
    feed.offer(doorbell(session.id, events[3:5]))  # 5, 6: already backfilled
    feed.offer(doorbell(session.id, events[7:8]))  # 9
    await reader.until(lambda r: r.sequences[-1:] == [9])
    await asyncio.sleep(0.05)
    assert reader.sequences == list(range(2, 10))
    assert cast(CountingFeed, feed).catch_ups == 2  # the start, and the one gap
    assert feed.cursor == 9
    await reader.stop()


async def test_filtered_out_events_move_the_cursor_without_backfills(session, run):
    """Gaps made by the filter are not gaps in the log: no backfill is triggered."""
    await in_thread(append)(session, 3, run=run)  # 2..4
    only_started = StreamFilter(types=frozenset({"session_started"}))
    reader = Reader(feed_for(session, after=0, cls=CountingFeed, filter=only_started))
    await reader.until(lambda r: r.feed.cursor == 4)
    assert reader.sequences == []
    streamed = as_json(await in_thread(append_silently)(session, 3, run=run))  # 5..7
    started = as_json(await in_thread(append_silently)(session, 1, type="session_started"))
    reader.feed.offer(doorbell(session.id, streamed))
    reader.feed.offer(doorbell(session.id, started))
    await reader.until(lambda r: r.sequences == [8])
    assert cast(CountingFeed, reader.feed).catch_ups == 1  # only the initial backfill
    assert reader.feed.cursor == 8
    await reader.stop()


async def test_run_filter(session, run):
    await in_thread(append)(session, 2, run=run)  # 2..3
    await in_thread(append)(session, 2)  # 4..5, no run
    reader = Reader(feed_for(session, filter=StreamFilter(run_id=run.id)))
    await reader.until(lambda r: r.feed.cursor == 5)
    assert reader.sequences == [2, 3]
    live = as_json(await in_thread(append_silently)(session, 1, run=run))
    reader.feed.offer(doorbell(session.id, live))
    await reader.until(lambda r: r.sequences == [2, 3, 6])
    await reader.stop()


async def test_a_doorbell_ahead_of_the_database_waits_for_the_poll(session, settings):
    """A bell whose gap the database cannot fill yet is not forwarded out of order."""
    reader = Reader(feed_for(session, after=1, poll_interval_s=0.2))
    await reader.until(lambda r: r.feed.cursor == 1)
    future = {"sequence_number": 3, "type": "message_streamed", "run_id": None}
    reader.feed.offer(doorbell(session.id, [future]))  # 3 announced; 2 and 3 not in the DB
    await asyncio.sleep(0.1)
    assert reader.sequences == []
    await in_thread(append_silently)(session, 2)  # now 2..3 exist
    await reader.until(lambda r: r.sequences == [2, 3])
    await reader.stop()


async def test_messages_of_another_session_are_ignored(session):
    reader = Reader(feed_for(session, after=1))
    await reader.until(lambda r: r.feed.cursor == 1)
    other = {"sequence_number": 2, "type": "message_streamed", "run_id": None}
    message = doorbell(session.id, [other])
    message["session_id"] = "00000000-0000-0000-0000-000000000000"
    assert reader.feed.offer(message)
    assert reader.feed.pending == 0
    await reader.stop()


async def test_heartbeat_when_nothing_was_sent(session):
    reader = Reader(feed_for(session, after=1, heartbeat_s=0.05))
    await reader.until(lambda r: r.frames[:2] == [PING, PING])
    await reader.stop()


async def test_poll_fallback(session):
    reader = Reader(feed_for(session, after=1, poll_interval_s=0.1))
    await reader.until(lambda r: r.feed.cursor == 1)
    await in_thread(append_silently)(session, 3)
    await reader.until(lambda r: r.sequences == [2, 3, 4], timeout=2)
    await reader.stop()


async def test_overflow_refuses_further_bells_and_ends_the_frames(session):
    feed = feed_for(session, after=1, buffer_size=4)
    events = as_json(await in_thread(append_silently)(session, 9))  # 2..10
    assert feed.offer(doorbell(session.id, events[0:3]))  # taken: buffer was empty
    assert feed.offer(doorbell(session.id, events[3:4]))  # 4 events waiting: at the bound
    assert not feed.offer(doorbell(session.id, events[4:5]))  # 5 > 4: overflow
    assert feed.overflowed
    assert feed.pending == 0  # nothing is kept for a subscriber that is cut off
    assert not feed.offer(doorbell(session.id, events[5:9]))
    frames = feed.frames()
    with pytest.raises(StreamOverflow) as raised:
        async for _ in frames:
            pass
    assert "too slow: reconnect with after=<last sequence received>" in str(raised.value)


async def test_bells_already_covered_by_the_cursor_take_no_buffer(session):
    feed = feed_for(session, after=5, buffer_size=1)
    old = [{"sequence_number": n, "type": "message_streamed"} for n in range(1, 6)]
    for _ in range(10):
        assert feed.offer(doorbell(session.id, old))
    assert feed.pending == 0
    assert not feed.overflowed


# --------------------------------------------------------------------------- cancellation
class SwallowingLayer(LocalChannelLayer):
    """A layer that swallows cancellations, as redis-py can mid-command (redis-py#2028)."""

    async def group_add(self, group: str, channel: str) -> None:
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # swallowed: carries on
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            try:
                return await super().receive(channel)
            except asyncio.CancelledError:
                continue  # swallowed: waits again


async def test_db_call_lets_a_cancellation_through_while_the_query_runs():
    """asgiref's sync_to_async returns the result instead; a stream then outlives its client."""
    started = threading.Event()

    def slow_query() -> int:
        started.set()
        time.sleep(0.3)
        return 1

    task = asyncio.create_task(db_call(slow_query)())
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_leaving_works_even_when_the_layer_swallows_cancellations(session):
    layer = SwallowingLayer()
    feed = feed_for(session)
    entered = asyncio.Event()

    async def subscribed() -> None:
        async with feed_subscription(feed, layer):
            entered.set()
            await asyncio.sleep(60)

    joining = asyncio.create_task(subscribed())  # cancelled during the group join
    await asyncio.sleep(0.05)
    joining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(joining, 1)

    listening = asyncio.create_task(subscribed())  # cancelled while the pump receives
    await asyncio.wait_for(entered.wait(), 2)
    listening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(listening, 3)
    await asyncio.sleep(0.3)  # the first join, finished in the background, was undone too
    assert layer._groups == {}
    pumps = [t for t in asyncio.all_tasks() if t.get_name().startswith("asm-feed-")]
    assert pumps == []
