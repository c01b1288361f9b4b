"""Usage selectors: token and cost totals over runs, per session and per owner.

Reads only. Totals are aggregated by the database in one query per call (token counts are
read from each run's `token_usage` JSON; a value that is not a number counts as 0, so one
odd row never breaks a listing).

Totals shape (`USAGE_KEYS`): `runs` (how many runs), `input_tokens`, `output_tokens`,
`cache_read_input_tokens`, `cache_creation_input_tokens`, `total_tokens` (input + output,
what budgets count), `cost_usd` (the sum of the runs' known costs), `runs_without_cost`
(finished runs whose cost is unknown: no rates for their provider/model) and
`cost_complete` (no such run: `cost_usd` is the whole cost).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import CharField, Count, DecimalField, F, Func, Q, QuerySet, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, NullIf

from asm_core.lifecycle import RUN_TERMINAL
from runs.models import Run

__all__ = [
    "TOKEN_KEYS",
    "USAGE_KEYS",
    "owner_usage",
    "session_usage",
    "usage_by_provider_model",
    "usage_totals",
]

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
USAGE_KEYS = (
    "runs",
    *TOKEN_KEYS,
    "total_tokens",
    "cost_usd",
    "runs_without_cost",
    "cost_complete",
)
_NUMBER: DecimalField[Decimal, Decimal] = DecimalField(max_digits=30, decimal_places=6)
_TERMINAL = [s.value for s in RUN_TERMINAL]


class _JsonNumber(Func):
    """``token_usage -> key`` as a number when it is one, else 0 (PostgreSQL and SQLite)."""

    output_field = _NUMBER

    def __init__(self, column: str, key: str) -> None:
        super().__init__(F(column))
        self.key = key

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"CASE WHEN jsonb_typeof({sql} -> %s) = 'number' THEN ({sql} ->> %s)::numeric "
            "ELSE 0 END",
            [*params, self.key, *params, self.key],
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        path = f'$."{self.key}"'
        return (
            f"CASE WHEN json_type({sql}, %s) IN ('integer', 'real') "
            f"THEN json_extract({sql}, %s) ELSE 0 END",
            [*params, path, *params, path],
        )


_P = "usage_"  # aggregate aliases must not shadow the run's own fields


def _aggregates() -> dict[str, Any]:
    out: dict[str, Any] = {f"{_P}runs": Count("id")}
    for key in TOKEN_KEYS:
        out[f"{_P}{key}"] = Coalesce(
            Sum(_JsonNumber("token_usage", key)), Value(0), output_field=_NUMBER
        )
    out[f"{_P}cost_usd"] = Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=_NUMBER)
    out[f"{_P}runs_without_cost"] = Count(
        "id", filter=Q(cost_usd__isnull=True, status__in=_TERMINAL, started_at__isnull=False)
    )
    return out


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    totals: dict[str, Any] = {"runs": int(row.get(f"{_P}runs") or 0)}
    for key in TOKEN_KEYS:
        totals[key] = int(row.get(f"{_P}{key}") or 0)
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    cost = Decimal(row.get(f"{_P}cost_usd") or 0).quantize(Decimal("0.000001"))
    totals["cost_usd"] = float(cost)
    totals["runs_without_cost"] = int(row.get(f"{_P}runs_without_cost") or 0)
    totals["cost_complete"] = totals["runs_without_cost"] == 0
    return totals


def usage_totals(runs: QuerySet[Run]) -> dict[str, Any]:
    """The totals of ``runs`` (see the module docstring)."""
    return _shape(runs.aggregate(**_aggregates()))


def session_usage(session_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Totals per session, for every id given (a session without runs has zeros)."""
    ids = list(session_ids)
    found = {
        row["session_id"]: _shape(row)
        for row in Run.objects.filter(session_id__in=ids)
        .order_by()
        .values("session_id")
        .annotate(**_aggregates())
    }
    return {sid: found.get(sid) or _shape({}) for sid in ids}


def owner_usage(
    owner_id: int, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Totals of the owner's runs; with ``since``/``until``, of the runs that STARTED in
    ``[since, until)`` (how budgets attribute runs to windows)."""
    runs = Run.objects.filter(session__owner_id=owner_id)
    if since is not None:
        runs = runs.filter(started_at__gte=since)
    if until is not None:
        runs = runs.filter(started_at__lt=until)
    return usage_totals(runs)


def usage_by_provider_model() -> list[dict[str, Any]]:
    """Token and cost totals of every run, per provider that ran it (the routed provider,
    else the requested one) and model (``metadata.model``, "" when none was reported), in
    one grouped query: ``[{"provider", "model", "runs", <TOKEN_KEYS>, "total_tokens",
    "cost_usd"}]`` sorted by provider and model. ``total_tokens`` is input + output."""
    rows = (
        Run.objects.annotate(
            usage_provider=Coalesce(
                NullIf(F("routed_provider"), Value("")), F("provider"), Value("")
            ),
            usage_model=Coalesce(Cast(KT("metadata__model"), CharField()), Value("")),
        )
        .values("usage_provider", "usage_model")
        .annotate(**_aggregates())
        .order_by("usage_provider", "usage_model")
    )
    return [
        {"provider": row["usage_provider"], "model": row["usage_model"], **_shape(row)}
        for row in rows
    ]
