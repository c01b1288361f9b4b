"""Prometheus metrics for `/metrics` (docs/operations.md lists every name and label).

Two kinds of metric, chosen so the numbers are right with any number of web and worker
processes on any number of machines:

- **Fleet state, read from the database at scrape time** (`DatabaseCollector`): runs by
  status and provider, queue depth, run durations, cost and tokens by provider and model,
  sessions by status, events appended.
  The database is the one place that sees every process's work, so any web process answers
  the same, and nothing is lost when a worker dies or restarts (in-process counters would be
  per process and reset on restart; prometheus_client's multiprocess mode only covers the
  processes of one machine that share a directory, not Celery workers on other hosts).
  `asm_run_duration_seconds` is a real cumulative histogram: it counts every finished run
  ever (runs are never deleted), so `rate()` and `histogram_quantile()` work on it.
- **Per-process state** (`PROCESS_REGISTRY`): `asm_websocket_connections`, the WebSocket
  subscribers connected to *this* process. Scrape every web process (one target each) and
  `sum()` over them for the fleet total.

If the database cannot be read, the scrape still answers: the database metrics are left out
and `asm_metrics_database_up` is 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from asm_core.lifecycle import RUN_TERMINAL, RunStatus, SessionStatus

logger = logging.getLogger(__name__)

__all__ = [
    "DURATION_BUCKETS",
    "PROCESS_REGISTRY",
    "WS_CONNECTIONS",
    "DatabaseCollector",
    "scrape_registry",
]

# Seconds (floats: `str()` of each is its `le` label). Runs go from milliseconds (echo) to
# hours (agents with many tool turns).
DURATION_BUCKETS: tuple[float, ...] = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

WS_CONNECTIONS = Gauge(
    "asm_websocket_connections",
    "WebSocket event subscribers connected to this process (per process: sum over targets).",
    registry=PROCESS_REGISTRY,
)
"""Per-process gauge: the event stream consumer calls `.inc()` on accept, `.dec()` on close."""


def _provider_label() -> Coalesce:
    """The provider that ran the run (routed), else the one requested."""
    return Coalesce(NullIf(F("routed_provider"), Value("")), F("provider"), Value(""))


def _seconds(value: timedelta | float | int | None) -> float:
    """A DurationField aggregate as seconds (backends return timedelta; be lenient)."""
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000  # microseconds, as SQLite stores durations


class DatabaseCollector:
    """Fleet-wide metrics computed from the database on each scrape (a few aggregates)."""

    def collect(self) -> Iterable[Metric]:
        started = time.monotonic()
        try:
            families = list(self._families())
            up = 1.0
        except DatabaseError:
            logger.warning("metrics: the database could not be read", exc_info=True)
            families, up = [], 0.0
        yield from families
        database_up = GaugeMetricFamily(
            "asm_metrics_database_up",
            "1 when this scrape read the database, 0 when it could not (database metrics absent).",
        )
        database_up.add_metric([], up)
        yield database_up
        took = GaugeMetricFamily(
            "asm_metrics_collect_seconds", "Time this scrape spent reading the database."
        )
        took.add_metric([], time.monotonic() - started)
        yield took

    def _families(self) -> Iterator[Metric]:
        from runs.models import Run
        from runs.usage import TOKEN_KEYS, usage_by_provider_model
        from sessions.models import Session

        # --- runs by status and provider (gauge)
        runs = GaugeMetricFamily(
            "asm_runs",
            "Runs by current status and provider (routed provider, else the requested one).",
            labels=["status", "provider"],
        )
        counts: dict[tuple[str, str], int] = {}
        for row in (
            Run.objects.annotate(provider_label=_provider_label())
            .values("status", "provider_label")
            .annotate(n=Count("id"))
            .order_by()
        ):
            counts[(row["status"], row["provider_label"])] = row["n"]
        providers = sorted({p for _, p in counts} or {""})
        for status in RunStatus:
            for provider in providers:  # zeros too, so a series does not vanish when it empties
                runs.add_metric([status.value, provider], counts.get((status.value, provider), 0))
        yield runs

        # --- cost and tokens by provider and model (counters; runs.usage, one query)
        cost = CounterMetricFamily(
            "asm_run_cost_usd",
            "Sum of cost_usd over all runs, by provider and model (metadata.model, '' when "
            "unknown); runs without a cost count 0.",
            labels=["provider", "model"],
        )
        tokens = CounterMetricFamily(
            "asm_run_tokens",
            "Tokens used by all runs, by provider, model and kind (input, output, "
            "cache_read_input, cache_creation_input; total = input + output).",
            labels=["provider", "model", "kind"],
        )
        for row in usage_by_provider_model():
            labels = [row["provider"], row["model"]]
            cost.add_metric(labels, row["cost_usd"])
            for key in (*TOKEN_KEYS, "total_tokens"):
                tokens.add_metric([*labels, key.removesuffix("_tokens")], row[key])
        yield cost
        yield tokens

        # --- queue (pending runs)
        pending = Run.objects.filter(status=RunStatus.PENDING).aggregate(
            n=Count("id"), oldest=Min("created_at")
        )
        depth = GaugeMetricFamily(
            "asm_run_queue_depth", "Runs waiting to start (status pending), over all sessions."
        )
        depth.add_metric([], pending["n"])
        yield depth
        oldest = GaugeMetricFamily(
            "asm_run_queue_oldest_age_seconds",
            "Age of the oldest pending run in seconds (0 when none is pending).",
        )
        age = (timezone.now() - pending["oldest"]).total_seconds() if pending["oldest"] else 0.0
        oldest.add_metric([], max(0.0, age))
        yield oldest

        # --- run duration histogram (cumulative over every finished run)
        duration = ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())
        bucket_aggs = {
            f"le_{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        histogram = HistogramMetricFamily(
            "asm_run_duration_seconds",
            "Duration (started_at to ended_at) of finished runs that started, by provider and "
            "terminal status; cumulative over all runs ever finished.",
            labels=["provider", "status"],
        )
        for row in (
            Run.objects.filter(
                status__in=[s.value for s in RUN_TERMINAL],
                started_at__isnull=False,
                ended_at__isnull=False,
            )
            .annotate(provider_label=_provider_label(), duration=duration)
            .values("provider_label", "status")
            .annotate(n=Count("id"), total=Sum("duration"), **bucket_aggs)
            .order_by("provider_label", "status")
        ):
            buckets: list[tuple[str, float]] = [
                (str(bound), float(row[f"le_{i}"])) for i, bound in enumerate(DURATION_BUCKETS)
            ]
            buckets.append(("+Inf", float(row["n"])))
            histogram.add_metric(
                [row["provider_label"], row["status"]], buckets, _seconds(row["total"])
            )
        yield histogram

        # --- sessions and events
        sessions = GaugeMetricFamily(
            "asm_sessions", "Sessions by current status.", labels=["status"]
        )
        by_status = dict(Session.objects.values_list("status").annotate(n=Count("id")).order_by())
        for s in SessionStatus:
            sessions.add_metric([s.value], by_status.get(s.value, 0))
        yield sessions
        totals = Session.objects.aggregate(events=Sum("last_sequence"))
        events = CounterMetricFamily(
            "asm_events_appended",
            "Events ever appended to session logs (sum of the sessions' last_sequence: exact, "
            "pruned events included).",
        )
        events.add_metric([], float(totals["events"] or 0))
        yield events


class _ProcessCollector:
    """Adapts the per-process registry so each scrape can combine it with the database."""

    def collect(self) -> Iterable[Metric]:
        return PROCESS_REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: database metrics plus this process's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    registry.register(_ProcessCollector())
    return registry
