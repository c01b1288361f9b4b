"""Benchmark: live-stream latency, `event_append` commit -> WebSocket receipt, vs raw Redis pub/sub.

Run: DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/stream_latency.py
     [--events 300] [--subscribers 200] [--fanout-events 200] [--gap-ms 20]

It creates a throwaway database next to the one DATABASE_URL names (asm_bench_<pid>),
migrates it, starts one real ASGI server (`uvicorn asm_project.asgi:application`, DEBUG off)
on that database with channels_redis on REDIS_URL (a channel prefix of its own), and drops
everything at the end. Three processes, as in production: the server; this process, which
appends the events like a worker (`event_append` in autocommit, so each append is its own
committed transaction, and its doorbell goes out through this process's publisher thread and
channels_redis); and a client process holding the WebSocket subscribers (the `websockets`
package, asyncio), which records when each frame arrived and parses frames only afterwards.
Latency of one delivery = receipt time - the time `event_append` returned (taken right after
it returns), both on the machine's monotonic clock (CLOCK_MONOTONIC, one clock for all
processes).

- (a) one subscriber: `--events` events appended one by one, `--gap-ms` apart (after 20 not
  counted, which warm up connections on every side);
- (b) `--subscribers` WebSocket subscribers of one session, all connected (handshake done,
  so subscribed) before the first append; `--fanout-events` events, `--gap-ms` apart; every
  (event, subscriber) receipt is one sample.

Baseline, measured in the same run on the same Redis, with the same client process: a raw
Redis PUBLISH (a payload the size of an event frame) from this process -> receipt by redis-py
asyncio pub/sub subscribers (1, and `--subscribers` connections), the same number of
messages and the same gaps; its timestamp is taken right before the PUBLISH.

The default gap, 20 ms (50 appends a second into one session), is 2.5 times the rate at
which a streaming run appends (its chunks are flushed every `ASM_STREAM_FLUSH_MS`, 50 ms).
At 10 ms and 200 subscribers a 2-core machine is close to saturated (the server and the
client process each need most of a core), and the tail then depends on scheduling noise.

Also printed, as the profile of where the time goes: the CPU the server and the client
process spent per appended event (and the server's per frame sent).

The server runs without permessage-deflate (`--ws-deflate` turns it on): production serves
with daphne (Dockerfile), which does not negotiate it; uvicorn would, and then compresses
every frame once per subscriber.

Targets (issue 4): p99 <= 25 ms with one subscriber; p99 <= 100 ms at 200 subscribers of one
session, on loopback. It prints TARGETS MET or TARGETS MISSED and exits 0 either way (2: bad
environment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import ROOT, bench_database, setup  # bench/ is the script's own directory

from tests.integration.asgi_server import AsgiServer

ONE_TARGET_MS = 25.0
FANOUT_TARGET_MS = 100.0
WARMUP = 20
DRAIN_TIMEOUT_S = 15.0  # after the last append, how long receivers may take to catch up
DATA = {"delta": "hello ", "content": "hello world, " * 8}


def now() -> float:
    """The monotonic clock every process of the bench reads (CLOCK_MONOTONIC)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    """Latencies (ms) of one case, what never arrived, and the CPU spent on it."""

    samples: list[float] = field(default_factory=list)
    lost: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        return pct(self.samples, 99) if self.samples else float("nan")

    @property
    def worst(self) -> float:
        return max(self.samples) if self.samples else float("nan")


# --------------------------------------------------------------------------- client process
@dataclass(frozen=True)
class ClientSpec:
    kind: str  # "ws": WebSocket subscribers of `target` (a URL); "redis": of channel `target`
    target: str
    subscribers: int
    expected: int  # messages each subscriber should get
    redis_url: str = ""


def client_main(spec: ClientSpec, conn: Connection) -> None:
    """The client process: connect, say "ready", record receipts until every subscriber has
    `expected` messages (or "finish" came and the drain timed out), then send them back as
    one list per subscriber of (key, receipt time)."""
    asyncio.run(_clients(spec, conn))


