"""`WS /ws/sessions/{id}/events?after=N&type=..&run_id=..`: a session's events, live.

Thin (style rule 30): it checks who is asking, validates the query, joins the session's
group and hands everything else to `events.streaming.SessionEventFeed`, the one
implementation of "every event exactly once, in order, across reconnects" that SSE uses too.

Server frames: `{"type": "event", "event": {...}}` (`events.publish.event_json`) and
`{"type": "ping"}` (heartbeat, after `ASM_WS_HEARTBEAT_S` without a frame). The socket is
read-only: what the client sends is ignored.

The handshake is answered once the subscription is in place (group joined, through
`events.streaming.feed_subscription` like SSE, not through a channel of the consumer's
own: see there why), so a client that sees the socket open misses nothing.

Close codes (a refused socket is accepted and then closed, so that the code reaches the
client):
4401 no valid credentials, 4404 no such session, 4403 the session belongs to another owner
(the contract's table; HTTP answers 404 for both), 4400 bad query parameters, 4408 too slow
(the buffer of `ASM_STREAM_BUFFER` events overflowed: reconnect with
after=<last sequence received>), 1011 an unexpected server error.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, aclosing
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from asm_core.errors import AsmError
from events.streaming import (
    LAYER_TIMEOUT_S,
    EventFrame,
    Frame,
    SessionEventFeed,
    SessionOfAnotherOwner,
    StreamOverflow,
    db_call,
    feed_subscription,
    stream_params_parse,
    subscriber_session,
)

logger = logging.getLogger(__name__)

CLOSE_BAD_PARAMETERS = 4400
CLOSE_NO_CREDENTIALS = 4401
CLOSE_OTHER_OWNER = 4403
CLOSE_NO_SUCH_SESSION = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_SERVER_ERROR = 1011
TOO_SLOW_REASON = "too slow: reconnect with after=<last sequence received>"


class SessionEventsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    # No channel of the consumer's own: the feed subscribes to the session's group through
    # `feed_subscription`, like SSE (why: its docstring). "none" names no configured layer.
    channel_layer_alias = "none"

    feed: SessionEventFeed | None = None
    subscription: AsyncExitStack | None = None
    forwarder: asyncio.Task[None] | None = None
    closing = False
    accepted = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close_with(CLOSE_NO_CREDENTIALS, "authentication required")
            return
        session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        try:
            session = await db_call(subscriber_session)(session_id=session_id, user=user)
        except SessionOfAnotherOwner:
            await self.close_with(CLOSE_OTHER_OWNER, "session of another owner")
            return
        except AsmError:
            await self.close_with(CLOSE_NO_SUCH_SESSION, "session not found")
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        try:
            params = stream_params_parse(query)
        except AsmError as exc:
            await self.close_with(CLOSE_BAD_PARAMETERS, exc.message)
            return
        self.feed = SessionEventFeed(session_id=session.id, params=params)
        self.subscription = AsyncExitStack()
        await self.subscription.enter_async_context(  # join FIRST
            feed_subscription(self.feed, on_overflow=self.too_slow)
        )
        await self.accept()  # the client knows it is subscribed
        self.forwarder = asyncio.create_task(self.forward(self.feed))  # then backfill, live

    async def forward(self, feed: SessionEventFeed) -> None:
        try:
            async with aclosing(feed.frames()) as frames:
                async for frame in frames:
                    await self.send_frame(frame)
        except StreamOverflow:
            await self.close_with(CLOSE_TOO_SLOW, TOO_SLOW_REASON)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("event stream of session %s failed", feed.session_id)
            await self.close_with(CLOSE_SERVER_ERROR, "server error")

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        self.accepted = True
        await super().accept(subprotocol, headers)

    async def send_frame(self, frame: Frame) -> None:
        if isinstance(frame, EventFrame):
            # `send_json({"type": "event", "event": ...})`'s text, with the event encoded once
            # for all the session's subscribers in this process
            await self.send(text_data=f'{{"type": "event", "event": {frame.json()}}}')
        else:
            await self.send_json({"type": "ping"})

    async def too_slow(self) -> None:
        """The feed's buffer overflowed: close now, even if a send to the client is stuck."""
        await self.stop_forwarding()
        await self.close_with(CLOSE_TOO_SLOW, TOO_SLOW_REASON)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read-only socket: client frames are ignored (cancel and create go through the API)."""

    async def close_with(self, code: int, reason: str) -> None:
        """Close with `code`; before the handshake is answered, accept first (a refused
        handshake is a bare HTTP 403 and carries no code)."""
        if self.closing:
            return
        self.closing = True
        if not self.accepted:
            await self.accept()
        # A close frame's reason is at most 123 bytes of UTF-8.
        await self.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))

    async def stop_forwarding(self) -> None:
        task, self.forwarder = self.forwarder, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task}, timeout=LAYER_TIMEOUT_S)  # bounded, whatever happens

    async def disconnect(self, code: int) -> None:
        await self.stop_forwarding()
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            await subscription.aclose()  # leave the group (bounded)
