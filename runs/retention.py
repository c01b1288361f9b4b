"""Retention of streamed chunks: `events_prune_streamed` (the audited service), the
store-agnostic `run_streamed_prune` and the pure plan `streamed_prune_plan`.

A finished run's `message_streamed` chunks are many small rows that the transcript no
longer needs one by one. Retention replaces each maximal contiguous range a..b of a run's
chunks by one `events_pruned` marker at number b (`SessionStore.event_prune_range`, one
transaction per range), so big backlogs never hold a long transaction.

Invariants (docs/event-store.md, Retention):
- Only runs in a terminal status whose `ended_at` is older than the cutoff
  (`ASM_RETENTION_STREAMED_DAYS`; 0, the default, keeps everything) are touched, and only
  their `message_streamed` events. Nothing else is ever deleted.
- Sequence numbers are never reused and the session's counter never moves back; every
  number stays accounted for: an event, or a marker whose `from_sequence..to_sequence`
  covers it.
- The transcript is the same before and after (`runs.transcript`): a marker carries what
  its chunks contributed (`stream`: first chunk's sequence, merged metadata) and keeps
  their text unless the stream is closed by an assistant `message_received` with content
  (the assembled message, whose content the transcript uses instead). So a stream that was
  never assembled (a run cancelled mid-stream, text flushed by a tool call) keeps its text
  in the marker.
- Idempotent: a pruned run has no `message_streamed` events left, so a second pass finds
  nothing; a range changed since the plan was made is refused by the store, unchanged.
- Audited: one `events.prune` audit entry per pruned run (detail: session, ranges, counts).

Transactions and locks: deliberately not one durable transaction per pass. Each range is
its own short transaction inside the store (the DELETE locks that range's chunk rows; the
session's counter row is never locked, so appends to the session go on meanwhile); the
caller must not hold a transaction open around a pass.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from asm_core.event_types import EventType
from asm_core.lifecycle import RUN_TERMINAL
from asm_core.records import EventRecord
from asm_core.store import SessionStore
from events.models import Event
from runs.models import Run
from runs.store import DjangoSessionStore
from runs.transcript import TRANSCRIPT_EVENT_TYPES, EventLike, stream_chunk, stream_closer
from sessions.audit import audit_record

logger = logging.getLogger(__name__)

_STREAMED = EventType.MESSAGE_STREAMED.value
_PAGE = 1000
REASON = "retention"


@dataclass(frozen=True, slots=True)
class PruneRange:
    """One contiguous range of a run's chunks and the marker payload that replaces it."""

    from_sequence: int
    to_sequence: int
    data: dict[str, Any]


@dataclass(slots=True)
class _Open:
    """A range being collected: its chunks' numbers, texts and merged metadata."""

    first: int
    last: int
    texts: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    first_text_sequence: int | None = None

    def payload(self, run_id: uuid.UUID, *, keep_text: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": str(run_id),
            "from_sequence": self.first,
            "to_sequence": self.last,
            "pruned_count": self.last - self.first + 1,
            "pruned_type": _STREAMED,
            "reason": REASON,
        }
        if self.first_text_sequence is not None:  # else: only empty chunks, nothing to keep
            stream: dict[str, Any] = {
                "first_sequence": self.first_text_sequence,
                "metadata": self.metadata,
            }
            if keep_text:
                stream["text"] = "".join(self.texts)
            data["stream"] = stream
        return data


def streamed_prune_plan(events: Iterable[EventLike], *, run_id: uuid.UUID) -> list[PruneRange]:
    """The ranges of `run_id`'s chunks in `events` and their markers' payloads (pure).

    `events`: the session's events in sequence order (at least the transcript types and
    markers), from the run's first chunk on and up to the event that closes the stream of
    its last chunk; when that event is missing, the last stream's text is kept.
    """
    done: list[PruneRange] = []
    waiting: list[_Open] = []  # ranges whose stream is still open
    current: _Open | None = None

    def settle(keep_text: bool) -> None:
        done.extend(
            PruneRange(r.first, r.last, r.payload(run_id, keep_text=keep_text)) for r in waiting
        )
        waiting.clear()

    for event in events:
        e = _get(event)
        seq = e.get("sequence_number")
        if not isinstance(seq, int) or isinstance(seq, bool):
            continue
        mine = e.get("type") == _STREAMED and str(e.get("run_id")) == str(run_id)
        if current is not None and not (mine and seq == current.last + 1):
            current = None  # the range ends: something else holds the next number
        if mine:
            if current is None:
                current = _Open(first=seq, last=seq)
                waiting.append(current)
            current.last = seq
            chunk = stream_chunk(event)
            if chunk is not None:
                text, meta = chunk
                current.texts.append(text)
                current.metadata.update(meta)
                if current.first_text_sequence is None:
                    current.first_text_sequence = seq
            continue
        used = stream_closer(event)
        if used is not None:
            settle(keep_text=used)
    settle(keep_text=True)  # never closed (yet): the text must survive in the markers
    return sorted(done, key=lambda r: r.from_sequence)


