"""Benchmark: what running a run costs over a bare Celery task, with real worker processes.

Run: DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/run_overhead.py
     [--workers 2] [--runs 1000] [--sessions 100] [--lone 200] [--pings 300]

It creates a throwaway database next to the one DATABASE_URL names (asm_bench_<pid>),
migrates it, uses a queue and a Redis key prefix of its own, starts `--workers`
`celery worker -P solo` processes pointed at that database (DEBUG off, as in production), and
drops everything at the end. Figures:

- baseline, the bare task: `workers.ping` (a no-op that RPUSHes a key the sender BLPOPs) on
  the same broker and workers. Latency: `--pings` sent one at a time, send -> done. Throughput:
  `--runs` pings sent at once, first send -> last done.
- lone run: `--lone` echo runs (zero delay) submitted one at a time, each into a session of
  its own and awaited: latency = ended_at - created_at of the Run rows (submit -> terminal).
  The per-run overhead is its p50 minus the bare task's p50 latency: what asm adds to a task
  round trip (claim, lease, session lock, events, finish).
- throughput: `--runs` echo runs (zero delay) across `--sessions` sessions (runs/sessions
  each), submitted as fast as 4 threads can: runs/s from the first submit to the last
  terminal (Run rows: min created_at -> max ended_at), and p50/p99 of submit -> terminal
  (which includes the wait in the queue). Also the CPU time the worker processes and this
  (submitting) process spent per run, which machine noise disturbs less than wall time.

Targets (issue): per-run overhead p50 <= 15 ms; throughput >= 100 runs/s on a 2-core machine.
It prints TARGETS MET or TARGETS MISSED and exits 0 either way (2: bad environment).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import ROOT, bench_database, setup  # bench/ is the script's own directory

TERMINAL = ("completed", "failed", "cancelled", "timeout")
OVERHEAD_TARGET_MS = 15.0
THROUGHPUT_TARGET = 100.0


def ms(start: datetime | None, end: datetime | None) -> float:
    assert start is not None
    assert end is not None
    return (end - start).total_seconds() * 1000


def workers_cpu_s(pool: Any) -> float:
    """CPU seconds (user + system) the pool's worker processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for w in pool.workers:
        fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", default="threads", help="celery worker pool (-P)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="threads per worker process (-c)"
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--lone", type=int, default=200)
    parser.add_argument("--pings", type=int, default=300)
    args = parser.parse_args()
    if not setup("bench/run_overhead.py", redis=True):
        return 2
    with bench_database(), tempfile.TemporaryDirectory(prefix="asm-bench-") as log_dir:
        return measure(args, Path(log_dir))


