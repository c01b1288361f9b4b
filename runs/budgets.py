"""Owner budgets: reserve a run's estimated cost before it is dispatched, settle it after.

A `Budget` (`sessions.models`) limits one owner's tokens (input + output) and/or cost (USD)
per calendar window, a UTC day or a UTC month. The drain (`runs.scheduling`) claims each
run through `budget_claim`; a run of an owner without budgets is claimed exactly as before
(no query: who has budgets is cached per process for `ASM_BUDGET_CACHE_S`).

For an owner with budgets, in ONE database transaction: claim the run, then reserve its
estimate in every window of the owner's budgets with ONE atomic step of the ledger (a Lua
script in Redis; a lock-protected dict in embedded mode):

- admitted -> the claim commits and the run executes; when it ends (`BudgetClaim` as a
  context manager) its reservation is released and its actual spend added to the window
  (`settle`), and the run's `metadata.budget` records what was reserved and charged;
- refused, `on_exceed: wait` -> the claim is rolled back: the run stays `pending` with a
  `waiting_reason` and the drain retries later (`ASM_LIMIT_RETRY_S`); the first refusal of a
  run writes an `error_occurred` event (`error_code: provider_quota_exceeded`, `budget`);
- refused, `on_exceed: fail` -> the run ends `failed` with `provider_quota_exceeded`, with
  the same `error_occurred` event before its `run_failed`, and never reaches a provider.

Invariants:
- Admission (per window, per metric): a run is admitted while `spent + reserved` (by the
  window's OTHER live reservations) is BELOW the limit. So the reservations admitted in a
  window add up to at most `limit - spent + one reservation`, and concurrent runs can never
  spend more than the limit plus one run's reservation, as long as each run's actual cost
  stays within its reservation (give runs a `max_cost_usd` / `max_total_tokens` policy to
  make that hard: the reservation then IS the limit, which the policy enforces).
- The estimate (`budget_estimate`): the run's effective policy limits when it has them
  (`max_cost_usd`; `max_total_tokens` x the dearest rate of its provider), else
  `ASM_BUDGET_RESERVE_USD` / `ASM_BUDGET_RESERVE_TOKENS`.
- The ledger is idempotent per run: `settle` counts a run once (a per-window hash of
  settled run ids), and a run that already holds live reservations is re-admitted as is.
- The database is the source of truth for spend: a window the ledger does not know (Redis
  restarted, flushed, or a new window) is seeded from the owner's finished runs that
  started in it (their `cost_usd`, or for a run of unknown cost the reservation it was
  charged, `metadata.budget.charged_cost_usd`; tokens from `token_usage`), merged by run
  id with what was settled meanwhile, so nothing is counted twice.
- A reservation expires after the run's timeout plus margins (a dead worker's comes back);
  an expired reservation of a run that finished is settled from the database then.
- A run of unknown cost is charged its reservation; runs are attributed to the window of
  their `started_at` (the claim's time).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from asm_core.lifecycle import RUN_TERMINAL
from asm_core.records import NewEvent, RunRecord
from asm_core.store import SessionStore
from events.models import Event
from events.services import event_append
from runs.costs import MICRO, cost_micros, rates_for, usage_tokens
from runs.models import Run
from runs.policies import policy_sources, policy_stack
from sessions.agents import agent_manifest_for
from sessions.models import Budget, Session

logger = logging.getLogger(__name__)

__all__ = [
    "BudgetClaim",
    "BudgetLedger",
    "BudgetRule",
    "LocalBudgetLedger",
    "RedisBudgetLedger",
    "budget_cache_clear",
    "budget_claim",
    "budget_estimate",
    "budget_ledger",
    "budget_status",
    "budget_window",
]

QUOTA = ErrorCode.PROVIDER_QUOTA_EXCEEDED.value
_SEED_CHUNK = 300
_KEY_GRACE = timedelta(days=2)


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Window:
    key: str  # "d20250131" / "m202501"
    start: datetime
    end: datetime


def budget_window(kind: str, at: datetime) -> Window:
    """The UTC day or month containing ``at``."""
    at = at.astimezone(UTC)
    if kind == Budget.Window.DAILY:
        start = datetime(at.year, at.month, at.day, tzinfo=UTC)
        return Window(f"d{start:%Y%m%d}", start, start + timedelta(days=1))
    if kind == Budget.Window.MONTHLY:
        start = datetime(at.year, at.month, 1, tzinfo=UTC)
        nxt = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
        return Window(f"m{start:%Y%m}", start, nxt)
    raise AsmError(ErrorCode.VALIDATION_ERROR, f"Unknown budget window {kind!r}", {"window": kind})


def budget_estimate(
    limits: Mapping[str, int | float],
    *,
    provider: str,
    rates: Mapping[str, Any] | None,
    default_cost_usd: float,
    default_tokens: int,
) -> tuple[Decimal, int]:
    """What one run reserves: ``(cost_usd, tokens)`` (PURE; see the module docstring).

    ``limits`` are the run's effective policy limits (``{"max_cost_usd": 0.5, ...}``).
    """
    tokens = limits.get("max_total_tokens")
    token_estimate = int(tokens) if tokens is not None else int(default_tokens)
    cost = limits.get("max_cost_usd")
    if cost is not None:
        return Decimal(str(cost)).quantize(MICRO), token_estimate
    if tokens is not None:
        models = (rates or {}).get(provider)
        dearest = [
            max(r.input, r.output, r.cache_read, r.cache_write)
            for r in (rates_for(rates, provider, m) for m in models or ())
            if r is not None
        ]
        if dearest:
            return (Decimal(int(tokens)) * max(dearest) / Decimal(1_000_000)).quantize(
                MICRO
            ), token_estimate
    return Decimal(str(default_cost_usd)).quantize(MICRO), token_estimate


@dataclass(frozen=True)
class BudgetRule:
    """An enabled `Budget`, as the gate reads it."""

    id: int
    owner_id: int
    window: str
    max_tokens: int | None
    max_cost_micros: int | None
    on_exceed: str

    @classmethod
    def of(cls, budget: Budget) -> BudgetRule:
        return cls(
            id=budget.pk,
            owner_id=budget.owner_id,
            window=budget.window,
            max_tokens=budget.max_tokens,
            max_cost_micros=(
                None if budget.max_cost_usd is None else cost_micros(budget.max_cost_usd)
            ),
            on_exceed=budget.on_exceed,
        )


# --------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class WindowLimit:
    key: str
    max_cost_micros: int | None
    max_tokens: int | None


@dataclass(frozen=True)
class Verdict:
    """A reserve attempt: ``ok``; or ``seed`` (windows, by index, the ledger must be seeded
    with first); or ``deny`` with which window and metric, and its numbers. ``stale``: run
    ids whose reservations expired (to settle from the database)."""

    outcome: str  # ok | seed | deny
    seed: tuple[int, ...] = ()
    window: int = -1
    metric: str = ""
    spent: int = 0
    reserved: int = 0
    limit: int = 0
    stale: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """A settled run: its charged cost (micro-USD) and tokens."""

    run_id: str
    cost: int
    tokens: int


class BudgetLedger(Protocol):
    def reserve(
        self,
        owner_id: int,
        run_id: str,
        windows: Sequence[WindowLimit],
        *,
        cost: int,
        tokens: int,
        ttl_ms: int,
        key_ttl_s: int,
    ) -> Verdict: ...

    def seed(
        self, owner_id: int, window: str, entries: Sequence[Entry], key_ttl_s: int
    ) -> None: ...

    def settle(
        self, owner_id: int, run_id: str, windows: Sequence[str], entry: Entry, key_ttl_s: int
    ) -> None: ...

    def release(self, owner_id: int, run_id: str, windows: Sequence[str]) -> None: ...

    def snapshot(self, owner_id: int, window: str) -> dict[str, Any]: ...


_NOW = (
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)
# KEYS: per window (spent hash, reservations hash, settled hash).
# ARGV: run, cost, tokens, ttl_ms, key_ttl_s, then per window: max_cost, max_tokens (-1: none).
_RESERVE = (
    _NOW
    + """
