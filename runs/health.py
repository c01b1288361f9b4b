"""Provider health shared by the fleet: consecutive failures, last failure, cooldown.

Plain Python (no Django; ``runs.bootstrap`` builds the store from settings). Two
implementations of one small port, ``HealthStore``:

- ``RedisHealthStore`` (REDIS_URL set): one hash per provider at
  ``<ASM_REDIS_PREFIX>health:<name>`` (fields ``f`` consecutive failures, ``lf`` last
  failure, ``cu`` cooldown until, ``code`` last error code; times in epoch ms) and the
  round-robin counter at ``<prefix>router:rr``. Every step is one Lua script timed by
  Redis's own clock, so every worker on every machine sees the same cooldown and one
  worker's failure makes all of them skip the provider.
- ``LocalHealthStore`` (embedded mode): the same state in this process, behind a lock.

Invariants:

- ``record_failure`` applies ``runs.routing.health_after_failure`` atomically: failures
  + 1, last failure = now, and when failures reach ``failure_threshold`` the cooldown is
  ``now + cooldown_ms``. ``record_success`` and ``reset`` forget the provider (healthy).
- ``snapshot`` reads every asked provider and the store's clock in ONE round trip (and
  advances the round-robin counter in the same step when asked), so a routing decision
  costs one Redis call.
- ``failure_threshold >= 1`` and ``cooldown_ms >= 0``, else ``validation_error``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from asm_core.errors import AsmError, ErrorCode
from runs.providers.registry import ProviderRegistry
from runs.routing import (
    HEALTHY,
    ROUTER_NAME,
    HealthSnapshot,
    HealthState,
    health_after_failure,
)

__all__ = [
    "HealthStore",
    "LocalHealthStore",
    "RedisHealthStore",
    "health_store_build",
    "provider_health_list",
    "provider_health_reset",
]


class HealthStore(Protocol):
    failure_threshold: int
    cooldown_ms: int

    def snapshot(self, names: Sequence[str], *, rotate: bool = False) -> HealthSnapshot:
        """The health of ``names`` now; ``rotate`` also advances the round-robin counter."""
        ...

    def record_failure(self, name: str, code: str) -> HealthState:
        """Count one (retryable) failure of ``name``; return its new state."""
        ...

    def record_success(self, name: str) -> None:
        """``name`` succeeded: healthy again."""
        ...

    def reset(self, name: str) -> None:
        """Forget ``name``'s failures and cooldown (an operator's reset)."""
        ...


def _check(failure_threshold: int, cooldown_ms: int) -> None:
    if (
        not isinstance(failure_threshold, int)
        or isinstance(failure_threshold, bool)
        or failure_threshold < 1
    ):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "ASM_ROUTER_FAILURE_THRESHOLD must be an integer >= 1",
            {"setting": "ASM_ROUTER_FAILURE_THRESHOLD"},
        )
    if not isinstance(cooldown_ms, int) or isinstance(cooldown_ms, bool) or cooldown_ms < 0:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "ASM_ROUTER_COOLDOWN_MS must be an integer >= 0",
            {"setting": "ASM_ROUTER_COOLDOWN_MS"},
        )


def _wall_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- local


class LocalHealthStore:
    """Process-local health (embedded mode; unit tests). ``clock_ms``: epoch ms."""

    def __init__(
        self,
        *,
        failure_threshold: int = 1,
        cooldown_ms: int = 30_000,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        _check(failure_threshold, cooldown_ms)
        self.failure_threshold, self.cooldown_ms = failure_threshold, cooldown_ms
        self.clock_ms = clock_ms
        self._states: dict[str, HealthState] = {}
        self._rr = 0
        self._lock = threading.Lock()

    def snapshot(self, names: Sequence[str], *, rotate: bool = False) -> HealthSnapshot:
        with self._lock:
            if rotate:
                self._rr += 1
            states = {n: self._states[n] for n in names if n in self._states}
            return HealthSnapshot(now_ms=self.clock_ms(), states=states, rr_counter=self._rr)

    def record_failure(self, name: str, code: str) -> HealthState:
        with self._lock:
            state = health_after_failure(
                self._states.get(name, HEALTHY),
                now_ms=self.clock_ms(),
                code=code,
                failure_threshold=self.failure_threshold,
                cooldown_ms=self.cooldown_ms,
            )
            self._states[name] = state
            return state

    def record_success(self, name: str) -> None:
        with self._lock:
            self._states.pop(name, None)

    def reset(self, name: str) -> None:
        self.record_success(name)


# --------------------------------------------------------------------------- Redis

_NOW_MS = (
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)
# KEYS: the providers' hashes..., then the round-robin counter. ARGV[1]: '1' to rotate.
# -> {now, rr, f1, lf1, cu1, code1, f2, ...} ('' for a missing field)
_SNAPSHOT = (
    _NOW_MS
    + """
