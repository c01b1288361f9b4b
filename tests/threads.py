"""Run test work in real threads released together (for concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connections

T = TypeVar("T")


def in_threads(n: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..n-1) in n threads released together; re-raise the first failure."""
    barrier = threading.Barrier(n)

    def call(i: int) -> T:
        try:
            barrier.wait(timeout=10)
            return work(i)
        finally:
            connections.close_all()  # this thread's DB connections (no-op for memory)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]