def measure(args: argparse.Namespace, log_dir: Path) -> int:
    import redis
    from django.conf import settings
    from django.db import connections

    from asm_project.celery import app
    from runs.models import Run
    from runs.services import run_submit
    from sessions.services import session_create
    from tests.integration.celery_workers import WorkerPool, use_pool
    from tests.integration.conftest import test_database_url

    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "asm_project.settings.base",
        "DJANGO_DEBUG": "False",
        "DJANGO_SECRET_KEY": "asm-bench-only",
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "ASM_LOG_LEVEL": "WARNING",
    }
    pool = WorkerPool(
        args.workers,
        log_dir=log_dir,
        base_env=env,
        pool=args.pool,
        concurrency=args.concurrency,
    )
    pool.start()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        with use_pool(pool, settings):
            # ------------------------------------------------------------ baseline: bare task
            key = f"{pool.prefix}bench:ping"

            def ping() -> None:
                app.send_task("workers.ping", args=[key])

            for _ in range(20):  # warm up connections on both sides
                ping()
                client.blpop([key], timeout=30)
            ping_ms = []
            for _ in range(args.pings):
                t0 = time.perf_counter()
                ping()
                assert client.blpop([key], timeout=30), "ping lost"
                ping_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            for _ in range(args.runs):
                ping()
            for _ in range(args.runs):
                assert client.blpop([key], timeout=60), "ping lost"
            ping_rate = args.runs / (time.perf_counter() - t0)

            # ------------------------------------------------------------ lone runs
            prompt = {"prompt": "hello"}
            opts = {"adapter_opts": {"delay_ms": 0}}
            # A session each: a run right behind another in its session could wait for the
            # previous drain to let go of the session lock, which is not what this measures.
            lone_sessions = [
                session_create(agent_id="bench-lone").id for _ in range(args.lone + 10)
            ]
            lone_ids = []
            for i, sid in enumerate(lone_sessions):
                run_id = run_submit(session_id=sid, input=prompt, options=opts).run.id
                deadline = time.monotonic() + 30
                while not Run.objects.filter(id=run_id, status__in=TERMINAL).exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"lone run {run_id} did not finish\n{pool.logs(40)}")
                    time.sleep(0.001)
                if i >= 10:  # the first 10 warm up
                    lone_ids.append(run_id)
            lone_rows = list(
                Run.objects.filter(id__in=lone_ids).values_list(
                    "status", "created_at", "started_at", "ended_at"
                )
            )
            assert all(row[0] == "completed" for row in lone_rows)
            lone_ms = [ms(c, e) for _, c, _, e in lone_rows]
            claim_ms = [ms(c, st) for _, c, st, _ in lone_rows]

            # ------------------------------------------------------------ throughput
            sessions = [session_create(agent_id=f"bench-{k}").id for k in range(args.sessions)]
            per_session = max(1, args.runs // args.sessions)
            jobs = [sid for _ in range(per_session) for sid in sessions]
            lock = threading.Lock()
            errors: list[BaseException] = []

            def submitter() -> None:
                try:
                    while True:
                        with lock:
                            if not jobs:
                                return
                            sid = jobs.pop(0)
                        run_submit(session_id=sid, input=prompt, options=opts)
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    connections.close_all()

            batch = Run.objects.filter(session_id__in=sessions)
            cpu0, own0 = workers_cpu_s(pool), time.process_time()
            total = per_session * len(sessions)
            threads = [threading.Thread(target=submitter) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            deadline = time.monotonic() + 600
            while batch.filter(status__in=TERMINAL).count() < total:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"runs did not finish\n{pool.logs(40)}")
                time.sleep(0.05)
            worker_cpu_ms = (workers_cpu_s(pool) - cpu0) * 1000 / total
            submit_cpu_ms = (time.process_time() - own0) * 1000 / total
            rows = list(batch.values_list("status", "created_at", "started_at", "ended_at"))
            statuses = {st for st, *_ in rows}
            first = min(c for _, c, _, _ in rows)
            last = max(e for _, _, _, e in rows if e is not None)
            rate = total / (ms(first, last) / 1000)
            batch_ms = [ms(c, e) for _, c, _, e in rows]
            exec_ms = [ms(st, e) for _, _, st, e in rows]
    finally:
        pool.stop()
        client.close()

    ping_p50, lone_p50 = statistics.median(ping_ms), statistics.median(lone_ms)
    overhead = lone_p50 - ping_p50
    print(
        f"{os.cpu_count()} CPUs, {args.workers} worker processes "
        f"(-P {args.pool} -c {args.concurrency}), PostgreSQL + Redis local"
    )
    print(f"{'measure':<44}{'asm':>12}{'bare task':>12}{'ratio':>8}  target")
    lines = [
        ("latency p50, one at a time (ms)", lone_p50, ping_p50, ""),
        ("latency p99, one at a time (ms)", pct(lone_ms, 99), pct(ping_ms, 99), ""),
        ("  of which submit -> claimed p50 (ms)", statistics.median(claim_ms), None, ""),
        ("per-run overhead p50 (ms)", overhead, None, f"<= {OVERHEAD_TARGET_MS:.0f} ms"),
        (f"throughput, {total} runs (runs/s)", rate, ping_rate, f">= {THROUGHPUT_TARGET:.0f}/s"),
        ("submit -> terminal p50 under load (ms)", statistics.median(batch_ms), None, ""),
        ("submit -> terminal p99 under load (ms)", pct(batch_ms, 99), None, ""),
        ("execution p50, started -> ended (ms)", statistics.median(exec_ms), None, ""),
        ("worker CPU per run, all workers (ms)", worker_cpu_ms, None, ""),
        ("submitting process CPU per run (ms)", submit_cpu_ms, None, ""),
    ]
    for name, value, base, target in lines:
        base_s = f"{base:>12.1f}" if base is not None else f"{'':>12}"
        ratio = f"{value / base:>8.2f}" if base else f"{'':>8}"
        print(f"{name:<44}{value:>12.1f}{base_s}{ratio}  {target}")
    if statuses != {"completed"}:
        print(f"not every run completed: {sorted(statuses)}")
    ok = overhead <= OVERHEAD_TARGET_MS and rate >= THROUGHPUT_TARGET and statuses == {"completed"}
    print("TARGETS MET" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