local run = ARGV[1]
local n = #KEYS / 3
local unseeded = {}
for i = 1, n do
  if redis.call('hget', KEYS[3 * i - 2], 'seeded') ~= '1' then unseeded[#unseeded + 1] = i end
end
if #unseeded > 0 then return {'seed', unseeded} end
local stale = {}
local held = 0
local deny = nil
for i = 1, n do
  local L, R = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local rc, rt = 0, 0
  local entries = redis.call('hgetall', R)
  for j = 1, #entries, 2 do
    local c, tk, ex = string.match(entries[j + 1], '^(%d+):(%d+):(%d+)$')
    if ex == nil or tonumber(ex) <= now then
      redis.call('hdel', R, entries[j])
      stale[#stale + 1] = entries[j]
    elseif entries[j] == run then
      held = held + 1
    else
      rc = rc + tonumber(c)
      rt = rt + tonumber(tk)
    end
  end
  if deny == nil then
    local sc = tonumber(redis.call('hget', L, 'cost') or '0')
    local st = tonumber(redis.call('hget', L, 'tokens') or '0')
    local mc = tonumber(ARGV[4 + 2 * i])
    local mt = tonumber(ARGV[5 + 2 * i])
    if mc >= 0 and sc + rc >= mc then
      deny = {'deny', i, 'cost_usd', sc, rc, mc}
    elseif mt >= 0 and st + rt >= mt then
      deny = {'deny', i, 'tokens', st, rt, mt}
    end
  end
end
local value = ARGV[2] .. ':' .. ARGV[3] .. ':' .. (now + tonumber(ARGV[4]))
if held == n then
  for i = 1, n do redis.call('hset', KEYS[3 * i - 1], run, value) end
  return {'ok', stale}
end
if deny ~= nil then
  deny[#deny + 1] = stale
  return deny
end
for i = 1, n do
  redis.call('hset', KEYS[3 * i - 1], run, value)
  for k = 3 * i - 2, 3 * i do redis.call('expire', KEYS[k], ARGV[5]) end
end
return {'ok', stale}
"""
)
# KEYS: per window (spent hash, reservations hash, settled hash).
# ARGV: run, cost, tokens, key_ttl_s.
_SETTLE = """
local n = #KEYS / 3
for i = 1, n do
  local L, R, U = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('hdel', R, ARGV[1])
  if redis.call('hsetnx', U, ARGV[1], ARGV[2] .. ':' .. ARGV[3]) == 1 then
    redis.call('hincrby', L, 'cost', ARGV[2])
    redis.call('hincrby', L, 'tokens', ARGV[3])
  end
  for k = 3 * i - 2, 3 * i do redis.call('expire', KEYS[k], ARGV[4]) end
end
return 1
"""
# KEYS: spent hash, reservations hash, settled hash. ARGV: key_ttl_s, last (1: mark seeded),
# then (run, cost, tokens) triples.
_SEED = """
for j = 3, #ARGV, 3 do
  if redis.call('hsetnx', KEYS[3], ARGV[j], ARGV[j + 1] .. ':' .. ARGV[j + 2]) == 1 then
    redis.call('hincrby', KEYS[1], 'cost', ARGV[j + 1])
    redis.call('hincrby', KEYS[1], 'tokens', ARGV[j + 2])
  end
end
if ARGV[2] == '1' then redis.call('hset', KEYS[1], 'seeded', '1') end
for k = 1, 3 do redis.call('expire', KEYS[k], ARGV[1]) end
return 1
"""
_SNAPSHOT = (
    _NOW
    + """
local rc, rt, live = 0, 0, 0
local entries = redis.call('hgetall', KEYS[2])
for j = 1, #entries, 2 do
  local c, tk, ex = string.match(entries[j + 1], '^(%d+):(%d+):(%d+)$')
  if ex ~= nil and tonumber(ex) > now then
    rc = rc + tonumber(c)
    rt = rt + tonumber(tk)
    live = live + 1
  end
end
return {redis.call('hget', KEYS[1], 'seeded') or '0', redis.call('hget', KEYS[1], 'cost') or '0',
        redis.call('hget', KEYS[1], 'tokens') or '0', rc, rt, live}
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBudgetLedger:
    """The ledger in Redis: every step is one Lua script (atomic, Redis's own clock)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._seed = client.register_script(_SEED)
        self._snapshot = client.register_script(_SNAPSHOT)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisBudgetLedger:
        import redis

        return cls(redis.Redis.from_url(url), prefix)

    def _keys(self, owner_id: int, window: str) -> list[str]:
        base = f"{self.prefix}budget:{owner_id}:{window}"
        return [base, f"{base}:res", f"{base}:runs"]

    def reserve(
        self,
        owner_id: int,
        run_id: str,
        windows: Sequence[WindowLimit],
        *,
        cost: int,
        tokens: int,
        ttl_ms: int,
        key_ttl_s: int,
    ) -> Verdict:
        keys = [k for w in windows for k in self._keys(owner_id, w.key)]
        args: list[Any] = [run_id, cost, tokens, ttl_ms, key_ttl_s]
        for w in windows:
            args += [
                -1 if w.max_cost_micros is None else w.max_cost_micros,
                -1 if w.max_tokens is None else w.max_tokens,
            ]
        reply = self._reserve(keys=keys, args=args)
        outcome = _text(reply[0])
        if outcome == "seed":
            return Verdict("seed", seed=tuple(int(i) - 1 for i in reply[1]))
        if outcome == "ok":
            return Verdict("ok", stale=tuple(_text(s) for s in reply[1]))
        return Verdict(
            "deny",
            window=int(reply[1]) - 1,
            metric=_text(reply[2]),
            spent=int(reply[3]),
            reserved=int(reply[4]),
            limit=int(reply[5]),
            stale=tuple(_text(s) for s in reply[6]),
        )

    def seed(self, owner_id: int, window: str, entries: Sequence[Entry], key_ttl_s: int) -> None:
        keys = self._keys(owner_id, window)
        chunks = [entries[i : i + _SEED_CHUNK] for i in range(0, len(entries), _SEED_CHUNK)]
        for n, chunk in enumerate(chunks or [()]):
            args: list[Any] = [key_ttl_s, int(n == max(0, len(chunks) - 1))]
            for e in chunk:
                args += [e.run_id, e.cost, e.tokens]
            self._seed(keys=keys, args=args)

    def settle(
        self, owner_id: int, run_id: str, windows: Sequence[str], entry: Entry, key_ttl_s: int
    ) -> None:
        keys = [k for w in windows for k in self._keys(owner_id, w)]
        self._settle(keys=keys, args=[run_id, entry.cost, entry.tokens, key_ttl_s])

    def release(self, owner_id: int, run_id: str, windows: Sequence[str]) -> None:
        for w in windows:
            self.client.hdel(self._keys(owner_id, w)[1], run_id)

    def snapshot(self, owner_id: int, window: str) -> dict[str, Any]:
        seeded, cost, tokens, rc, rt, live = self._snapshot(
            keys=self._keys(owner_id, window), args=[]
        )
        return {
            "seeded": _text(seeded) == "1",
            "spent_cost": int(cost),
            "spent_tokens": int(tokens),
            "reserved_cost": int(rc),
            "reserved_tokens": int(rt),
            "reservations": int(live),
        }

    def forget(self, owner_id: int, window: str) -> None:
        """Drop what the ledger knows of a window (what a Redis flush does; for tests)."""
        self.client.delete(*self._keys(owner_id, window))


@dataclass
class _LocalWindow:
    seeded: bool = False
    cost: int = 0
    tokens: int = 0
    settled: dict[str, tuple[int, int]] = field(default_factory=dict)
    reservations: dict[str, tuple[int, int, float]] = field(default_factory=dict)


class LocalBudgetLedger:
    """The ledger of one process (embedded mode): the same steps under one lock."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.windows: dict[tuple[int, str], _LocalWindow] = {}

    @staticmethod
    def _now_ms() -> float:
        return time.time() * 1000

    def _window(self, owner_id: int, key: str) -> _LocalWindow:
        return self.windows.setdefault((owner_id, key), _LocalWindow())

    def reserve(
        self,
        owner_id: int,
        run_id: str,
        windows: Sequence[WindowLimit],
        *,
        cost: int,
        tokens: int,
        ttl_ms: int,
        key_ttl_s: int,
    ) -> Verdict:
        with self.mutex:
            found = [self._window(owner_id, w.key) for w in windows]
            unseeded = tuple(i for i, w in enumerate(found) if not w.seeded)
            if unseeded:
                return Verdict("seed", seed=unseeded)
            now = self._now_ms()
            stale: list[str] = []
            held = 0
            deny: Verdict | None = None
            for i, (limit, w) in enumerate(zip(windows, found, strict=True)):
                rc = rt = 0
                for rid, (c, t, expires) in list(w.reservations.items()):
                    if expires <= now:
                        del w.reservations[rid]
                        stale.append(rid)
                    elif rid == run_id:
                        held += 1
                    else:
                        rc, rt = rc + c, rt + t
                if deny is None:
                    if limit.max_cost_micros is not None and w.cost + rc >= limit.max_cost_micros:
                        deny = Verdict("deny", (), i, "cost_usd", w.cost, rc, limit.max_cost_micros)
                    elif limit.max_tokens is not None and w.tokens + rt >= limit.max_tokens:
                        deny = Verdict("deny", (), i, "tokens", w.tokens, rt, limit.max_tokens)
            if held < len(found) and deny is not None:
                return dataclasses.replace(deny, stale=tuple(stale))
            for w in found:
                w.reservations[run_id] = (cost, tokens, now + ttl_ms)
            return Verdict("ok", stale=tuple(stale))

    def seed(self, owner_id: int, window: str, entries: Sequence[Entry], key_ttl_s: int) -> None:
        with self.mutex:
            w = self._window(owner_id, window)
            for e in entries:
                if e.run_id not in w.settled:
                    w.settled[e.run_id] = (e.cost, e.tokens)
                    w.cost, w.tokens = w.cost + e.cost, w.tokens + e.tokens
            w.seeded = True

    def settle(
        self, owner_id: int, run_id: str, windows: Sequence[str], entry: Entry, key_ttl_s: int
    ) -> None:
        with self.mutex:
            for key in windows:
                w = self._window(owner_id, key)
                w.reservations.pop(run_id, None)
                if run_id not in w.settled:
                    w.settled[run_id] = (entry.cost, entry.tokens)
                    w.cost, w.tokens = w.cost + entry.cost, w.tokens + entry.tokens

    def release(self, owner_id: int, run_id: str, windows: Sequence[str]) -> None:
        with self.mutex:
            for key in windows:
                self._window(owner_id, key).reservations.pop(run_id, None)

    def snapshot(self, owner_id: int, window: str) -> dict[str, Any]:
        with self.mutex:
            w = self.windows.get((owner_id, window)) or _LocalWindow()
            now = self._now_ms()
            live = [(c, t) for c, t, expires in w.reservations.values() if expires > now]
            return {
                "seeded": w.seeded,
                "spent_cost": w.cost,
                "spent_tokens": w.tokens,
                "reserved_cost": sum(c for c, _ in live),
                "reserved_tokens": sum(t for _, t in live),
                "reservations": len(live),
            }

    def forget(self, owner_id: int, window: str) -> None:
        with self.mutex:
            self.windows.pop((owner_id, window), None)


@cache
def budget_ledger() -> BudgetLedger:
    """The process's ledger: Redis when REDIS_URL is set, else process-local."""
    if settings.REDIS_URL:
        return RedisBudgetLedger.from_url(settings.REDIS_URL, settings.ASM_REDIS_PREFIX)
    return LocalBudgetLedger()


# --------------------------------------------------------------------------- who has budgets

_rules_lock = threading.Lock()
_rules: tuple[float, dict[int, list[BudgetRule]]] = (0.0, {})


def budget_cache_clear() -> None:
    global _rules
    with _rules_lock:
        _rules = (0.0, {})


def _budget_rules() -> dict[int, list[BudgetRule]]:
    """Enabled budgets by owner (cached for ``ASM_BUDGET_CACHE_S``)."""
    global _rules
    now = time.monotonic()
    with _rules_lock:
        expires, rules = _rules
    if expires > now:
        return rules
    fresh: dict[int, list[BudgetRule]] = {}
    for budget in Budget.objects.filter(enabled=True).order_by("owner_id", "window"):
        fresh.setdefault(budget.owner_id, []).append(BudgetRule.of(budget))
    with _rules_lock:
        _rules = (now + settings.ASM_BUDGET_CACHE_S, fresh)
    return fresh


# --------------------------------------------------------------------------- the gate


@dataclass
class _Reservation:
    owner_id: int
    run_id: uuid.UUID
    windows: tuple[str, ...]
    cost: int
    tokens: int


class BudgetClaim:
    """What `budget_claim` decided: ``run`` to execute (None: nothing to execute now),
    ``wait_reason`` when the session must wait for its owner's budget. Use it as a context
    manager around the execution: leaving it settles the run's reservation."""

    def __init__(
        self,
        run: RunRecord | None,
        reservation: _Reservation | None = None,
        wait_reason: str = "",
    ) -> None:
        self.run, self.reservation, self.wait_reason = run, reservation, wait_reason

    def __enter__(self) -> BudgetClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reservation is not None:
            try:
                _settle(self.reservation)
            except Exception:  # the reservation expires on its own; the DB keeps the spend
                logger.exception("could not settle the budget of run %s", self.reservation.run_id)
            self.reservation = None


class _Refused(Exception):
    def __init__(self, run: RunRecord, rule: BudgetRule, details: dict[str, Any]) -> None:
        super().__init__(details["message"])
        self.run, self.rule, self.details = run, rule, details


def budget_claim(
    store: SessionStore, session_id: uuid.UUID, *, owner: str, lease_ms: int
) -> BudgetClaim:
    """Claim the session's next run (`store.run_claim_next`) within its owner's budgets."""
    rules_by_owner = _budget_rules()
    if not rules_by_owner:
        return BudgetClaim(store.run_claim_next(session_id, owner=owner, lease_ms=lease_ms))
    row = (
        Session.objects.filter(id=session_id).values_list("owner_id", "agent_id", "context").first()
    )
    rules = rules_by_owner.get(row[0]) if row is not None and row[0] is not None else None
    if not rules or row is None:
        return BudgetClaim(store.run_claim_next(session_id, owner=owner, lease_ms=lease_ms))
    owner_id, agent_id, context = row
    ledger = budget_ledger()
    reservation: _Reservation | None = None
    refused: _Refused | None = None
    try:
        with transaction.atomic():
            run = store.run_claim_next(session_id, owner=owner, lease_ms=lease_ms)
            if run is None:
                return BudgetClaim(None)
            try:
                reservation = _reserve(ledger, owner_id, run, rules, agent_id, context)
            except _Refused as exc:
                if exc.rule.on_exceed == Budget.OnExceed.WAIT:
                    raise  # rolls the claim back: the run stays pending
                refused = exc  # the claim stands: the run is failed below
    except _Refused as exc:
        return BudgetClaim(None, wait_reason=_wait(session_id, exc))
    except BaseException:
        if reservation is not None:
            ledger.release(owner_id, str(reservation.run_id), reservation.windows)
        raise
    if refused is not None:
        _fail(store, refused)
        return BudgetClaim(None)
    return BudgetClaim(run, reservation)


def _key_ttl_s(window: Window) -> int:
    left = window.end + _KEY_GRACE - datetime.now(UTC)
    return max(60, int(left.total_seconds()))


def _reserve(
    ledger: BudgetLedger,
    owner_id: int,
    run: RunRecord,
    rules: Sequence[BudgetRule],
    agent_id: str,
    context: Mapping[str, Any],
) -> _Reservation:
    at = run.started_at or datetime.now(UTC)
    windows = [budget_window(r.window, at) for r in rules]
    limits = [
        WindowLimit(w.key, r.max_cost_micros, r.max_tokens)
        for w, r in zip(windows, rules, strict=True)
    ]
    cost, tokens = _estimate(run, agent_id, context)
    options = run.options or {}
    timeout_ms = options.get("timeout_ms") or settings.ASM_RUN_TIMEOUT_MS
    ttl_ms = int(
        timeout_ms + settings.ASM_CANCEL_GRACE_S * 1000 + 2 * settings.ASM_RUN_LEASE_MS + 60_000
    )
    key_ttl = max(_key_ttl_s(w) for w in windows)
    for _ in range(3):
        verdict = ledger.reserve(
            owner_id,
            str(run.id),
            limits,
            cost=cost,
            tokens=tokens,
            ttl_ms=ttl_ms,
            key_ttl_s=key_ttl,
        )
        if verdict.stale:
            _settle_stale(ledger, owner_id, verdict.stale, [r.window for r in rules], key_ttl)
        if verdict.outcome == "seed":
            for i in verdict.seed:
                ledger.seed(owner_id, windows[i].key, _spend_entries(owner_id, windows[i]), key_ttl)
            continue
        if verdict.outcome == "ok":
            return _Reservation(owner_id, run.id, tuple(w.key for w in windows), cost, tokens)
        rule, window = rules[verdict.window], windows[verdict.window]
        raise _Refused(run, rule, _refusal(rule, window, verdict, cost, tokens))
    raise AsmError(ErrorCode.INTERNAL_ERROR, "The budget ledger could not be seeded")


def _estimate(run: RunRecord, agent_id: str, context: Mapping[str, Any]) -> tuple[int, int]:
    """The run's reservation in micro-USD and tokens (``budget_estimate``)."""
    manifest = agent_manifest_for(agent_id)
    try:
        policy = policy_stack(
            policy_sources(
                default=settings.ASM_DEFAULT_POLICY,
                agent=(manifest or {}).get("default_policy"),
                session_context=context,
                options=run.options,
            )
        )
    except AsmError:
        policy = None  # the executor fails the run on it; reserve the default meanwhile
    limits = {key: limit.value for key, limit in policy.limits.items()} if policy else {}
    cost, tokens = budget_estimate(
        limits,
        provider=run.provider or settings.ASM_DEFAULT_PROVIDER,
        rates=settings.ASM_COST_RATES,
        default_cost_usd=settings.ASM_BUDGET_RESERVE_USD,
        default_tokens=settings.ASM_BUDGET_RESERVE_TOKENS,
    )
    return cost_micros(cost), tokens


def _usd(micros: int) -> float:
    return float(Decimal(micros) * MICRO)


def _refusal(
    rule: BudgetRule, window: Window, verdict: Verdict, cost: int, tokens: int
) -> dict[str, Any]:
    money = verdict.metric == "cost_usd"

    def show(value: int) -> float | int:
        return _usd(value) if money else value

    return {
        "message": (
            f"Owner budget exceeded: the {rule.window} {verdict.metric} limit "
            f"({show(verdict.limit)}) is reached"
        ),
        "budget_id": rule.id,
        "window": rule.window,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "metric": verdict.metric,
        "limit": show(verdict.limit),
        "spent": show(verdict.spent),
        "reserved": show(verdict.reserved),
        "estimate": show(cost if money else tokens),
        "on_exceed": rule.on_exceed,
    }


def _wait(session_id: uuid.UUID, refused: _Refused) -> str:
    """The run waits. Its first refusal (and any refusal for another reason) writes an
    ``error_occurred`` saying why; retries for the same reason write nothing. Returns the
    waiting reason (stable while the same limit holds the run)."""
    d = refused.details
    reason = f"{d['message']}; waiting for room in the window (until {d['window_end']})"
    run = refused.run
    with transaction.atomic():
        current = (
            Run.objects.select_for_update()
            .filter(id=run.id)
            .values_list("waiting_reason", "status")
            .first()
        )
        if current is None or current[1] != "pending":
            return reason
        told = current[0] == reason and (
            Event.objects.filter(
                run_id=run.id, type=EventType.ERROR_OCCURRED, data__error_code=QUOTA
            ).exists()
        )
        if not told:  # (the session's later runs get the reason from the drain, not the event)
            Run.objects.filter(id=run.id).update(waiting_reason=reason)
            event_append(
                session_id=session_id,
                type=EventType.ERROR_OCCURRED,
                data=_event_data(d),
                run_id=run.id,
                metadata={"actor": "system:budget"},
                provider=run.provider,
            )
    return reason


def _event_data(details: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "error_code": QUOTA,
        "error_message": details["message"],
        "budget": {k: v for k, v in details.items() if k != "message"},
    }


def _fail(store: SessionStore, refused: _Refused) -> None:
    """The run (claimed, never started) ends ``failed`` with ``provider_quota_exceeded``."""
    run, d = refused.run, refused.details
    provider = run.provider or settings.ASM_DEFAULT_PROVIDER
    finished = store.run_finish(
        run.id,
        attempt=run.attempt,
        status="failed",
        output=None,
        error={
            "code": QUOTA,
            "message": d["message"],
            "details": {"budget": _event_data(d)["budget"]},
        },
        token_usage={},
        metadata={
            "provider": provider,
            "budget": {"refused": _event_data(d)["budget"]},
            "cost_supported": True,
        },
        terminal=NewEvent(
            type=EventType.RUN_FAILED,
            data={"error_code": QUOTA, "error_message": d["message"]},
            run_id=run.id,
            provider=provider,
        ),
        events=[
            NewEvent(
                type=EventType.ERROR_OCCURRED,
                data=_event_data(d),
                run_id=run.id,
                metadata={"actor": "system:budget"},
                provider=provider,
            )
        ],
        cost_usd=Decimal(0).quantize(MICRO),
    )
    if finished is None:
        logger.warning("run %s: budget refusal fenced off", run.id)


# --------------------------------------------------------------------------- settling


def _charged(cost_usd: Decimal | None, token_usage: object, budget_meta: object) -> Entry:
    tokens = usage_tokens(token_usage if isinstance(token_usage, Mapping) else None)
    if cost_usd is not None:
        return Entry("", cost_micros(cost_usd), tokens)
    if isinstance(budget_meta, Mapping) and budget_meta.get("charged_cost_usd") is not None:
        return Entry("", cost_micros(Decimal(str(budget_meta["charged_cost_usd"]))), tokens)
    return Entry("", 0, tokens)


def _settle(reservation: _Reservation) -> None:
    """Release the run's reservation and charge what it spent (see the module docstring)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(id=reservation.run_id).first()
        if run is None or run.status not in RUN_TERMINAL:
            return  # not finished (its lease was lost): the reservation stays until it is
        cost_known = run.cost_usd is not None
        charged = Entry(
            str(run.id),
            cost_micros(run.cost_usd) if cost_known else reservation.cost,
            usage_tokens(run.token_usage if isinstance(run.token_usage, Mapping) else None),
        )
        run.metadata = {
            **(run.metadata or {}),
            "budget": {
                "windows": list(reservation.windows),
                "reserved_cost_usd": _usd(reservation.cost),
                "reserved_tokens": reservation.tokens,
                "charged_cost_usd": _usd(charged.cost),
                "charged_tokens": charged.tokens,
                "cost_known": cost_known,
            },
        }
        run.save(update_fields=["metadata"])
    key_ttl = max(_key_ttl_s(_window_of(key)) for key in reservation.windows)
    budget_ledger().settle(reservation.owner_id, str(run.id), reservation.windows, charged, key_ttl)


def _window_of(key: str) -> Window:
    if key.startswith("d"):
        return budget_window(
            Budget.Window.DAILY, datetime.strptime(key[1:], "%Y%m%d").replace(tzinfo=UTC)
        )
    return budget_window(
        Budget.Window.MONTHLY, datetime.strptime(key[1:], "%Y%m").replace(tzinfo=UTC)
    )


def _settle_stale(
    ledger: BudgetLedger, owner_id: int, run_ids: Iterable[str], kinds: Sequence[str], key_ttl: int
) -> None:
    """Expired reservations: charge the runs that finished (from the database) to the
    windows (of these ``kinds``) they started in."""
    ids = [uuid.UUID(r) for r in run_ids]
    for run_id, cost, usage, meta, started in Run.objects.filter(
        id__in=ids, status__in=[s.value for s in RUN_TERMINAL], started_at__isnull=False
    ).values_list("id", "cost_usd", "token_usage", "metadata__budget", "started_at"):
        if started is None:
            continue
        entry = _charged(cost, usage, meta)
        keys = [budget_window(kind, started).key for kind in kinds]
        ledger.settle(
            owner_id, str(run_id), keys, Entry(str(run_id), entry.cost, entry.tokens), key_ttl
        )


def _spend_entries(owner_id: int, window: Window) -> list[Entry]:
    """The owner's finished runs that started in ``window``, as the database says."""
    rows = Run.objects.filter(
        Q(session__owner_id=owner_id),
        started_at__gte=window.start,
        started_at__lt=window.end,
        status__in=[s.value for s in RUN_TERMINAL],
    ).values_list("id", "cost_usd", "token_usage", "metadata__budget")
    out = []
    for run_id, cost, usage, meta in rows.iterator(chunk_size=2000):
        entry = _charged(cost, usage, meta)
        out.append(Entry(str(run_id), entry.cost, entry.tokens))
    return out


# --------------------------------------------------------------------------- reading


def budget_status(budget: Budget, *, at: datetime | None = None) -> dict[str, Any]:
    """A budget's current window: bounds, spend (the database's), live reservations."""
    window = budget_window(budget.window, at or datetime.now(UTC))
    entries = _spend_entries(budget.owner_id, window)
    snap = budget_ledger().snapshot(budget.owner_id, window.key)
    return {
        "window_start": window.start,
        "window_end": window.end,
        "spent_cost_usd": _usd(sum(e.cost for e in entries)),
        "spent_tokens": sum(e.tokens for e in entries),
        "reserved_cost_usd": _usd(snap["reserved_cost"]),
        "reserved_tokens": snap["reserved_tokens"],
        "reservations": snap["reservations"],
    }
