"""`GET /api/v1/sessions/{id}/events/stream` (SSE) through the real ASGI application.

`ApplicationCommunicator` plays the server: it sends the request, reads the response start
and body chunks as they are produced (the stream never ends by itself), and disconnects.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from events.sse import event_stream, overflow_frame
from events.streaming import SessionEventFeed, StreamParams
from tests.unit.streaming.conftest import (
    append,
    append_silently,
    as_json,
    doorbell,
    in_thread,
    ring,
)

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

Communicator: Any = ApplicationCommunicator  # untyped in asgiref


class Stream:
    """One SSE request on the ASGI app; parses `text/event-stream` as it arrives."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]] | None = None, **kw) -> None:
        from asm_project.asgi import application

        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": kw.get("method", "GET"),
            "scheme": "http",
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"localhost"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("localhost", 80),
        }
        self.comm: Any = Communicator(application, scope)
        self.buffer = ""
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.ended = False

    async def open(self) -> Stream:
        await self.comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.comm.receive_output(timeout=3)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.lower(): v for k, v in start["headers"]}
        return self

    async def body(self) -> bytes:
        """The whole body of a response that ends (an error)."""
        chunks = []
        while True:
            out = await self.comm.receive_output(timeout=3)
            chunks.append(out.get("body", b""))
            if not out.get("more_body"):
                return b"".join(chunks)

    async def frames(self, count: int, timeout: float = 3) -> list[dict[str, str]]:
        """The next `count` frames (events, comments, fields) as {field: value} dicts."""
        got: list[dict[str, str]] = []
        while len(got) < count:
            while "\n\n" in self.buffer and len(got) < count:
                block, self.buffer = self.buffer.split("\n\n", 1)
                frame: dict[str, str] = {}
                for line in block.split("\n"):
                    name, _, value = line.partition(":")
                    frame[name or "comment"] = value.removeprefix(" ")
                got.append(frame)
            if len(got) < count:
                out = await self.comm.receive_output(timeout=timeout)
                self.buffer += out.get("body", b"").decode()
                if not out.get("more_body"):
                    self.ended = True
                    break
        return got

    async def events(self, upto: int, timeout: float = 3) -> list[int]:
        """Sequence numbers of the events received until `upto` (other frames skipped)."""
        seen: list[int] = []
        while not seen or seen[-1] < upto:
            (frame,) = await self.frames(1, timeout)
            if "data" in frame and "event" not in frame:
                event = json.loads(frame["data"])
                assert int(frame["id"]) == event["sequence_number"]
                seen.append(event["sequence_number"])
        return seen

    async def close(self) -> None:
        await self.comm.send_input({"type": "http.disconnect"})
        await self.comm.wait(timeout=3)


def url(session, query: str = "") -> str:
    return f"/api/v1/sessions/{session.id}/events/stream" + (f"?{query}" if query else "")


def bearer(owner) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {owner.token}".encode())]


async def error_of(stream: Stream) -> dict[str, Any]:
    body: dict[str, dict[str, Any]] = json.loads(await stream.body())
    assert set(body) == {"error"}
    return body["error"]


# --------------------------------------------------------------------------- errors
async def test_no_credentials_401(session):
    stream = await Stream(url(session)).open()
    assert stream.status == 401
    assert stream.headers[b"www-authenticate"] == b'Bearer realm="api"'
    assert (await error_of(stream))["code"] == "authentication_required"


async def test_wrong_token_401(session):
    stream = await Stream(url(session), [(b"authorization", b"Bearer wrong")]).open()
    assert stream.status == 401


async def test_other_owner_and_missing_session_are_both_404(session, bob, alice):
    stream = await Stream(url(session), bearer(bob)).open()
    assert stream.status == 404
    assert (await error_of(stream))["code"] == "session_not_found"
    missing = "/api/v1/sessions/00000000-0000-0000-0000-000000000000/events/stream"
    stream = await Stream(missing, bearer(alice)).open()
    assert stream.status == 404


@pytest.mark.parametrize("query", ["after=-3", "type=bogus", "run_id=x"])
async def test_bad_parameters_400(session, alice, query):
    stream = await Stream(url(session, query), bearer(alice)).open()
    assert stream.status == 400
    assert (await error_of(stream))["code"] == "validation_error"


async def test_bad_last_event_id_400(session, alice):
    stream = await Stream(url(session), [*bearer(alice), (b"last-event-id", b"x")]).open()
    assert stream.status == 400


