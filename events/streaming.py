"""Live delivery of a session's events, shared by the WebSocket consumer and the SSE view.

One implementation of the promise both transports make (architecture 4.6, style rule 23):
a subscriber that connects with a cursor (`after`, the last sequence number it has) gets
every later event of the session exactly once, in order, live, however often it drops and
reconnects with its last sequence, and however the doorbell behaves.

How (`SessionEventFeed`):
1. The transport joins the session's channel-layer group FIRST (`session_group`), so no
   doorbell rung after the backfill began can be missed; every doorbell message goes to
   `SessionEventFeed.offer`, which never blocks and never touches the database.
2. `frames()` then backfills from the database after the cursor, then forwards live
   events: a sequence <= the cursor is dropped (duplicate, or already backfilled); a
   sequence > cursor + 1 means a gap, which is backfilled from the database before the
   live event is considered again. The database is the truth; the doorbell only says
   "look now" (and usually carries the events, saving the query).
3. While no doorbell rings, the database is polled every `ASM_STREAM_POLL_S` (a lost
   doorbell costs latency, never an event), and a heartbeat frame is produced when nothing
   was produced for `ASM_WS_HEARTBEAT_S`.

Cursor bookkeeping is over the UNFILTERED log: the cursor is the highest sequence number
accounted for, sent or filtered out. A backfill reads `latest_sequence` first (L), then the
filtered events in (cursor, L], then sets the cursor to L; every event <= L is committed
when L is visible, because a session's sequence numbers are allocated under its counter
row's lock and committed in order. So filters (`type`, `run_id`) never cause gaps that
would trigger endless backfills.

Slow subscribers: doorbell messages wait in a per-connection buffer bounded by
`ASM_STREAM_BUFFER` events. One message is always taken when the buffer is empty; when
another would take it over the bound the feed is marked overflowed: it buffers nothing more
and `frames()` raises `StreamOverflow` (the WebSocket closes with 4408, the SSE stream ends);
the subscriber reconnects with its last sequence. The publisher and the other subscribers
are never blocked.

Database work runs through `db_call`: on the event loop's shared thread pool, never on a
thread of the connection's own, and cancellable (a departed client's stream ends).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import uuid
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import close_old_connections

from asm_core.errors import AsmError
from asm_core.event_types import EventType
from events.publish import MESSAGE_TYPE, event_json, session_group
from events.selectors import event_list, latest_sequence
from sessions.models import Session
from sessions.selectors import session_get_for_user

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Largest cursor accepted (PostgreSQL bigint).
MAX_SEQUENCE = 2**63 - 1
#: Events read per backfill query.
PAGE_SIZE = 500
#: Pause before the SSE group listener retries after a channel-layer error.
RESUBSCRIBE_DELAY_S = 1.0
#: Longest wait for the channel layer when a subscription ends.
LAYER_TIMEOUT_S = 5.0
_STOP = "asm.feed.stop"
_EVENT_TYPES = frozenset(t.value for t in EventType)


def db_call(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` as a coroutine on the event loop's shared thread pool, with Django's connection
    hygiene (stale connections closed before and after, as Channels does).

    Not `database_sync_to_async`: asgiref's `SyncToAsync` (3.13) swallows a cancellation
    that arrives while the function runs and returns its result instead, so a stream whose
    client left during a query went on forever (polling, pinging a closed socket) and held
    its server's shutdown. Here a cancellation always propagates; a query already running
    finishes on its thread and its result is dropped.
    """

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, functools.partial(_with_fresh_connections, fn, *args, **kwargs)
        )

    return call


