"""Benchmark: what routing adds to a run: the `router` over 10 providers with fleet-wide
health in Redis, vs calling the `echo` provider directly.

Run: REDIS_URL=redis://... python bench/route_overhead.py [--runs N]

Both sides execute the same echo reply in this same process, one run after another:
- direct: `EchoProvider.execute` (the baseline: what a run of provider `echo` costs);
- routed: `RouterProvider.execute` with 10 registered providers (echo and 9 echo clones
  with their own names) and the Redis health store (one Lua call reads the 10 providers'
  health and the round-robin counter; a success clears the chosen provider's health), for
  each strategy: priority (prefer echo), round_robin and weighted.
It also times the decision alone (health read + `route_plan`). Rounds of every case
alternate; each figure is the median (p50) of per-run times. Health keys live under a
prefix of their own (`asm-bench-<pid>:`), deleted at the end.
Target (issue 6): routing adds < 1 ms per run at p50.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import _common  # noqa: F401  # bench/ is the script's own directory; puts the project on sys.path

ROUNDS = 6
PROVIDERS = 10
TARGET_MS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="runs per case (all rounds)")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url.startswith("redis://"):
        print("bench/route_overhead.py needs REDIS_URL=redis://...", file=sys.stderr)
        return 2

    from runs.health import RedisHealthStore
    from runs.providers.base import CancelToken, ProviderResult, RunContext
    from runs.providers.echo import EchoProvider
    from runs.providers.registry import ProviderRegistry
    from runs.providers.router import RouterProvider
    from runs.routing import RoutingPolicy, route_plan

    clones = [
        type(f"EchoClone{i}", (EchoProvider,), {"name": f"echo{i}"})() for i in range(PROVIDERS - 1)
    ]
    registry = ProviderRegistry([EchoProvider(), *clones])
    prefix = f"asm-bench-{os.getpid()}:"
    health = RedisHealthStore.from_url(redis_url, prefix=prefix)
    router = RouterProvider(registry, health, rng=random.Random(1))
    registry.register(router)
    echo = registry.get("echo")
    names = [n for n in registry.names() if n != "router"]
    capabilities = {n: registry.get(n).capabilities() for n in names}

    def context(routing: dict[str, Any] | None) -> RunContext:
        options = {} if routing is None else {"routing": routing}
        return RunContext.build(
            run_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            input={"prompt": "hello routed world"},
            options=options,
        )

    def emit(_type: str, _data: Any) -> None:
        return None

    def call(provider: Any, routing: dict[str, Any] | None) -> Callable[[], ProviderResult]:
        ctx = context(routing)
        return lambda: provider.execute(ctx, emit, CancelToken())

    policy = RoutingPolicy(prefer=("echo",))

    def decide() -> object:
        snap = health.snapshot(names)
        return route_plan(providers=capabilities, policy=policy, health=snap)

    cases: dict[str, Callable[[], object]] = {
        "direct echo": call(echo, None),
        "router priority": call(router, {"prefer": ["echo"]}),
        "router round_robin": call(router, {"strategy": "round_robin"}),
        "router weighted": call(router, {"strategy": "weighted", "weights": {"echo": 3}}),
        "decision only": decide,
    }
    try:
        for fn in cases.values():
            for _ in range(50):  # warm up: connections, script cache, imports
                fn()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        per_round = max(1, args.runs // ROUNDS)
        for _ in range(ROUNDS):
            for name, fn in cases.items():
                out = samples[name]
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    out.append((time.perf_counter() - t0) * 1000)
    finally:
        keys = list(health.client.scan_iter(match=f"{prefix}*"))
        if keys:
            health.client.delete(*keys)
        health.client.close()

    p50 = {name: statistics.median(v) for name, v in samples.items()}
    p95 = {name: statistics.quantiles(v, n=20)[18] for name, v in samples.items()}
    base = p50["direct echo"]
    print(f"{PROVIDERS} providers, Redis health, {per_round * ROUNDS} runs per case")
    print(f"{'case':<22}{'p50 ms':>10}{'p95 ms':>10}{'added p50 ms':>15}  target")
    ok = True
    for name in cases:
        added = p50[name] - base if name.startswith("router") else None
        if added is not None:
            ok = ok and added < TARGET_MS
        print(
            f"{name:<22}{p50[name]:>10.3f}{p95[name]:>10.3f}"
            + (f"{added:>15.3f}  < {TARGET_MS} ms" if added is not None else f"{'':>15}")
        )
    print("TARGETS MET" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