async def test_post_is_405(session, alice):
    stream = await Stream(url(session), bearer(alice), method="POST").open()
    assert stream.status == 405


# --------------------------------------------------------------------------- streaming
async def test_stream_backfills_then_follows_live(session, alice, fast_streams):
    await in_thread(append)(session, 2)  # 2..3
    stream = await Stream(url(session, "after=1"), bearer(alice)).open()
    assert stream.status == 200
    assert stream.headers[b"content-type"] == b"text/event-stream"
    assert stream.headers[b"cache-control"] == b"no-cache"
    assert await stream.frames(1) == [{"retry": "1000"}]
    first = await stream.frames(1)
    expected = as_json(await in_thread(lambda: list(session.events.filter(sequence_number=2)))())
    assert first == [{"id": "2", "data": json.dumps(expected[0], separators=(",", ":"))}]
    assert await stream.events(3) == [3]
    await in_thread(append)(session, 2)  # live: 4..5
    assert await stream.events(5) == [4, 5]
    await stream.close()


async def test_token_query_and_login_cookie(session, alice, fast_streams):
    stream = await Stream(url(session, f"token={alice.token}")).open()
    assert stream.status == 200
    assert await stream.events(1) == [1]
    await stream.close()
    cookie = await in_thread(alice.cookie)()
    stream = await Stream(url(session), [(b"cookie", cookie.encode())]).open()
    assert stream.status == 200
    assert await stream.events(1) == [1]
    await stream.close()


async def test_last_event_id_resumes_exactly_once(session, alice, fast_streams):
    await in_thread(append)(session, 5)  # 2..6
    stream = await Stream(url(session, "after=0"), bearer(alice)).open()
    got = await stream.events(3)
    await stream.close()
    headers = [*bearer(alice), (b"last-event-id", str(got[-1]).encode())]
    stream = await Stream(url(session, "after=0"), headers).open()  # as EventSource does
    got += await stream.events(6)
    await stream.close()
    assert got == [1, 2, 3, 4, 5, 6]


async def test_duplicate_and_gapped_doorbells(session, alice, fast_streams):
    stream = await Stream(url(session, "after=1"), bearer(alice)).open()
    await stream.frames(1)  # retry: the body has started, the group is joined
    lost = as_json(await in_thread(append_silently)(session, 4))  # 2..5, never rung
    await ring(session.id, lost[3:4])  # 5: gap -> backfill 2..4
    await ring(session.id, lost)  # all again
    assert await stream.events(5) == [2, 3, 4, 5]
    await stream.close()


async def test_filters_and_ping(session, run, alice, settings):
    settings.ASM_WS_HEARTBEAT_S = 0.1
    settings.ASM_STREAM_POLL_S = 60.0
    await in_thread(append)(session, 2, run=run)  # 2..3
    stream = Stream(url(session, f"run_id={run.id}&type=message_streamed"), bearer(alice))
    await stream.open()
    assert await stream.events(3) == [2, 3]
    frames = await stream.frames(1)
    assert frames == [{"comment": "ping"}]
    await stream.close()


async def test_no_thread_per_subscriber(session, alice, fast_streams):
    """Each request's own sync thread (Django's ThreadSensitiveContext) is let go once the
    stream starts: many open streams do not mean as many threads."""
    before = threading.active_count()
    streams = [Stream(url(session), bearer(alice)) for _ in range(16)]
    for s in streams:
        await s.open()
        assert await s.events(1) == [1]
    await asyncio.sleep(0.2)
    grown = threading.active_count() - before
    for s in streams:
        await s.close()
    assert grown < 8, f"{grown} more threads for 16 open streams"


async def test_overflow_ends_the_stream_with_a_reason(session):
    feed = SessionEventFeed(
        session_id=session.id, params=StreamParams(after=1), buffer_size=2, heartbeat_s=60
    )
    events = as_json(await in_thread(append_silently)(session, 6))
    assert feed.offer(doorbell(session.id, events[0:2]))
    assert not feed.offer(doorbell(session.id, events[2:4]))
    chunks = [chunk async for chunk in event_stream(feed)]
    assert chunks[0] == b"retry: 1000\n\n"
    assert chunks[-1] == overflow_frame(1)
    assert b"event: overflow" in chunks[-1]
    assert b"too slow: reconnect with after=<last sequence received>" in chunks[-1]
