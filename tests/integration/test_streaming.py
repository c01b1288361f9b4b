"""Live streaming over REAL sockets: uvicorn web processes, a `celery worker`, PostgreSQL, Redis.

Topology (started once for the module): two `uvicorn asm_project.asgi:application`
processes on free loopback ports, both on channels_redis with a channel prefix of this
module's own (`ASM_CHANNELS_PREFIX`), and one `celery worker` process
(`tests/integration/celery_workers.py`) that executes the runs and appends their events;
its publisher rings the doorbells through Redis with the same prefix. Clients: the
`websockets` package and httpx (`httpx2`) streaming for SSE, in this process.

The web processes poll the database only every 30 s (`ASM_STREAM_POLL_S`), far longer than
any test here waits: what arrives in time arrived through the doorbell or a gap backfill.

(a) exactly once, in order, across reconnects: one run of ~506 events; WebSocket and SSE
    subscribers drop their connection at 20 random points each (alternating clean closes
    and aborted TCP connections, `after=` and `Last-Event-ID`) and resume from their last
    sequence; each ends with exactly 1..N. A filtered subscriber reconnects too.
(b) fan-out across web processes: subscribers on both processes (WS and SSE) receive every
    event written by the worker process.
(c) credentials, tenancy and parameters: the documented close codes and HTTP statuses; the
    login cookie; a foreign Origin; no thread per SSE subscriber in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from events.selectors import latest_sequence
from runs.models import Run
from runs.services import run_submit
from sessions.services import session_create
from tests.integration.asgi_server import AsgiServer
from tests.integration.celery_workers import WorkerPool, use_pool, worker_pool
from tests.integration.conftest import child_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHANNELS_PREFIX = f"asm-stream-test-{uuid.uuid4().hex[:12]}"
SEED = int(os.environ.get("ASM_STREAM_TEST_SEED") or random.randrange(1_000_000))
LONG_RUN = {"adapter_opts": {"repeat": 250, "delay_ms": 4}}  # 500 chunks over ~2 s
SHORT_RUN = {"adapter_opts": {"repeat": 60, "delay_ms": 2}}  # 120 chunks
IDLE_S = 6.5


# --------------------------------------------------------------------------- processes
class WebServer(AsgiServer):
    """One web process of the test (channels-redis, a long DB poll so the doorbell counts)."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        env = {
            **child_env(),
            "ASM_CHANNELS_PREFIX": CHANNELS_PREFIX,
            "ASM_STREAM_POLL_S": "30",
            "ASM_WS_HEARTBEAT_S": "15",
        }
        # uvicorn's INFO line for the cut of open streams, which `stop` looks for
        super().__init__(env, log_dir / f"{name}.log", ["--log-level", "info"])

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads:")))

    def leftover_tasks(self) -> str | None:
        """uvicorn's complaint if, at shutdown, some connection's task was still running:
        a stream that outlived its client (every client has left by then)."""
        lines = [ln for ln in self.log().splitlines() if "graceful shutdown exceeded" in ln]
        return lines[0] if lines else None


