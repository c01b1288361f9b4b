"""Run cost: token usage x per-provider, per-model rates (USD per million tokens). PURE.

No Django, no store, no clock: ``run_cost`` takes the usage, the provider and model names
and the rate table, and returns ``(cost_usd, supported)``. The executor prices every run at
its end with it (``ExecutorConfig.cost_rates``, from settings ``ASM_COST_RATES``); the
policy evaluator can price a run in flight with the same function.

Rate table (JSON, ``ASM_COST_RATES``)::

    {"<provider>": {"<model>": {"input": 3.0, "output": 15.0,
                                "cache_read": 0.3, "cache_write": 3.75}}}

- Rates are USD per **million** tokens, numbers >= 0. ``input`` and ``output`` are
  required; ``cache_read`` and ``cache_write`` default to ``input``. An optional
  ``"input_includes_cache_read": true`` says the provider's ``input_tokens`` already count
  the cached input (OpenAI's convention, e.g. codex): those tokens are then priced once, at
  ``cache_read``, not twice.
- Model lookup: the exact model name, else the longest rate key that is a prefix of the
  model (``"claude-sonnet"`` prices ``"claude-sonnet-4-5-20250929"``), else ``"*"`` (any
  model of that provider, also when the model is unknown).
- Usage keys priced: ``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
  ``cache_creation_input_tokens`` (the keys adapters report; anything else is ignored).
  Non-numbers and negative numbers count as 0.

Invariants:
- A run whose usage has no tokens costs exactly 0 and is ``supported`` (nothing was
  consumed: no rate is needed to say so).
- A run with tokens but no rate for its provider/model is ``(None, False)``: unknown, never
  reported as 0.
- The result is a ``Decimal`` rounded half-up to the micro-dollar (6 places, the
  ``Run.cost_usd`` column's precision), so what is stored is what was computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from asm_core.errors import AsmError, ErrorCode

__all__ = [
    "ECHO_COST_RATES",
    "MICRO",
    "ModelRates",
    "cost_micros",
    "rates_for",
    "rates_validate",
    "run_cost",
    "usage_tokens",
]

#: The library default (``ExecutorConfig``): the offline ``echo`` provider costs nothing.
ECHO_COST_RATES: Mapping[str, Any] = {
    "echo": {"*": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}}
}
MICRO = Decimal("0.000001")
_PER_MILLION = Decimal(1_000_000)
_RATE_KEYS = ("input", "output", "cache_read", "cache_write")
_FLAG = "input_includes_cache_read"
_USAGE_KEYS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}


@dataclass(frozen=True)
class ModelRates:
    """One model's rates, USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    input_includes_cache_read: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": float(self.input),
            "output": float(self.output),
            "cache_read": float(self.cache_read),
            "cache_write": float(self.cache_write),
            _FLAG: self.input_includes_cache_read,
        }


def _rate(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR, f"{where} must be a number >= 0", {"field": where}
        )
    try:
        rate = Decimal(str(value))
    except ArithmeticError:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR, f"{where} must be a number >= 0", {"field": where}
        ) from None
    if not rate.is_finite() or rate < 0:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR, f"{where} must be a number >= 0", {"field": where}
        )
    return rate


def _model_rates(entry: object, where: str) -> ModelRates:
    if not isinstance(entry, Mapping):
        raise AsmError(ErrorCode.VALIDATION_ERROR, f"{where} must be an object", {"field": where})
    unknown = sorted(set(entry) - {*_RATE_KEYS, _FLAG})
    if unknown:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{where} has unknown key(s): {', '.join(map(str, unknown))}",
            {"field": where, "unknown": unknown},
        )
    for key in ("input", "output"):
        if key not in entry:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.{key} is required",
                {"field": f"{where}.{key}"},
            )
    flag = entry.get(_FLAG, False)
    if not isinstance(flag, bool):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR, f"{where}.{_FLAG} must be a boolean", {"field": where}
        )
    input_rate = _rate(entry["input"], f"{where}.input")
    return ModelRates(
        input=input_rate,
        output=_rate(entry["output"], f"{where}.output"),
        cache_read=_rate(entry.get("cache_read", input_rate), f"{where}.cache_read"),
        cache_write=_rate(entry.get("cache_write", input_rate), f"{where}.cache_write"),
        input_includes_cache_read=flag,
    )


def rates_validate(rates: object, *, field: str = "ASM_COST_RATES") -> None:
    """Check a whole rate table; a bad entry is ``validation_error`` naming it."""
    if not isinstance(rates, Mapping):
        raise AsmError(ErrorCode.VALIDATION_ERROR, f"{field} must be an object", {"field": field})
    for provider, models in rates.items():
        if not isinstance(models, Mapping):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{field}.{provider} must be an object of models",
                {"field": f"{field}.{provider}"},
            )
        for model, entry in models.items():
            _model_rates(entry, f"{field}.{provider}.{model}")


def rates_for(
    rates: Mapping[str, Any] | None, provider: str, model: str | None
) -> ModelRates | None:
    """The rates of ``provider``'s ``model`` (exact, longest prefix, then ``"*"``), or None.

    An invalid entry counts as no rate (``rates_validate`` reports it at startup).
    """
    models = (rates or {}).get(provider)
    if not isinstance(models, Mapping):
        return None
    key: str | None = None
    if model:
        if model in models:
            key = model
        else:
            prefixes = [k for k in models if k != "*" and model.startswith(k)]
            key = max(prefixes, key=len) if prefixes else None
    if key is None and "*" in models:
        key = "*"
    if key is None:
        return None
    try:
        return _model_rates(models[key], f"{provider}.{key}")
    except AsmError:
        return None


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def usage_tokens(usage: Mapping[str, Any] | None) -> int:
    """The tokens a budget counts: ``input_tokens + output_tokens`` (0 for no usage)."""
    usage = usage or {}
    return _count(usage, "input_tokens") + _count(usage, "output_tokens")


def run_cost(
    usage: Mapping[str, Any] | None,
    provider: str,
    model: str | None,
    rates: Mapping[str, Any] | None,
) -> tuple[Decimal | None, bool]:
    """``(cost_usd, supported)`` of a run's token ``usage`` (see the module docstring)."""
    usage = usage or {}
    counts = {rate: _count(usage, key) for key, rate in _USAGE_KEYS.items()}
    if not any(counts.values()):
        return Decimal(0).quantize(MICRO), True
    found = rates_for(rates, provider, model)
    if found is None:
        return None, False
    if found.input_includes_cache_read:
        counts["input"] = max(0, counts["input"] - counts["cache_read"])
    total = sum(
        (Decimal(counts[name]) * getattr(found, name) for name in _RATE_KEYS), start=Decimal(0)
    )
    return (total / _PER_MILLION).quantize(MICRO, rounding=ROUND_HALF_UP), True


def cost_micros(cost: Decimal | None) -> int:
    """A cost as whole micro-dollars (what the budget ledger adds up); None counts 0."""
    if cost is None:
        return 0
    return int((cost / MICRO).to_integral_value(rounding=ROUND_HALF_UP))
