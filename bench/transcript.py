"""Benchmark: transcript build time for sessions of 1k, 10k and 100k events (linear growth).

Run: python bench/transcript.py [--sizes 1000,10000,100000] [--rounds N]

No database: the builder is pure (`runs.transcript`), so this measures it on plain
`EventRecord` lists, and `transcript_from_store` on the in-memory `SessionStore` (which adds
the store's read: a copy of every event). PostgreSQL is not needed for what is measured
here; the database read is the event store's cost (bench/event_append.py and the selectors).

The session is a realistic mix, 16 events per exchange: message_sent, run_started, 8
message_streamed chunks, message_received, tool_call_started, tool_call_completed,
token_usage_updated, an error_occurred warning every 4th exchange, run_completed (and a
session-level event now and then). Each figure is the best of its rounds, timed with the
garbage collector paused (`timeit`'s method: on a shared machine the slower rounds measure
the other load). Target: the
per-event cost at the largest size is within 1.5x of the cost at 10k events (linear).
"""

from __future__ import annotations

import argparse
import gc
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import _common  # noqa: F401  (bench/ is the script's own directory; puts the project on sys.path)

if TYPE_CHECKING:
    from asm_core.records import EventRecord

LINEAR_TOLERANCE = 1.5


def session_events(n: int, session_id: uuid.UUID) -> list[EventRecord]:
    from asm_core.records import EventRecord

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[EventRecord] = []
    exchange = 0
    while len(out) < n:
        exchange += 1
        run_id = uuid.uuid4()
        steps: list[tuple[str, dict[str, object]]] = [
            ("message_sent", {"role": "user", "content": f"question {exchange} " * 8}),
            ("run_started", {"provider": "echo", "attempt": 1}),
        ]
        steps += [
            ("message_streamed", {"delta": f"word{i} ", "content": f"word{i} "}) for i in range(8)
        ]
        steps += [
            (
                "message_received",
                {"content": "".join(f"word{i} " for i in range(8)), "role": "assistant"},
            ),
            (
                "tool_call_started",
                {"tool_call_id": f"t{exchange}", "tool_name": "ls", "tool_input": {"d": "."}},
            ),
            (
                "tool_call_completed",
                {"tool_call_id": f"t{exchange}", "tool_name": "ls", "tool_output": "a b c"},
            ),
            ("token_usage_updated", {"input_tokens": 120, "output_tokens": 8}),
        ]
        if exchange % 4 == 0:
            steps.append(("error_occurred", {"error_code": "warning", "error_message": "slow"}))
        steps.append(("run_completed", {"stop_reason": "end_turn", "token_usage": {}}))
        for type_, data in steps:
            if len(out) >= n:
                break
            seq = len(out) + 1
            out.append(
                EventRecord(
                    id=uuid.uuid4(),
                    session_id=session_id,
                    run_id=run_id,
                    sequence_number=seq,
                    type=type_,
                    data=data,
                    metadata={},
                    provider="echo",
                    timestamp=t0 + timedelta(milliseconds=seq),
                )
            )
    return out


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    """The best time of ``fn`` over ``rounds``, the garbage collector paused while it runs
    (``timeit``'s method: slower rounds measure the machine's other load, not the code)."""
    fn()  # warm up
    times = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from asm_core.memory_store import InMemorySessionStore
    from asm_core.records import NewEvent, SessionRecord
    from runs.transcript import transcript_build, transcript_from_store

    rows: list[tuple[str, int, int, float]] = []
    for n in sizes:
        sid = uuid.uuid4()
        events = session_events(n, sid)
        rounds = max(1, args.rounds)
        built = transcript_build(events, session_id=sid)
        build_s = best_seconds(lambda: transcript_build(events, session_id=sid), rounds)  # noqa: B023
        rows.append(("build (pure)", n, len(built.messages), build_s))

        store = InMemorySessionStore()
        session = store.session_save(SessionRecord(agent_id="bench"))
        store.event_append_many(
            session.id,
            [NewEvent(type=e.type, data=e.data, metadata=e.metadata) for e in events],
        )
        store_rounds = rounds if n <= 10_000 else min(rounds, 3)  # seconds per round
        store_s = best_seconds(lambda: transcript_from_store(store, session.id), store_rounds)  # noqa: B023
        rows.append(("from_store (in-memory)", n, len(built.messages), store_s))

    print(f"{'case':<24}{'events':>9}{'messages':>10}{'total ms':>11}{'us/event':>10}")
    for name, n, messages, seconds in rows:
        print(f"{name:<24}{n:>9,}{messages:>10,}{seconds * 1000:>11.1f}{seconds / n * 1e6:>10.2f}")

    ok = True
    for case in ("build (pure)", "from_store (in-memory)"):
        per_event = {n: s / n for name, n, _, s in rows if name == case}
        base_n = 10_000 if 10_000 in per_event else min(per_event)
        top_n = max(per_event)
        ratio = per_event[top_n] / per_event[base_n]
        linear = ratio <= LINEAR_TOLERANCE
        ok = ok and linear
        print(
            f"{case}: per-event cost at {top_n:,} events is {ratio:.2f}x the cost at "
            f"{base_n:,} ({'linear' if linear else 'NOT LINEAR'}, target <= {LINEAR_TOLERANCE}x)"
        )
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