async def _clients(spec: ClientSpec, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    frames: list[list[tuple[float, Any]]] = [[] for _ in range(spec.subscribers)]
    done = [asyncio.Event() for _ in range(spec.subscribers)]

    def take(client: int, raw: Any) -> None:
        got = frames[client]
        got.append((now(), raw))
        if len(got) >= spec.expected:
            done[client].set()

    async with contextlib.AsyncExitStack() as stack:
        if spec.kind == "ws":
            from websockets.asyncio.client import connect

            opening = asyncio.Semaphore(50)

            async def open_one() -> Any:
                async with opening:
                    return await connect(
                        spec.target, open_timeout=60, close_timeout=2, max_queue=None
                    )

            sockets = await asyncio.gather(*(open_one() for _ in range(spec.subscribers)))
            for ws in sockets:
                stack.push_async_callback(ws.close)

            async def listen(client: int, ws: Any) -> None:
                with contextlib.suppress(Exception):
                    async for raw in ws:
                        if not raw.startswith('{"type": "ping"'):  # a heartbeat
                            take(client, raw)

            tasks = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
        else:
            import redis.asyncio as aioredis

            pubsubs: list[Any] = []
            for _ in range(spec.subscribers):
                client = aioredis.Redis.from_url(spec.redis_url)
                stack.push_async_callback(client.aclose)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                stack.push_async_callback(pubsub.aclose)
                await pubsub.subscribe(spec.target)
                pubsubs.append(pubsub)

            async def listen_redis(client: int, pubsub: Any) -> None:
                with contextlib.suppress(Exception):
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            take(client, message["data"])

            tasks = [asyncio.create_task(listen_redis(i, p)) for i, p in enumerate(pubsubs)]

        conn.send("ready")
        cpu_start = time.process_time()

        async def all_done() -> None:
            for event in done:
                await event.wait()

        finishing = loop.run_in_executor(None, conn.recv)  # "finish": the last append is out
        everything = asyncio.ensure_future(all_done())
        await asyncio.wait({finishing, everything}, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everything, DRAIN_TIMEOUT_S)
        cpu = time.process_time() - cpu_start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not finishing.done():
            await finishing
    keyed = [[(_key(spec.kind, raw), at) for at, raw in got] for got in frames]
    conn.send((keyed, cpu))


def _key(kind: str, raw: Any) -> int | None:
    if kind == "redis":
        return int(raw[:8])
    message = json.loads(raw)
    return int(message["event"]["sequence_number"]) if message.get("type") == "event" else None


class Clients:
    """A client process (spawned: no Django, no state of this process)."""

    def __init__(self, spec: ClientSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=client_main, args=(spec, child), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            self.proc.kill()
            raise RuntimeError("the client process did not get ready")

    def finish(self, sent: dict[int, float], server_cpu_s: float = 0.0) -> Figures:
        self.conn.send("finish")
        if not self.conn.poll(DRAIN_TIMEOUT_S + 60):
            self.proc.kill()
            raise RuntimeError("the client process did not report")
        keyed, cpu = self.conn.recv()
        self.proc.join(timeout=30)
        out = Figures(server_cpu_s=server_cpu_s, client_cpu_s=cpu)
        for got in keyed:
            seen: set[int] = set()
            for key, at in got:
                if key is None or key not in sent or key in seen:
                    continue
                seen.add(key)
                out.samples.append((at - sent[key]) * 1000)
            out.lost += len(set(sent) - seen)
        return out


def paced(n: int, gap_s: float, step: Callable[[int], None]) -> None:
    """Call `step(i)` for i in 0..n-1, starting one every `gap_s` (no drift, no bursts)."""
    start = now()
    for i in range(n):
        delay = start + i * gap_s - now()
        if delay > 0:
            time.sleep(delay)
        step(i)


# --------------------------------------------------------------------------- the cases
def asm_case(
    server: Server, token: str, session_id: uuid.UUID, subscribers: int, events: int, gap_s: float
) -> Figures:
    """`subscribers` WebSocket clients of a session; `events` appends after WARMUP."""
    from events.services import event_append

    # after=1: the session's first event (session_created) is not measured
    url = f"ws://127.0.0.1:{server.port}/ws/sessions/{session_id}/events?after=1&token={token}"
    total = WARMUP + events
    clients = Clients(ClientSpec("ws", url, subscribers, total))
    sent: dict[int, float] = {}

    def append(i: int) -> None:
        event = event_append(session_id=session_id, type="message_streamed", data=DATA)
        at = now()
        if i >= WARMUP:
            sent[event.sequence_number] = at

    server_cpu = cpu_s(server.proc.pid)
    paced(total, gap_s, append)
    return clients.finish(sent, cpu_s(server.proc.pid) - server_cpu)


def redis_case(redis_url: str, subscribers: int, messages: int, gap_s: float) -> Figures:
    """The baseline: PUBLISH -> receipt by `subscribers` redis-py asyncio pub/sub clients."""
    import redis

    channel = f"asm-bench-baseline-{uuid.uuid4().hex}"
    payload = json.dumps({"type": "event", "event": {"sequence_number": 0, "data": DATA}})
    total = WARMUP + messages
    clients = Clients(ClientSpec("redis", channel, subscribers, total, redis_url))
    sent: dict[int, float] = {}
    publisher = redis.Redis.from_url(redis_url)

    def publish(i: int) -> None:
        at = now()
        publisher.publish(channel, f"{i:08d}{payload}")
        if i >= WARMUP:
            sent[i] = at

    try:
        paced(total, gap_s, publish)
    finally:
        publisher.close()
    return clients.finish(sent)


# --------------------------------------------------------------------------- the server
class Server(AsgiServer):
    """The server under measurement (`tests.integration.asgi_server`), quiet logs."""

    def __init__(self, env: dict[str, str], log_path: Path, *, deflate: bool) -> None:
        super().__init__(
            env,
            log_path,
            ["--log-level", "warning", "--ws-per-message-deflate", str(deflate).lower()],
        )


def server_env(prefix: str) -> dict[str, str]:
    from tests.integration.conftest import test_database_url

    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),  # the bench's own database
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "asm_project.settings.base",
        "DJANGO_DEBUG": "False",
        "DJANGO_SECRET_KEY": "asm-bench-only",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ASM_LOG_LEVEL": "WARNING",
        "ASM_CHANNELS_PREFIX": prefix,
    }


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--fanout-events", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--server-log", type=Path, help="keep the server's output in this file")
    parser.add_argument(
        "--ws-deflate",
        action="store_true",
        help="let uvicorn negotiate permessage-deflate (off by default, like daphne)",
    )
    args = parser.parse_args()
    # This process's doorbells and the server's subscriptions meet under this prefix only
    # (read by the settings, so set before Django is).
    prefix = f"asm-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.environ["ASM_CHANNELS_PREFIX"] = prefix
    if not setup("bench/stream_latency.py", redis=True):
        return 2
    with bench_database(), tempfile.TemporaryDirectory(prefix="asm-bench-") as log_dir:
        return measure(args, prefix, Path(log_dir))