def _with_fresh_connections(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which events a subscriber wants: of these types (None: all) and of this run (None: all)."""

    types: frozenset[str] | None = None
    run_id: uuid.UUID | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self.types is not None and event.get("type") not in self.types:
            return False
        return self.run_id is None or event.get("run_id") == str(self.run_id)


@dataclass(frozen=True, slots=True)
class StreamParams:
    after: int = 0
    filter: StreamFilter = StreamFilter()


def _bad(field: str, message: str, value: object) -> AsmError:
    return AsmError("validation_error", message, {"field": field, "value": value})


def _sequence(field: str, raw: str) -> int:
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SEQUENCE:
        raise _bad(field, f"{field} must be an integer >= 0 (a sequence number)", raw)
    return int(text)


def stream_params_parse(
    query: Mapping[str, Sequence[str]], *, last_event_id: str | None = None
) -> StreamParams:
    """Validate a subscription's query (`after`, `type` repeatable or comma-separated,
    `run_id`) and the SSE `Last-Event-ID` header; `validation_error` names the bad field.
    An empty value counts as absent (`after=` is `after=0`); the last of repeats counts.

    The cursor is the larger of `after` and `Last-Event-ID` (a browser's EventSource resends
    the original URL, with its `after`, plus the last id it received).
    """

    def last(name: str) -> str | None:
        values = [v for v in query.get(name, ()) if v.strip()]
        return values[-1] if values else None

    after = 0
    if (raw_after := last("after")) is not None:
        after = _sequence("after", raw_after)
    if last_event_id is not None and last_event_id.strip():
        after = max(after, _sequence("Last-Event-ID", last_event_id))
    types: set[str] = set()
    for value in query.get("type", ()):
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name not in _EVENT_TYPES:
                raise _bad("type", f"unknown event type: {name[:60]}", name)
            types.add(name)
    run_id = None
    if (raw_run := last("run_id")) is not None:
        try:
            run_id = uuid.UUID(raw_run.strip())
        except ValueError:
            raise _bad("run_id", "run_id must be a UUID", raw_run) from None
    return StreamParams(after=after, filter=StreamFilter(frozenset(types) or None, run_id))


# --------------------------------------------------------------------------- access
class SessionOfAnotherOwner(Exception):
    """The session exists but the subscriber may not see it (WebSocket close 4403)."""


def subscriber_session(*, session_id: str, user: AbstractBaseUser | AnonymousUser) -> Session:
    """The session `user` may subscribe to (the tenancy check is `session_get_for_user`).

    Raises `session_not_found` for a missing session (or a malformed id), and
    `SessionOfAnotherOwner` when it exists but belongs to someone else: the WebSocket
    contract gives those different close codes (4404, 4403). HTTP answers 404 to both and
    calls `session_get_for_user` directly.
    """
    try:
        return session_get_for_user(session_id=session_id, user=user)
    except AsmError:
        sid = _uuid_or_none(session_id)
        if sid is not None and Session.objects.filter(id=sid).exists():
            raise SessionOfAnotherOwner(str(sid)) from None
        raise


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True)
class EventFrame:
    """One event to send: its sequence number and its public JSON (`event_json`)."""

    sequence: int
    event: dict[str, Any]

    def json(self, *, compact: bool = False) -> str:
        """The event as JSON text, encoded once per process for all its subscribers."""
        return _encoded(self.event, compact)


#: Encoded events by (event id, compact): a session's N subscribers send the same text, so
#: each event is encoded once per process, not N times (fan-out, `bench/stream_latency.py`).
_ENCODED: dict[tuple[str, bool], str] = {}
_ENCODED_MAX = 4096
_encoded_lock = threading.Lock()


def _encoded(event: Mapping[str, Any], compact: bool) -> str:
    event_id = event.get("id")
    if not isinstance(event_id, str):
        return _dumps(event, compact)
    key = (event_id, compact)
    text = _ENCODED.get(key)
    if text is None:
        text = _dumps(event, compact)
        with _encoded_lock:
            while len(_ENCODED) >= _ENCODED_MAX:
                del _ENCODED[next(iter(_ENCODED))]  # the oldest
            _ENCODED[key] = text
    return text


def _dumps(event: Mapping[str, Any], compact: bool) -> str:
    return json.dumps(event, separators=(",", ":") if compact else None)


class PingFrame:
    """The heartbeat: nothing was sent for `ASM_WS_HEARTBEAT_S`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


PING = PingFrame()
Frame = EventFrame | PingFrame


class StreamOverflow(Exception):
    """The subscriber fell more than `ASM_STREAM_BUFFER` events behind the live stream."""

    def __init__(self, last_sent: int) -> None:
        super().__init__(f"too slow: reconnect with after=<last sequence received> ({last_sent})")
        self.last_sent = last_sent