local rr = 0
if ARGV[1] == '1' then
  rr = redis.call('INCR', KEYS[#KEYS])
else
  rr = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
end
local out = {now, rr}
for i = 1, #KEYS - 1 do
  local v = redis.call('HMGET', KEYS[i], 'f', 'lf', 'cu', 'code')
  for j = 1, 4 do out[#out + 1] = v[j] or '' end
end
return out
"""
)
# KEYS[1]: the provider's hash. ARGV: failure_threshold, cooldown_ms, code.
# -> {f, lf, cu or ''}
_FAILURE = (
    _NOW_MS
    + """
local f = redis.call('HINCRBY', KEYS[1], 'f', 1)
redis.call('HSET', KEYS[1], 'lf', string.format('%d', now), 'code', ARGV[3])
local cu = redis.call('HGET', KEYS[1], 'cu') or ''
if f >= tonumber(ARGV[1]) then
  cu = string.format('%d', now + tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'cu', cu)
end
return {f, string.format('%d', now), cu}
"""
)


def _int(raw: object) -> int | None:
    if raw in (None, b"", ""):
        return None
    return int(raw.decode() if isinstance(raw, bytes) else str(raw))


def _text(raw: object) -> str | None:
    if raw in (None, b"", ""):
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisHealthStore:
    """Fleet-wide health in Redis (module docstring: keys, clock, atomicity)."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "asm:",
        failure_threshold: int = 1,
        cooldown_ms: int = 30_000,
    ) -> None:
        _check(failure_threshold, cooldown_ms)
        self.client, self.prefix = client, prefix
        self.failure_threshold, self.cooldown_ms = failure_threshold, cooldown_ms
        self._snapshot = client.register_script(_SNAPSHOT)
        self._failure = client.register_script(_FAILURE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisHealthStore:
        import redis

        return cls(redis.Redis.from_url(url), **kwargs)

    def key(self, name: str) -> str:
        return f"{self.prefix}health:{name}"

    @property
    def rr_key(self) -> str:
        return f"{self.prefix}router:rr"

    def snapshot(self, names: Sequence[str], *, rotate: bool = False) -> HealthSnapshot:
        names = list(names)
        raw = self._snapshot(
            keys=[*(self.key(n) for n in names), self.rr_key], args=["1" if rotate else "0"]
        )
        states: dict[str, HealthState] = {}
        for i, name in enumerate(names):
            f, lf, cu, code = raw[2 + 4 * i : 6 + 4 * i]
            failures = _int(f) or 0
            cooldown = _int(cu)
            if failures or cooldown is not None:
                states[name] = HealthState(
                    consecutive_failures=failures,
                    last_failure_ms=_int(lf),
                    cooldown_until_ms=cooldown,
                    last_error_code=_text(code),
                )
        return HealthSnapshot(now_ms=int(raw[0]), states=states, rr_counter=int(raw[1]))

    def record_failure(self, name: str, code: str) -> HealthState:
        f, lf, cu = self._failure(
            keys=[self.key(name)], args=[self.failure_threshold, self.cooldown_ms, code]
        )
        return HealthState(
            consecutive_failures=int(f),
            last_failure_ms=_int(lf),
            cooldown_until_ms=_int(cu),
            last_error_code=code,
        )

    def record_success(self, name: str) -> None:
        self.client.delete(self.key(name))

    def reset(self, name: str) -> None:
        self.client.delete(self.key(name))


def health_store_build(
    *, redis_url: str, prefix: str, failure_threshold: int, cooldown_ms: int
) -> HealthStore:
    """Redis-backed when ``redis_url`` is set, else process-local."""
    if redis_url:
        return RedisHealthStore.from_url(
            redis_url, prefix=prefix, failure_threshold=failure_threshold, cooldown_ms=cooldown_ms
        )
    return LocalHealthStore(failure_threshold=failure_threshold, cooldown_ms=cooldown_ms)


# --------------------------------------------------------------------------- read and reset


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def provider_health_list(registry: ProviderRegistry, health: HealthStore) -> list[dict[str, Any]]:
    """``registry.describe()`` with each provider's health: ``consecutive_failures``,
    ``cooldown_until`` (a datetime while it cools down, else None), ``last_failure_at`` and
    ``last_error_code``. The router itself has no health of its own (always healthy)."""
    described = registry.describe()
    snap = health.snapshot([d["name"] for d in described if d["name"] != ROUTER_NAME])
    out = []
    for entry in described:
        state = snap.state(entry["name"])
        out.append(
            {
                **entry,
                "consecutive_failures": state.consecutive_failures,
                "cooldown_until": (
                    _at(state.cooldown_until_ms) if state.cooling(snap.now_ms) else None
                ),
                "last_failure_at": _at(state.last_failure_ms),
                "last_error_code": state.last_error_code,
            }
        )
    return out


def provider_health_reset(registry: ProviderRegistry, health: HealthStore, name: str) -> None:
    """Reset ``name``'s health (an operator's action); an unknown name -> validation_error."""
    registry.get(name)
    health.reset(name)