@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory) -> Iterator[list[WebServer]]:
    log_dir = tmp_path_factory.mktemp("web")
    servers = [WebServer(f"web{i}", log_dir) for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
        connection.close()
    leftovers = {s.name: s.leftover_tasks() for s in servers if s.leftover_tasks()}
    assert not leftovers, f"streams outlived their clients: {leftovers}"


@pytest.fixture(scope="module")
def pool(django_db_setup, tmp_path_factory) -> Iterator[WorkerPool]:
    extra = {"ASM_CHANNELS_PREFIX": CHANNELS_PREFIX}
    with worker_pool(1, log_dir=tmp_path_factory.mktemp("workers"), extra_env=extra) as p:
        yield p


@pytest.fixture
def workers(pool, settings, transactional_db) -> Iterator[WorkerPool]:
    with use_pool(pool, settings):
        yield pool


def logs(web: list[WebServer], pool: WorkerPool | None = None) -> str:
    parts = [f"----- {s.name} -----\n{s.log()}" for s in web]
    if pool is not None:
        parts.append(pool.logs(tail=80))
    return f"(seed {SEED})\n" + "\n".join(parts)


# --------------------------------------------------------------------------- data
@dataclass
class Owner:
    user: User
    token: str


def owner(name: str) -> Owner:
    user = User.objects.create_user(f"{name}-{uuid.uuid4().hex[:6]}")
    return Owner(user, Token.objects.create(user=user).key)


def submit(session_id: uuid.UUID, options: dict[str, Any]) -> uuid.UUID:
    """Queue a run (from a helper thread of the asyncio clients: closes its connection)."""
    try:
        created = run_submit(
            session_id=session_id, input={"prompt": "hello there"}, options=options
        )
        return created.run.id
    finally:
        connection.close()


def wait_run(run_id: uuid.UUID, pool: WorkerPool, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(id=run_id)
        if run.status in ("completed", "failed", "cancelled", "timeout"):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run.status} after {timeout}s\n{pool.logs(tail=60)}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- clients
@dataclass
class Subscriber:
    """A client that follows a session until `run_completed`, dropping its connection after
    the k-th event for each k in `drops` and resuming from the last sequence it received."""

    name: str
    base: str
    session_id: uuid.UUID
    token: str
    drops: list[int] = field(default_factory=list)
    query: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    @property
    def sequences(self) -> list[int]:
        return [e["sequence_number"] for e in self.received]

    @property
    def last(self) -> int:
        return self.received[-1]["sequence_number"] if self.received else 0

    def take(self, event: dict[str, Any]) -> str:
        """Record an event; 'done' at the end, 'drop' at a drop point, '' otherwise."""
        self.received.append(event)
        if event["type"] == "run_completed":
            return "done"
        if self.drops and len(self.received) >= self.drops[0]:
            self.drops.pop(0)
            return "drop"
        return ""

    async def follow_ws(self) -> Subscriber:
        while True:
            self.connections += 1
            url = (
                f"{self.base}/ws/sessions/{self.session_id}/events"
                f"?after={self.last}&token={self.token}{self.query}"
            )
            async with ws_connect(url, open_timeout=10, close_timeout=2) as ws:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] != "event":
                        continue
                    verdict = self.take(message["event"])
                    if verdict == "done":
                        return self
                    if verdict == "drop":
                        if self.connections % 2:
                            ws.transport.abort()  # the TCP connection just dies
                        break  # leaving the block closes cleanly (unless aborted)

    async def follow_sse(self) -> Subscriber:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=20)) as client:
            while True:
                self.connections += 1
                headers = {"Authorization": f"Bearer {self.token}"}
                query = f"?{self.query.lstrip('&')}" if self.query else ""
                if self.connections % 2:
                    query = f"?after={self.last}{self.query}"
                else:  # as a browser's EventSource resumes
                    headers["Last-Event-ID"] = str(self.last)
                url = f"{self.base}/api/v1/sessions/{self.session_id}/events/stream{query}"
                async with client.stream("GET", url, headers=headers) as response:
                    assert response.status_code == 200, await response.aread()
                    verdict = ""
                    data: list[str] = []
                    event_id = None
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            event_id = int(line[3:].strip())
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            event = json.loads("\n".join(data))
                            assert event["sequence_number"] == event_id
                            data, event_id = [], None
                            verdict = self.take(event)
                            if verdict:
                                break
                    if verdict == "done":
                        return self


def assert_exactly_once(sub: Subscriber, expected: list[int], context: str) -> None:
    got = sub.sequences
    dupes = sorted({s for s in got if got.count(s) > 1})
    missing = sorted(set(expected) - set(got))
    assert got == expected, (
        f"{sub.name}: {len(got)} events over {sub.connections} connections; "
        f"duplicates {dupes[:20]}, missing {missing[:20]}, "
        f"out of order at {[i for i in range(1, len(got)) if got[i] <= got[i - 1]][:10]}\n"
        f"{context}"
    )


def drop_points(rng: random.Random, n: int, upto: int) -> list[int]:
    return sorted(rng.sample(range(1, upto), n))