def _get(event: EventLike) -> Mapping[str, Any]:
    if isinstance(event, Mapping):
        return event
    return {"type": event.type, "sequence_number": event.sequence_number, "run_id": event.run_id}


@dataclass(frozen=True, slots=True)
class RunPruneResult:
    run_id: uuid.UUID
    ranges: tuple[PruneRange, ...] = ()
    markers: tuple[EventRecord, ...] = ()

    @property
    def pruned_count(self) -> int:
        return sum(int(m.data["pruned_count"]) for m in self.markers)


def run_streamed_prune(
    store: SessionStore,
    *,
    session_id: uuid.UUID,
    run_id: uuid.UUID,
    metadata: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> RunPruneResult:
    """Replace each contiguous range of `run_id`'s chunks by one marker (through the port,
    one atomic step per range). The caller decides the run may be pruned (finished, old)."""
    found = store.event_list(session_id, run_id=run_id, types=_STREAMED)
    chunks = [e for e in found if e.type == _STREAMED]
    if not chunks:
        return RunPruneResult(run_id)
    last = chunks[-1].sequence_number
    window: list[EventRecord] = []
    cursor = chunks[0].sequence_number - 1
    while True:  # the session's transcript events from the first chunk to the last's closer
        page = store.event_list(session_id, after=cursor, types=TRANSCRIPT_EVENT_TYPES, limit=_PAGE)
        window.extend(page)
        if len(page) < _PAGE or any(
            e.sequence_number > last and stream_closer(e) is not None for e in page
        ):
            break
        cursor = page[-1].sequence_number
    plan = tuple(streamed_prune_plan(window, run_id=run_id))
    if dry_run:
        return RunPruneResult(run_id, plan)
    marker_meta = {"actor": "system", "pruned_at": timezone.now().isoformat(), **(metadata or {})}
    markers = []
    for r in plan:
        marker = store.event_prune_range(
            session_id,
            run_id=run_id,
            from_sequence=r.from_sequence,
            to_sequence=r.to_sequence,
            data=r.data,
            metadata=marker_meta,
        )
        if marker is not None:
            markers.append(marker)
    return RunPruneResult(run_id, plan, tuple(markers))


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one pass did (or, with `dry_run`, would do)."""

    enabled: bool
    dry_run: bool = False
    cutoff: datetime | None = None
    runs: int = 0  # runs examined
    ranges: int = 0  # markers written (dry run: planned)
    pruned: int = 0  # chunk events replaced (dry run: planned)


def events_prune_streamed(
    *,
    older_than: datetime | None = None,
    run_limit: int | None = None,
    dry_run: bool = False,
    actor: object = None,
) -> PruneReport:
    """One retention pass: prune the chunks of up to `run_limit` (default
    `ASM_RETENTION_BATCH_RUNS`) finished runs that ended before `older_than` (default: now
    minus `ASM_RETENTION_STREAMED_DAYS`; 0 days = retention off, nothing is done).

    Oldest runs first; each range is its own short transaction, so the beat schedule drains
    a backlog over several passes without long locks.
    """
    if older_than is None:
        days = int(settings.ASM_RETENTION_STREAMED_DAYS)
        if days <= 0:
            return PruneReport(enabled=False, dry_run=dry_run)
        older_than = timezone.now() - timedelta(days=days)
    limit = run_limit if run_limit is not None else int(settings.ASM_RETENTION_BATCH_RUNS)
    candidates = list(
        Run.objects.filter(status__in=sorted(RUN_TERMINAL), ended_at__lt=older_than)
        .filter(  # (session, type, seq) index: only the session's remaining chunks are read
            Exists(
                Event.objects.filter(
                    session_id=OuterRef("session_id"), type=_STREAMED, run_id=OuterRef("pk")
                )
            )
        )
        .order_by("ended_at", "id")
        .values_list("id", "session_id")[: max(limit, 0)]
    )
    store = DjangoSessionStore()
    ranges = pruned = 0
    for run_id, session_id in candidates:
        result = run_streamed_prune(store, session_id=session_id, run_id=run_id, dry_run=dry_run)
        if dry_run:
            ranges += len(result.ranges)
            pruned += sum(int(r.data["pruned_count"]) for r in result.ranges)
            continue
        ranges += len(result.markers)
        pruned += result.pruned_count
        if result.markers:
            audit_record(
                action="events.prune",
                actor=actor,
                object_type="run",
                object_id=run_id,
                detail={
                    "session_id": str(session_id),
                    "pruned_type": _STREAMED,
                    "reason": REASON,
                    "ranges": len(result.markers),
                    "pruned_count": result.pruned_count,
                    "markers": [m.sequence_number for m in result.markers],
                },
            )
    report = PruneReport(
        enabled=True,
        dry_run=dry_run,
        cutoff=older_than,
        runs=len(candidates),
        ranges=ranges,
        pruned=pruned,
    )
    logger.info(
        "retention pass: %d runs, %d ranges, %d chunk events%s",
        report.runs,
        report.ranges,
        report.pruned,
        " (dry run)" if dry_run else "",
    )
    return report