def measure(args: argparse.Namespace, prefix: str, log_dir: Path) -> int:
    from django.conf import settings
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from sessions.services import session_create

    owner = User.objects.create_user("bench")
    token = Token.objects.create(user=owner).key
    one, many = (session_create(agent_id=f"bench-{k}", owner=owner).id for k in range(2))
    server = Server(
        server_env(prefix), args.server_log or log_dir / "server.log", deflate=args.ws_deflate
    )
    gap_s, n, m = args.gap_ms / 1000, args.subscribers, args.fanout_events
    results: dict[str, Figures] = {}
    try:
        server.wait_ready()
        results["redis 1"] = redis_case(settings.REDIS_URL, 1, args.events, gap_s)
        results["asm 1"] = asm_case(server, token, one, 1, args.events, gap_s)
        results["redis n"] = redis_case(settings.REDIS_URL, n, m, gap_s)
        results["asm n"] = asm_case(server, token, many, n, m, gap_s)
    except BaseException:
        print(f"----- server log -----\n{server.log()}", file=sys.stderr)
        raise
    finally:
        server.stop()

    print(
        f"stream latency, event_append commit -> WebSocket receipt ({os.cpu_count()} cores; "
        f"{args.events} events to 1 subscriber, {m} to each of {n}; {args.gap_ms:g} ms apart; "
        f"permessage-deflate {'on' if args.ws_deflate else 'off'})"
    )
    print(
        f"{'case':<18}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'lost':>6}"
        f"{'base p50':>10}{'base p99':>10}{'p50 x':>7}{'p99 x':>7}  target"
    )
    rows = [
        ("1 subscriber", results["asm 1"], results["redis 1"], ONE_TARGET_MS, args.events, 1),
        (f"{n} subscribers", results["asm n"], results["redis n"], FANOUT_TARGET_MS, m, n),
    ]
    ok = True
    for name, asm, base, target, _, _ in rows:
        met = asm.p99 <= target and asm.lost == 0
        ok = ok and met
        print(
            f"{name:<18}{asm.p50:>8.1f}{asm.p99:>8.1f}{asm.worst:>8.1f}{asm.lost:>6}"
            f"{base.p50:>10.2f}{base.p99:>10.2f}{asm.p50 / base.p50:>7.1f}"
            f"{asm.p99 / base.p99:>7.1f}  p99 <= {target:g} ms {'ok' if met else 'MISSED'}"
        )
    print("CPU per appended event (warm-up included):")
    for name, asm, base, _, events, subscribers in rows:
        appended = WARMUP + events
        print(
            f"  {name:<16} server {asm.server_cpu_s / appended * 1000:6.2f} ms "
            f"({asm.server_cpu_s / appended / subscribers * 1e6:4.0f} us per frame sent), "
            f"clients {asm.client_cpu_s / appended * 1000:5.2f} ms "
            f"(baseline's clients {base.client_cpu_s / appended * 1000:5.2f} ms)"
        )
    lost_base = results["redis 1"].lost + results["redis n"].lost
    if lost_base:
        print(f"the baseline lost {lost_base} messages")
    print("TARGETS MET" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