# --------------------------------------------------------------------------- (a)
def test_reconnecting_subscribers_get_every_event_exactly_once_in_order(web, workers):
    alice = owner("alice")
    session = session_create(agent_id="stream-a", owner=alice.user)
    rng = random.Random(SEED)
    upto = 500  # the run writes ~506 events; every drop lands before its end
    subscribers = {
        "ws": Subscriber("ws", web[0].ws, session.id, alice.token, drop_points(rng, 20, upto)),
        "sse": Subscriber("sse", web[1].http, session.id, alice.token, drop_points(rng, 20, upto)),
    }
    streamed = Subscriber(
        "ws-filtered",
        web[1].ws,
        session.id,
        alice.token,
        drop_points(rng, 5, 400),
        query="&type=message_streamed,run_completed",
    )
    submitted: dict[str, uuid.UUID] = {}

    async def scenario() -> None:
        followers = [
            asyncio.create_task(subscribers["ws"].follow_ws()),
            asyncio.create_task(subscribers["sse"].follow_sse()),
        ]
        await asyncio.sleep(0.3)  # connected and following before the run starts
        submitted["run"] = await asyncio.to_thread(submit, session.id, LONG_RUN)
        streamed.query += f"&run_id={submitted['run']}"
        followers.append(asyncio.create_task(streamed.follow_ws()))
        await asyncio.wait_for(asyncio.gather(*followers), 60)

    started = time.monotonic()
    try:
        asyncio.run(scenario())
    except TimeoutError:
        pytest.fail(
            f"subscribers did not finish: {[s.last for s in subscribers.values()]}\n"
            f"{logs(web, workers)}"
        )
    elapsed = time.monotonic() - started
    run = wait_run(submitted["run"], workers)
    assert run.status == "completed", run.error
    n = latest_sequence(session_id=session.id)
    assert n > 500
    for sub in subscribers.values():
        assert sub.connections == 21
        assert_exactly_once(sub, list(range(1, n + 1)), logs(web))
    streamed_seqs = list(
        run.events.filter(type__in=["message_streamed", "run_completed"])
        .order_by("sequence_number")
        .values_list("sequence_number", flat=True)
    )
    assert streamed.connections == 6
    assert_exactly_once(streamed, streamed_seqs, logs(web))
    assert elapsed < 30, f"took {elapsed:.1f}s"


# --------------------------------------------------------------------------- (b)
def test_subscribers_on_two_web_processes_receive_every_event_of_a_worker(web, workers):
    alice = owner("alice")
    session = session_create(agent_id="stream-b", owner=alice.user)
    subscribers = [
        Subscriber(f"{kind}@{server.name}", base, session.id, alice.token)
        for server in web
        for kind, base in (("ws", server.ws), ("sse", server.http))
    ]
    submitted: dict[str, uuid.UUID] = {}

    async def scenario() -> None:
        tasks = [
            asyncio.create_task(s.follow_ws() if s.name.startswith("ws") else s.follow_sse())
            for s in subscribers
        ]
        # Idle longer than channels_redis's 5 s blocking pop first: idle subscribers must
        # stay connected and subscribed (the layer's socket timeout exceeds the pop).
        await asyncio.sleep(IDLE_S)
        submitted["run"] = await asyncio.to_thread(submit, session.id, SHORT_RUN)
        # The servers poll every 30 s: finishing well within that means the doorbells crossed
        # from the worker process through Redis to both web processes.
        await asyncio.wait_for(asyncio.gather(*tasks), 15)

    try:
        asyncio.run(scenario())
    except TimeoutError:
        pytest.fail(
            f"not all subscribers got the run's end: "
            f"{[(s.name, s.last) for s in subscribers]}\n{logs(web, workers)}"
        )
    run = wait_run(submitted["run"], workers)
    assert run.status == "completed"
    n = latest_sequence(session_id=session.id)
    assert n > 120
    for sub in subscribers:
        assert_exactly_once(sub, list(range(1, n + 1)), logs(web))


