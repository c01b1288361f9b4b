"""Real `celery worker` OS processes for the integration tier, and a reaper for the tests.

Not a test module: the helpers the execution tests (and `bench/run_overhead.py`) build on.

- `WorkerPool` / `worker_pool(n, ...)`: starts N processes of
  `python -m celery -A asm_project --quiet worker -P solo -c 1 -Q <queue> -n w<i>.<tag>@%h
  --without-heartbeat --without-mingle --without-gossip -l warning`, each in its own process
  group (`start_new_session=True`), its output in a log file of its own. Every pool has a
  queue (`ASM_CELERY_QUEUE`) and a Redis key prefix (`ASM_REDIS_PREFIX=asm-test-<uuid>:`)
  of its own, so pools of concurrent test runs never see each other's messages, locks or
  slots; the node names carry the same tag for the same reason (a `ping` to `w0@host` could
  be answered by somebody else's `w0`). `timings` (e.g. `CRASH_TIMINGS`) go to the workers'
  environment. `start` returns once every worker answers a `ping`. `stop` sends SIGTERM to
  every process group, SIGKILL after `grace_s`, and asserts that no group is left; it then
  deletes the pool's Redis keys (its prefix, its queue, and broker bookkeeping of messages
  routed to its queue, e.g. those a killed worker never acked).
- `use_pool(pool, settings)`: points the TEST process at the pool: pytest-django's `settings`
  (queue, prefix, timings), the Celery app's `task_default_queue` (read once at start, so it
  must be set on `app.conf` too), and the cached coordinator and provider registry (cleared on
  entry and on exit, so they are rebuilt from the settings in force).
- `Reaper`: the reaper of these tests is a daemon THREAD of the test process calling
  `runs.scheduling.run_reap_stale()` every `interval_s` (0.5 s) and closing its database
  connection after each pass. It stands in for celery beat's `workers.run_reap_stale`
  schedule: no extra process to start, and the period is the test's to choose. A reap's
  wake-up (`drain_enqueue`) goes to the pool's queue through the app configured by `use_pool`.

The worker processes reach the test database through `child_env()` (see conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from django.db import connections

ROOT = Path(__file__).resolve().parents[2]

#: Short lease and lock for crash tests: a dead worker's run is reaped about 2 s after its
#: last renewal (plus one reaper period).
CRASH_TIMINGS: dict[str, int] = {"ASM_RUN_LEASE_MS": 2000, "ASM_SESSION_LOCK_TTL_MS": 2000}


class WorkerProcess:
    """One `celery worker` process (the leader of its own process group)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name, self.proc, self.log_path = name, proc, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the worker (no warm shutdown, no ack, no lock release) and reap it."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class WorkerPool:
    def __init__(
        self,
        n: int,
        *,
        log_dir: Path,
        overrides: Mapping[str, float] | None = None,
        extra_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        loglevel: str = "warning",
        pool: str = "solo",
        concurrency: int = 1,
    ) -> None:
        self.n = n
        self.pool, self.concurrency = pool, concurrency
        self.tag = uuid.uuid4().hex[:10]
        self.queue = f"asm-test-{self.tag}"
        self.prefix = f"asm-test-{uuid.uuid4()}:"
        self.overrides = dict(overrides or {})
        self.log_dir = log_dir
        self.loglevel = loglevel
        if base_env is None:
            from tests.integration.conftest import child_env

            base_env = child_env()
        self.env = {
            **base_env,
            "ASM_CELERY_QUEUE": self.queue,
            "ASM_REDIS_PREFIX": self.prefix,
            **{k: str(v) for k, v in self.overrides.items()},
            **(extra_env or {}),
        }
        self.env.setdefault("PYTHONPATH", str(ROOT))
        self.workers: list[WorkerProcess] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, ready_timeout: float = 60) -> WorkerPool:
        host = socket.gethostname()
        for i in range(self.n):
            name = f"w{i}.{self.tag}"
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "asm_project",
                        "--quiet",  # no banner
                        "worker",
                        "-P",
                        self.pool,
                        "-c",
                        str(self.concurrency),
                        "-Q",
                        self.queue,
                        "-n",
                        f"{name}@%h",
                        "--without-heartbeat",
                        "--without-mingle",
                        "--without-gossip",
                        "-l",
                        self.loglevel,
                    ],
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.workers.append(WorkerProcess(f"{name}@{host}", proc, log_path))
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Return once every worker answers a Celery `ping` (it consumes its queue then)."""
        from asm_project.celery import app

        deadline = time.monotonic() + timeout
        pending = {w.name for w in self.workers}
        while pending:
            dead = [w for w in self.workers if not w.alive()]
            if dead:
                raise AssertionError(f"worker {dead[0].name} exited at start\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"workers not ready after {timeout}s: {pending}\n{self.logs()}"
                )
            for reply in app.control.ping(destination=sorted(pending), timeout=0.3) or []:
                pending -= set(reply)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every process group, SIGKILL after `grace_s`; assert none is left."""
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, signal.SIGKILL)
                w.proc.wait(timeout=10)
        left = []
        for w in self.workers:
            try:
                os.killpg(w.pid, 0)
            except ProcessLookupError:
                continue
            left.append(w.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
        self.cleanup_redis()
        assert not left, f"worker process groups still alive after stop: {left}"

    def cleanup_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            keys += [self.queue, *(f"{self.queue}\x06\x16{p}" for p in (3, 6, 9))]
            keys.append(f"_kombu.binding.{self.queue}")
            client.delete(*keys)
            # Messages a killed worker took but never acked wait in the transport's global
            # `unacked` hash (for redelivery after the visibility timeout): drop ours.
            for tag, raw in client.hscan_iter("unacked", count=1000):
                with contextlib.suppress(ValueError, TypeError, IndexError):
                    if json.loads(raw)[2] == self.queue:
                        client.hdel("unacked", tag)
                        client.zrem("unacked_index", tag)
        finally:
            client.close()

    # ------------------------------------------------------------------ lookups
    def by_pid(self, pid: int) -> WorkerProcess:
        for w in self.workers:
            if w.pid == pid:
                return w
        raise AssertionError(f"pid {pid} is not one of this pool's workers")

    def by_lease_owner(self, lease_owner: str) -> WorkerProcess:
        """The worker named by a run's `lease_owner` (`<node name>:<pid>:<thread id>`)."""
        return self.by_pid(owner_pid(lease_owner))

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def logs(self, tail: int | None = None) -> str:
        parts = []
        for w in self.workers:
            lines = w.log().splitlines()
            if tail is not None:
                lines = lines[-tail:]
            state = "alive" if w.alive() else f"exited {w.proc.returncode}"
            parts.append(f"----- {w.name} (pid {w.pid}, {state}) -----\n" + "\n".join(lines))
        return "\n".join(parts)


def owner_pid(lease_owner: str) -> int:
    _host, pid, _thread = lease_owner.rsplit(":", 2)
    return int(pid)


@contextlib.contextmanager
def worker_pool(n: int, *, log_dir: Path, **kwargs: Any) -> Iterator[WorkerPool]:
    """Start a ready pool of `n` workers; stop it (and check it stopped) on exit."""
    pool = WorkerPool(n, log_dir=log_dir, **kwargs).start()
    try:
        yield pool
    finally:
        pool.stop()


@contextlib.contextmanager
def use_pool(pool: WorkerPool, settings: Any) -> Iterator[WorkerPool]:
    """Point this (the test) process at `pool`: same queue, Redis prefix and timings.

    `settings` is pytest-django's `settings` fixture, which restores itself afterwards; the
    Celery app's queue and the cached coordinator and registry are restored here.
    """
    from asm_project.celery import app
    from runs.bootstrap import provider_registry
    from runs.coordination import coordinator

    settings.CELERY_TASK_DEFAULT_QUEUE = pool.queue
    settings.ASM_REDIS_PREFIX = pool.prefix
    for key, value in pool.overrides.items():
        setattr(settings, key, value)
    old_queue = app.conf.task_default_queue
    app.conf.task_default_queue = pool.queue
    coordinator.cache_clear()
    provider_registry.cache_clear()
    try:
        yield pool
    finally:
        app.conf.task_default_queue = old_queue
        coordinator.cache_clear()
        provider_registry.cache_clear()


class Reaper:
    """`run_reap_stale()` every `interval_s` on a daemon thread (celery beat's job, here)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.reaped = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-reaper", daemon=True)

    def _loop(self) -> None:
        from runs.scheduling import run_reap_stale

        while not self._stop.wait(self.interval_s):
            try:
                self.reaped += run_reap_stale()
            except Exception as exc:  # reported by the test through `errors`
                self.errors.append(repr(exc))
            finally:
                connections.close_all()  # this thread's connections only

    def __enter__(self) -> Reaper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
