"""Benchmark: event_append / event_append_many on PostgreSQL vs a plain psycopg INSERT loop.

Run: DATABASE_URL=postgres://... python bench/event_append.py [--singles N] [--batches N]

It creates a throwaway database next to the one DATABASE_URL names (asm_bench_<pid>), migrates
it, measures, and drops it. Each figure is measured in this same process against the same
server:
- single: N `event_append` calls into one session (each its own durable commit), against a
  baseline of the same rows written by a psycopg loop of autocommitted INSERTs;
- batch: N `event_append_many` calls of 50 events into one session, against a baseline loop
  of 50 INSERTs inside one transaction per batch.
Rounds of asm and baseline alternate (fsync timing drifts); each figure is a median.
Targets (issue 2): single >= 0.5x its baseline; batch >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from _common import bench_database, setup  # bench/ is the script's own directory

BATCH = 50
ROUNDS = 6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    if not setup("bench/event_append.py"):
        return 2
    import psycopg
    from django.db import connection

    from events.models import Event
    from events.services import NewEvent, event_append, event_append_many
    from sessions.models import Session

    with bench_database() as db_name:
        s = connection.settings_dict
        conninfo = (
            f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} "
            f"user={s['USER'] or 'postgres'} dbname={db_name}"
            + (f" password={s['PASSWORD']}" if s.get("PASSWORD") else "")
        )
        data = {"delta": "hello ", "content": "hello "}
        payload = json.dumps(data)
        table = Event._meta.db_table

        def fresh_session() -> uuid.UUID:
            return Session.objects.create(agent_id="bench").id

        insert = (
            f"INSERT INTO {table} (id, session_id, run_id, sequence_number, type, data, "
            "metadata, provider, timestamp) VALUES (%s, %s, NULL, %s, %s, %s::jsonb, "
            "'{}'::jsonb, '', now())"
        )
        pg = psycopg.connect(conninfo, autocommit=True)
        batch = [NewEvent(type="message_streamed", data=data) for _ in range(BATCH)]
        base_seq: dict[uuid.UUID, int] = {}

        def asm_single(sid: uuid.UUID, n: int) -> None:
            for _ in range(n):
                event_append(session_id=sid, type="message_streamed", data=data)

        def asm_batch(sid: uuid.UUID, n: int) -> None:
            for _ in range(n):
                event_append_many(session_id=sid, events=batch)

        def base_single(sid: uuid.UUID, n: int) -> None:
            for _ in range(n):
                base_seq[sid] = seq = base_seq.get(sid, 0) + 1
                pg.execute(insert, (uuid.uuid4(), sid, seq, "message_streamed", payload))

        def base_batch(sid: uuid.UUID, n: int) -> None:
            for _ in range(n):
                with pg.transaction(), pg.cursor() as cur:
                    for _ in range(BATCH):
                        base_seq[sid] = seq = base_seq.get(sid, 0) + 1
                        cur.execute(insert, (uuid.uuid4(), sid, seq, "message_streamed", payload))

        # Interleave rounds of asm and baseline so disk and cache drift hit both alike; each
        # figure is the median of its rounds.
        cases = {
            "asm_single": (asm_single, args.singles, 1),
            "base_single": (base_single, args.singles, 1),
            "asm_batch": (asm_batch, args.batches, BATCH),
            "base_batch": (base_batch, args.batches, BATCH),
        }
        sids = {name: fresh_session() for name in cases}
        for name, (fn, _, _) in cases.items():
            fn(sids[name], 5)  # warm up connections, plans and caches
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(ROUNDS):
            for name, (fn, total, per_call) in cases.items():
                n = max(1, total // ROUNDS)
                t0 = time.perf_counter()
                fn(sids[name], n)
                rates[name].append(n * per_call / (time.perf_counter() - t0))
        pg.close()
        single_rate, base_single_rate = (
            statistics.median(rates["asm_single"]),
            statistics.median(rates["base_single"]),
        )
        batch_rate, base_batch_rate = (
            statistics.median(rates["asm_batch"]),
            statistics.median(rates["base_batch"]),
        )

    rows = [
        ("single event_append", single_rate, base_single_rate, 0.5),
        (f"event_append_many x{BATCH}", batch_rate, base_batch_rate, None),
    ]
    print(f"{'case':<26}{'asm ev/s':>12}{'baseline ev/s':>16}{'ratio':>8}  target")
    for name, rate, base, target in rows:
        goal = f">= {target}x baseline" if target else ">= 20,000 ev/s"
        print(f"{name:<26}{rate:>12,.0f}{base:>16,.0f}{rate / base:>8.2f}  {goal}")
    ok = single_rate >= 0.5 * base_single_rate and batch_rate >= 20_000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