def _raise_if_cancelling() -> None:
    """A cancellation that some library swallowed still ends the stream (see `shielded`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _sequence_of(event: object) -> int | None:
    if isinstance(event, Mapping):
        seq = event.get("sequence_number")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


# --------------------------------------------------------------------------- the feed
class SessionEventFeed:
    """One subscriber's cursor over one session's log (see the module docstring).

    Use from one event loop: `offer()` from the group-message handler, `frames()` from the
    task that writes to the client.
    """

    def __init__(
        self,
        *,
        session_id: uuid.UUID,
        params: StreamParams | None = None,
        buffer_size: int | None = None,
        poll_interval_s: float | None = None,
        heartbeat_s: float | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        params = params or StreamParams()
        self.session_id = session_id
        self.filter = params.filter
        self.buffer_size = max(1, buffer_size or settings.ASM_STREAM_BUFFER)
        self.poll_interval_s = poll_interval_s or settings.ASM_STREAM_POLL_S
        self.heartbeat_s = heartbeat_s or settings.ASM_WS_HEARTBEAT_S
        self.page_size = page_size
        self._cursor = params.after
        self._last_sent = params.after
        self._inbox: deque[tuple[list[Mapping[str, Any]], int | None]] = deque()
        self._pending = 0
        self._overflowed = False
        self._wake = asyncio.Event()
        self._last_frame_at = 0.0
        #: The one timer that wakes an idle feed for its poll or heartbeat, and when.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def cursor(self) -> int:
        """The highest sequence number accounted for (sent, or filtered out)."""
        return self._cursor

    @property
    def last_sent(self) -> int:
        """The sequence number of the last event produced (the cursor the subscriber had)."""
        return self._last_sent

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    @property
    def pending(self) -> int:
        """Events (or bare doorbells) buffered and not yet taken by `frames()`."""
        return self._pending

    # ------------------------------------------------------------------ doorbell side
    def offer(self, message: Mapping[str, Any]) -> bool:
        """Take a doorbell message (`events.appended`); never blocks, never reads the DB.

        Returns False once the buffer has overflowed (the subscriber is too slow).
        """
        if self._overflowed:
            return False
        if message.get("session_id") not in (None, str(self.session_id)):
            return True
        fresh = [
            e
            for e in message.get("events") or ()
            if (seq := _sequence_of(e)) is not None and seq > self._cursor
        ]
        last = message.get("last_sequence")
        last_sequence = last if isinstance(last, int) and last > self._cursor else None
        if not fresh and last_sequence is None:
            return True  # nothing new (a duplicate, or already backfilled)
        weight = max(1, len(fresh))
        if self._inbox and self._pending + weight > self.buffer_size:
            self._overflowed = True
            self._inbox.clear()
            self._pending = 0
            self._wake.set()
            return False
        self._inbox.append((fresh, last_sequence))
        self._pending += weight
        self._wake.set()
        return True

    # ------------------------------------------------------------------ sending side
    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Backfill, then live events and heartbeats, forever; `StreamOverflow` when too slow."""
        loop = asyncio.get_running_loop()
        self._last_frame_at = loop.time()
        async with aclosing(self._frames(loop)) as frames:
            async for frame in frames:
                if self._overflowed:
                    raise StreamOverflow(self._last_sent)
                if isinstance(frame, EventFrame):
                    self._last_sent = frame.sequence
                yield frame
                self._last_frame_at = loop.time()

    async def _frames(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[Frame, None]:
        try:
            async for frame in self._catch_up():
                yield frame
            next_poll = loop.time() + self.poll_interval_s
            while True:
                if self._overflowed:
                    raise StreamOverflow(self._last_sent)
                _raise_if_cancelling()
                if self._inbox:
                    events, last_sequence = self._inbox.popleft()
                    self._pending -= max(1, len(events))
                    async for frame in self._apply(events, last_sequence):
                        yield frame
                    next_poll = loop.time() + self.poll_interval_s
                    continue
                now = loop.time()
                next_ping = self._last_frame_at + self.heartbeat_s
                if now < min(next_poll, next_ping):
                    self._wake.clear()
                    self._wake_at(loop, min(next_poll, next_ping))
                    await self._wake.wait()
                    continue
                if now >= next_poll:
                    async for frame in self._catch_up():
                        yield frame
                    next_poll = loop.time() + self.poll_interval_s
                if loop.time() >= self._last_frame_at + self.heartbeat_s:
                    yield PING
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Make sure the feed wakes by `when` (its next poll or heartbeat). One timer,
        re-armed only when it would fire too late: every doorbell pushes the poll back, and
        a timer per wait (cancelled at the next doorbell) cost about a quarter of the feed's
        time in timer-heap churn at 200 subscribers. A timer that fires early only makes the
        loop look again and re-arm."""
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    async def _apply(
        self, events: Iterable[Mapping[str, Any]], last_sequence: int | None
    ) -> AsyncGenerator[Frame, None]:
        """Forward one doorbell's events: drop what was sent, backfill any gap first."""
        for event in sorted(events, key=lambda e: cast(int, _sequence_of(e))):
            seq = cast(int, _sequence_of(event))
            if seq <= self._cursor:
                continue
            if seq > self._cursor + 1:
                async for frame in self._catch_up():
                    yield frame
                if seq <= self._cursor:
                    continue
                if seq > self._cursor + 1:
                    return  # not visible in the database yet: the next poll fetches it
            self._cursor = seq
            if self.filter.matches(event):
                yield EventFrame(seq, dict(event))
        if last_sequence is not None and last_sequence > self._cursor:
            async for frame in self._catch_up():
                yield frame

    async def _catch_up(self) -> AsyncGenerator[Frame, None]:
        """Backfill (cursor, latest] from the database, filtered, in pages."""
        latest = await db_call(latest_sequence)(session_id=self.session_id)
        while self._cursor < latest:
            page = await db_call(_event_page)(
                session_id=self.session_id,
                after=self._cursor,
                upto=latest,
                limit=self.page_size,
                stream_filter=self.filter,
            )
            for event in page:
                seq = event["sequence_number"]
                if seq <= self._cursor:
                    continue
                self._cursor = seq
                yield EventFrame(seq, event)
            if len(page) < self.page_size:
                self._cursor = max(self._cursor, latest)


def _event_page(
    *, session_id: uuid.UUID, after: int, upto: int, limit: int, stream_filter: StreamFilter
) -> list[dict[str, Any]]:
    """The filtered events in (after, upto] as public JSON, oldest first, at most `limit`."""
    return [
        event_json(e)
        for e in event_list(
            session_id=session_id,
            after=after,
            before=upto + 1,
            limit=limit,
            types=stream_filter.types,
            run_id=stream_filter.run_id,
        )
    ]


# --------------------------------------------------------------------------- group listener
async def shielded(awaitable: Awaitable[R]) -> R:
    """Await a channel-layer call in a task of its own, through `asyncio.shield`.

    redis-py can swallow a cancellation that lands in the middle of a command (seen here
    with `group_add`: redis/redis-py#2028 is the same family): the caller would then never
    learn that its client left. Shielded, the caller's cancellation always propagates; the
    layer call finishes (or fails) on its own.
    """
    return await asyncio.shield(awaitable)


async def _settle(task: asyncio.Future[Any], timeout: float = LAYER_TIMEOUT_S) -> None:
    """Wait (bounded) for a background layer call to end; never raises."""
    with suppress(Exception, asyncio.CancelledError):
        await asyncio.wait({task}, timeout=timeout)
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.warning("channel-layer call failed", exc_info=task.exception())


class _SessionHub:
    """One group membership per session, per event loop and layer, shared by all the local
    subscribers of the session: one channel joined to the session's group, one pump that
    receives each doorbell once and offers it to every subscriber's feed.

    Without it every subscriber joined the group with a channel of its own, so a doorbell
    was one channel-layer message PER SUBSCRIBER: channels_redis pushed N copies into the
    server process's one queue and popped them one Redis round trip at a time, and beyond
    its channel capacity (100) dropped the rest, which then waited for the gap backfill or
    the 1 s poll (`bench/stream_latency.py`: p50 2.3 s at 200 subscribers). Now it is one
    message per session and server process, fanned out in memory (`offer` never blocks).
    """

    def __init__(self, layer: Any, session_id: uuid.UUID) -> None:
        self.layer = layer
        self.session_id = session_id
        self.group = session_group(session_id)
        #: The feeds to offer each doorbell to, and what to call when one overflows.
        self.feeds: dict[SessionEventFeed, Callable[[], Awaitable[None]] | None] = {}
        self.closing = False
        self.stopping = asyncio.Event()
        self.channel = ""
        self.callbacks: set[asyncio.Future[None]] = set()
        # Both start at once, on the running loop: the join, and the pump that awaits it.
        self.joined: asyncio.Future[None] = asyncio.ensure_future(self._join())
        self.task = asyncio.create_task(self._pump(), name=f"asm-feed-{session_id}")

    @property
    def usable(self) -> bool:
        """Not torn down, and its group join has not failed."""
        joined = self.joined
        failed = joined.done() and (joined.cancelled() or joined.exception() is not None)
        return not self.closing and not failed

    async def _join(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)

    async def _pump(self) -> None:
        try:
            await shielded(self.joined)
        except Exception:
            return  # the subscribers waiting for the join get the error
        while not self.stopping.is_set():
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # meanwhile the database poll delivers, only later
                logger.warning("doorbell of session %s failed", self.session_id, exc_info=True)
                await asyncio.sleep(RESUBSCRIBE_DELAY_S)
                with suppress(Exception):  # the layer may have lost the membership
                    await self.layer.group_add(self.group, self.channel)
                continue
            if message.get("type") == MESSAGE_TYPE:
                self.offer(message)

    def offer(self, message: Mapping[str, Any]) -> None:
        for feed, on_overflow in list(self.feeds.items()):
            if feed.offer(message):
                continue
            # Too slow: this feed takes nothing more (`frames()` raises at its next step);
            # its callback runs on its own, so a stuck client holds up nobody else.
            del self.feeds[feed]
            if on_overflow is not None:
                callback = asyncio.ensure_future(on_overflow())
                self.callbacks.add(callback)
                callback.add_done_callback(self._callback_done)

    def _callback_done(self, callback: asyncio.Future[None]) -> None:
        self.callbacks.discard(callback)
        if not callback.cancelled() and callback.exception() is not None:
            logger.warning("overflow handler failed", exc_info=callback.exception())

    async def close(self) -> None:
        """Stop the pump and leave the group; every wait is bounded, nothing raises."""
        self.closing = True
        self.stopping.set()
        self.task.cancel()
        await _settle(self.task, 1.0)
        if not self.task.done() and self.channel:  # the layer swallowed the cancel: wake it
            await _settle(asyncio.ensure_future(self.layer.send(self.channel, {"type": _STOP})))
            await _settle(self.task)
        await _settle(self.joined)  # a join still in flight must not outlive the discard
        if self.channel:
            await _settle(asyncio.ensure_future(self.layer.group_discard(self.group, self.channel)))


#: The live hubs: per event loop, per (layer, session).
_hubs: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, uuid.UUID], _SessionHub]
] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def feed_subscription(
    feed: SessionEventFeed,
    layer: Any = None,
    on_overflow: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    """Subscribe `feed` to its session's doorbells, in place once this is entered;
    `on_overflow` is awaited (on a task of its own) when the feed refuses one (the
    subscriber is too slow).

    Subscribers of one session on one event loop share one group membership
    (`_SessionHub`): the first one in joins the group, the last one out leaves it.

    Both transports subscribe through this, not through a Channels consumer's own channel:
    when a consumer ends, Channels cancels its pending `layer.receive` and waits for it, and
    redis-py can swallow that cancellation (see `shielded`), leaving the consumer running
    forever (seen in the integration tier). Here every layer call on the way in and out is
    shielded or bounded, and a receive that ignores its cancellation is woken by a message.
    Without a channel layer the feed still works from the database poll alone.
    """
    layer = layer if layer is not None else get_channel_layer()
    if layer is None:
        yield
        return
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    key = (layer, feed.session_id)
    hub = hubs.get(key)
    if hub is None or not hub.usable:
        hub = hubs[key] = _SessionHub(layer, feed.session_id)
    hub.feeds[feed] = on_overflow  # before the join completes: no doorbell after it is missed
    try:
        await shielded(hub.joined)
        yield
    finally:
        hub.feeds.pop(feed, None)
        if not hub.feeds and not hub.closing:
            hub.closing = True
            if hubs.get(key) is hub:
                del hubs[key]
            await hub.close()
