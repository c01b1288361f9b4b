"""Fleet coordination: session locks, parallelism slots and cancel signals.

Two implementations of one small interface: `RedisCoordinator` (REDIS_URL set: shared by
every process on every machine) and `LocalCoordinator` (embedded mode: one process).
Redis is only a lock and a doorbell here; the database stays the truth (a run's owner is
its lease in the database, not the lock).

Invariants:
- A lock is held by one owner token; renew and release act only for that token (a lock
  that expired and was taken by someone else is never released or extended by the old
  owner). Locks and slots carry a TTL, so a dead process's lock and slots come back.
- A slot pool admits at most `limit` members at once (None = unlimited); re-acquiring a
  member it holds is a no-op that refreshes its TTL. Expired members are dropped on every
  acquire. Redis evaluates each step in one Lua script with Redis's own clock.
- A cancel signal is a key that says "this run should stop"; the executor polls it.
- A flag (`flag_set`: set-if-absent with a TTL; `flag_clear`) says "something is already
  on its way", e.g. a drain message for a session; it expires on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class Lock(Protocol):
    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


class SlotPool(Protocol):
    def acquire(self, member: str, ttl_ms: int) -> bool: ...
    def renew(self, member: str, ttl_ms: int) -> bool: ...
    def release(self, member: str) -> None: ...
    def active(self) -> int: ...


class Coordinator(Protocol):
    def lock(self, key: str, ttl_ms: int) -> Lock: ...
    def slots(self, name: str, limit: int | None) -> SlotPool: ...
    def cancel_send(self, run_id: uuid.UUID) -> None: ...
    def cancel_requested(self, run_id: uuid.UUID) -> bool: ...
    def flag_set(self, key: str, ttl_ms: int) -> bool: ...
    def flag_clear(self, key: str) -> None: ...


# --------------------------------------------------------------------------- Redis
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
_SLOT_ACQUIRE = (
    _NOW_MS
    + """
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[3])
if redis.call('zscore', KEYS[1], ARGV[1]) or limit < 0 or redis.call('zcard', KEYS[1]) < limit then
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""
)
_SLOT_RENEW = (
    _NOW_MS
    + """
if redis.call('zscore', KEYS[1], ARGV[1]) then
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""
)
_SLOT_ACTIVE = _NOW_MS + "return redis.call('zcount', KEYS[1], now, '+inf')\n"


class RedisLock:
    def __init__(self, client: Any, key: str, ttl_ms: int) -> None:
        self.client, self.key, self.ttl_ms = client, key, ttl_ms
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


class RedisSlotPool:
    def __init__(self, client: Any, key: str, limit: int | None) -> None:
        self.client, self.key = client, key
        self.limit = -1 if limit is None else limit

    def acquire(self, member: str, ttl_ms: int) -> bool:
        return bool(self.client.eval(_SLOT_ACQUIRE, 1, self.key, member, ttl_ms, self.limit))

    def renew(self, member: str, ttl_ms: int) -> bool:
        return bool(self.client.eval(_SLOT_RENEW, 1, self.key, member, ttl_ms))

    def release(self, member: str) -> None:
        self.client.zrem(self.key, member)

    def active(self) -> int:
        return int(self.client.eval(_SLOT_ACTIVE, 1, self.key))


class RedisCoordinator:
    def __init__(self, url: str, prefix: str = "asm:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def lock(self, key: str, ttl_ms: int) -> Lock:
        return RedisLock(self.client, f"{self.prefix}lock:{key}", ttl_ms)

    def slots(self, name: str, limit: int | None) -> SlotPool:
        return RedisSlotPool(self.client, f"{self.prefix}slots:{name}", limit)

    def cancel_send(self, run_id: uuid.UUID) -> None:
        self.client.set(f"{self.prefix}cancel:{run_id}", "1", ex=24 * 3600)

    def cancel_requested(self, run_id: uuid.UUID) -> bool:
        return bool(self.client.exists(f"{self.prefix}cancel:{run_id}"))

    def flag_set(self, key: str, ttl_ms: int) -> bool:
        return bool(self.client.set(f"{self.prefix}flag:{key}", "1", nx=True, px=ttl_ms))

    def flag_clear(self, key: str) -> None:
        self.client.delete(f"{self.prefix}flag:{key}")


# --------------------------------------------------------------------------- local
class _Clock:
    @staticmethod
    def now_ms() -> float:
        return time.monotonic() * 1000


class LocalLock:
    def __init__(self, owner: LocalCoordinator, key: str, ttl_ms: int) -> None:
        self.owner, self.key, self.ttl_ms = owner, key, ttl_ms
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        with self.owner.mutex:
            held = self.owner.locks.get(self.key)
            if held is not None and held[1] > _Clock.now_ms():
                return False
            self.owner.locks[self.key] = (self.token, _Clock.now_ms() + self.ttl_ms)
            return True

    def renew(self) -> bool:
        with self.owner.mutex:
            held = self.owner.locks.get(self.key)
            if held is None or held[0] != self.token or held[1] <= _Clock.now_ms():
                return False
            self.owner.locks[self.key] = (self.token, _Clock.now_ms() + self.ttl_ms)
            return True

    def release(self) -> None:
        with self.owner.mutex:
            held = self.owner.locks.get(self.key)
            if held is not None and held[0] == self.token:
                del self.owner.locks[self.key]


class LocalSlotPool:
    def __init__(self, owner: LocalCoordinator, name: str, limit: int | None) -> None:
        self.owner, self.limit = owner, limit
        self.members = owner.pools.setdefault(name, {})

    def _expire(self) -> None:
        now = _Clock.now_ms()
        for member in [m for m, until in self.members.items() if until <= now]:
            del self.members[member]

    def acquire(self, member: str, ttl_ms: int) -> bool:
        with self.owner.mutex:
            self._expire()
            if member in self.members or self.limit is None or len(self.members) < self.limit:
                self.members[member] = _Clock.now_ms() + ttl_ms
                return True
            return False

    def renew(self, member: str, ttl_ms: int) -> bool:
        with self.owner.mutex:
            self._expire()
            if member not in self.members:
                return False
            self.members[member] = _Clock.now_ms() + ttl_ms
            return True

    def release(self, member: str) -> None:
        with self.owner.mutex:
            self.members.pop(member, None)

    def active(self) -> int:
        with self.owner.mutex:
            self._expire()
            return len(self.members)


class LocalCoordinator:
    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.locks: dict[str, tuple[str, float]] = {}
        self.pools: dict[str, dict[str, float]] = {}
        self.cancelled: set[uuid.UUID] = set()
        self.flags: dict[str, float] = {}

    def lock(self, key: str, ttl_ms: int) -> Lock:
        return LocalLock(self, key, ttl_ms)

    def slots(self, name: str, limit: int | None) -> SlotPool:
        return LocalSlotPool(self, name, limit)

    def cancel_send(self, run_id: uuid.UUID) -> None:
        with self.mutex:
            self.cancelled.add(run_id)

    def cancel_requested(self, run_id: uuid.UUID) -> bool:
        with self.mutex:
            return run_id in self.cancelled

    def flag_set(self, key: str, ttl_ms: int) -> bool:
        with self.mutex:
            now = _Clock.now_ms()
            if self.flags.get(key, 0.0) > now:
                return False
            self.flags[key] = now + ttl_ms
            return True

    def flag_clear(self, key: str) -> None:
        with self.mutex:
            self.flags.pop(key, None)


@cache
def coordinator() -> Coordinator:
    """The process's coordinator: Redis when REDIS_URL is set, else process-local."""
    if settings.REDIS_URL:
        return RedisCoordinator(settings.REDIS_URL, settings.ASM_REDIS_PREFIX)
    return LocalCoordinator()


class _Beats:
    """One daemon thread per process that calls every registered heartbeat when it is due
    (a thread per `with Heartbeat` block cost a thread start, and the wait for it, twice
    per executed run). Beats run one after another on that thread; they are lock and lease
    renewals that take milliseconds, against intervals of seconds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Heartbeat]] = {}
        self._thread: threading.Thread | None = None
        self._next_key = 0

    def add(self, beat: Heartbeat) -> int:
        with self._cond:
            self._next_key += 1
            self._due[self._next_key] = (time.monotonic() + beat.interval_s, beat)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="asm-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return self._next_key

    def remove(self, key: int) -> None:
        with self._cond:
            self._due.pop(key, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready = [(k, b) for k, (at, b) in self._due.items() if at <= now]
                for key, beat in ready:
                    self._due[key] = (now + beat.interval_s, beat)
                if not ready:
                    soonest = min((at for at, _ in self._due.values()), default=now + 60)
                    self._cond.wait(max(0.0, soonest - now))
                    continue
            for key, beat in ready:
                beat.run(key)


_beats = _Beats()


class Heartbeat:
    """Call `beat` every `interval_s` while the `with` block runs, on the process's shared
    heartbeat thread. No beat starts once the block is left (leaving waits for a beat in
    progress)."""

    def __init__(self, interval_s: float, beat: Callable[[], object]) -> None:
        self.interval_s, self.beat = interval_s, beat
        self._running = threading.Lock()
        self._key = 0
        self._left = False

    def run(self, key: int) -> None:
        with self._running:
            if self._left or key != self._key:
                return
            try:
                self.beat()
            except Exception:  # a missed beat is retried; the TTLs tolerate a few
                logger.warning("heartbeat failed; retrying", exc_info=True)

    def __enter__(self) -> Heartbeat:
        with self._running:  # no beat before the key is known
            self._left = False
            self._key = _beats.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _beats.remove(self._key)
        with self._running:  # a beat in progress finishes first
            self._left = True