# --------------------------------------------------------------------------- (c)
async def ws_close_code(url: str, **kwargs: Any) -> int:
    """The close code the server sends (the first frame must be the close)."""
    async with ws_connect(url, open_timeout=10, close_timeout=2, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def ws_first_event(url: str, **kwargs: Any) -> dict[str, Any]:
    async with ws_connect(url, open_timeout=10, close_timeout=2, **kwargs) as ws:
        first: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return first


def test_credentials_tenancy_and_parameters_over_real_sockets(web):
    alice, bob = owner("alice"), owner("bob")
    session = session_create(agent_id="stream-c", owner=alice.user)
    missing = uuid.uuid4()
    browser = Client()
    browser.force_login(alice.user)
    cookie_name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{cookie_name}={browser.cookies[cookie_name].value}"
    ws_base, http_base = web[0].ws, web[1].http

    def ws_url(sid: object, query: str) -> str:
        return f"{ws_base}/ws/sessions/{sid}/events?{query}"

    def sse_url(sid: object, query: str = "") -> str:
        return f"{http_base}/api/v1/sessions/{sid}/events/stream?{query}"

    async def websocket_cases() -> None:
        assert await ws_close_code(ws_url(session.id, "")) == 4401
        assert await ws_close_code(ws_url(session.id, "token=wrong")) == 4401
        assert (
            await ws_close_code(
                ws_url(session.id, ""), additional_headers={"Authorization": "Bearer wrong"}
            )
            == 4401
        )
        assert await ws_close_code(ws_url(session.id, f"token={bob.token}")) == 4403
        assert await ws_close_code(ws_url(missing, f"token={alice.token}")) == 4404
        for bad in ("after=-1", "after=x", "type=bogus", "run_id=1"):
            assert await ws_close_code(ws_url(session.id, f"token={alice.token}&{bad}")) == 4400
        # accepted: token by header, and the admin's login cookie
        for kwargs in (
            {"additional_headers": {"Authorization": f"Bearer {alice.token}"}},
            {"additional_headers": {"Cookie": cookie}, "origin": f"http://127.0.0.1:{web[0].port}"},
        ):
            first = await ws_first_event(ws_url(session.id, ""), **kwargs)
            assert first["type"] == "event"
            assert first["event"]["sequence_number"] == 1
        with pytest.raises(InvalidStatus) as refused:  # another site's page
            await ws_first_event(
                ws_url(session.id, f"token={alice.token}"), origin="http://evil.example"
            )
        assert refused.value.response.status_code == 403

    asyncio.run(websocket_cases())

    def sse_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        with httpx.stream("GET", url, headers=headers or {}, timeout=10) as response:
            if response.status_code != 200:
                return response.status_code, json.loads(response.read())
            lines = response.iter_lines()
            return 200, {"content-type": response.headers["content-type"], "first": next(lines)}

    auth = {"Authorization": f"Bearer {alice.token}"}
    status, body = sse_status(sse_url(session.id))
    assert (status, body["error"]["code"]) == (401, "authentication_required")
    assert sse_status(sse_url(session.id), {"Authorization": "Bearer wrong"})[0] == 401
    status, body = sse_status(sse_url(session.id), {"Authorization": f"Bearer {bob.token}"})
    assert (status, body["error"]["code"]) == (404, "session_not_found")
    assert sse_status(sse_url(missing), auth)[0] == 404
    for bad in ("after=-1", "type=bogus", "run_id=1"):
        status, body = sse_status(sse_url(session.id, bad), auth)
        assert (status, body["error"]["code"]) == (400, "validation_error")
    assert sse_status(sse_url(session.id), {**auth, "Last-Event-ID": "x"})[0] == 400
    status, body = sse_status(sse_url(session.id), {"Cookie": cookie})
    assert status == 200
    assert body["content-type"].startswith("text/event-stream")
    assert body["first"] == "retry: 1000"


def test_sse_subscribers_hold_no_thread_of_their_own(web):
    """An open SSE stream costs the server no thread (an async view on the event loop)."""
    alice = owner("alice")
    session = session_create(agent_id="stream-threads", owner=alice.user)
    server = web[1]
    url = f"{server.http}/api/v1/sessions/{session.id}/events/stream"
    headers = {"Authorization": f"Bearer {alice.token}"}

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("GET", url, headers=headers) as warm:  # pool warmed up
                await anext(warm.aiter_lines())
            await asyncio.sleep(0.3)
            before = server.threads()
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(30):
                    response = await stack.enter_async_context(
                        client.stream("GET", url, headers=headers)
                    )
                    lines = response.aiter_lines()
                    assert await anext(lines) == "retry: 1000"
                await asyncio.sleep(0.5)
                return before, server.threads()

    before, during = asyncio.run(scenario())
    assert during - before < 10, f"{during - before} more threads for 30 open streams"
