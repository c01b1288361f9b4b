"""`GET /api/v1/sessions/{id}/events/stream`: a session's events as Server-Sent Events.

The same feed as the WebSocket (`events.streaming.SessionEventFeed`: join the group, backfill
after the cursor, forward live events exactly once and in order). The same query
parameters: `after`, `type` (repeatable or comma-separated), `run_id`; `Last-Event-ID`
resumes too (the cursor is the larger of it and `after`). Credentials as for the
WebSocket (`asm_project.ws_auth.request_user`).

Wire format (`text/event-stream`): first `retry: 1000`; then per event `id: <sequence>` and
`data: <event JSON>` (`events.publish.event_json`, on one line); a `: ping` comment after
`ASM_WS_HEARTBEAT_S` without a frame. A subscriber more than `ASM_STREAM_BUFFER` events
behind gets `event: overflow` (data: the reason) and the stream ends; it reconnects with its
last id. Errors before the stream starts are the JSON envelope: 401 no valid credentials,
404 no such session (also another owner's, as everywhere on HTTP), 400 bad parameters,
405 another method.

An async view over an async generator, served on the event loop: no thread per client.
Django runs a request's synchronous parts (middleware, signals) on a one-thread executor
of the request's own; `_release_request_thread` lets that thread go once the response
has started, and the feed's database reads use the loop's shared pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from asgiref.sync import SyncToAsync
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from asm_core.errors import AsmError
from asm_project.errors import error_response
from asm_project.ws_auth import request_user
from events.streaming import (
    EventFrame,
    Frame,
    SessionEventFeed,
    StreamOverflow,
    db_call,
    feed_subscription,
    stream_params_parse,
)
from sessions.selectors import session_get_for_user

logger = logging.getLogger(__name__)

RETRY_MS = 1000
TOO_SLOW_REASON = "too slow: reconnect with after=<last sequence received>"


def sse_frame(frame: Frame) -> bytes:
    """One frame in `text/event-stream` form."""
    if isinstance(frame, EventFrame):
        return f"id: {frame.sequence}\ndata: {frame.json(compact=True)}\n\n".encode()
    return b": ping\n\n"


def overflow_frame(last_sent: int) -> bytes:
    data = json.dumps({"reason": TOO_SLOW_REASON, "last_sent": last_sent})
    return f"event: overflow\ndata: {data}\n\n".encode()


async def event_stream(feed: SessionEventFeed) -> AsyncGenerator[bytes, None]:
    """The response body: join the group, then the feed's frames, until the client leaves."""
    _release_request_thread()
    yield f"retry: {RETRY_MS}\n\n".encode()
    try:
        async with feed_subscription(feed), aclosing(feed.frames()) as frames:
            async for frame in frames:
                yield sse_frame(frame)
    except StreamOverflow as exc:
        yield overflow_frame(exc.last_sent)


def _release_request_thread() -> None:
    """Let the request's own sync thread go while the stream lasts (see the docstring).

    Django's ASGI handler gives each request a `ThreadSensitiveContext`: its synchronous
    parts run on a one-thread executor that lives until the request ends, i.e. for a
    stream, until the client leaves. Every synchronous part has run when the body starts,
    so the executor is shut down here; anything synchronous later (`response.close`) gets a
    fresh one. Only executors asgiref created itself are touched.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


@csrf_exempt  # read-only: any other method is answered 405 in the envelope
async def session_events_stream(request: HttpRequest, session_id: str) -> HttpResponseBase:
    """SessionEventsStreamApi: the SSE endpoint (see the module docstring)."""
    if request.method not in ("GET", "HEAD"):
        refused = error_response(AsmError("method_not_allowed", "Only GET is allowed"))
        refused["Allow"] = "GET, HEAD"
        return refused
    user = await request_user(request)
    if not user.is_authenticated:
        refused = error_response(AsmError("authentication_required"))
        refused["WWW-Authenticate"] = 'Bearer realm="api"'
        return refused
    try:
        session = await db_call(session_get_for_user)(session_id=session_id, user=user)
        query = {key: request.GET.getlist(key) for key in request.GET}
        params = stream_params_parse(query, last_event_id=request.headers.get("Last-Event-ID"))
    except AsmError as exc:
        return error_response(exc)
    feed = SessionEventFeed(session_id=session.id, params=params)
    response = StreamingHttpResponse(event_stream(feed), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies: do not buffer the stream
    return response
