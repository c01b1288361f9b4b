"""The event store's read side: `event_list` and `latest_sequence` (spec 2.4 semantics).

Invariants: results are in ascending sequence order; `after`/`before` are strict and apply
only when they are ints >= 0; `limit` (positive int) applies last and keeps the oldest N;
an unknown session gives an empty list and latest sequence 0. Reads take no locks.

Retention (`events.retention`) leaves gaps in the numbers, each filled by an
`events_pruned` marker at the gap's LAST number, so strict `after` needs no exception: a
cursor before or inside a pruned range gets the marker, in order. A `types` filter naming
a pruned type (`message_streamed`) also returns the markers standing for events of that
type (`asm_core.store.marker_matches`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import Q, QuerySet

from asm_core.store import (
    PRUNABLE_TYPES,
    PRUNED_MARKER_TYPE,
    type_filter,
    valid_cursor,
    valid_limit,
)
from events.models import Event
from sessions.models import Session


def event_query(
    *,
    session_id: uuid.UUID,
    after: int | None = None,
    before: int | None = None,
    types: str | Iterable[str] | None = None,
    run_id: uuid.UUID | None = None,
    since: datetime | None = None,
) -> QuerySet[Event]:
    """The filtered, ordered queryset behind `event_list` (for paginators and the admin)."""
    qs = Event.objects.filter(session_id=session_id)
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    wanted = type_filter(types)
    if wanted is not None:
        if PRUNED_MARKER_TYPE in wanted or not wanted & PRUNABLE_TYPES:
            qs = qs.filter(type__in=sorted(wanted))
        else:  # also the markers standing for the wanted pruned type(s)
            qs = qs.filter(type__in=sorted(wanted | {PRUNED_MARKER_TYPE})).filter(
                ~Q(type=PRUNED_MARKER_TYPE)
                | Q(data__pruned_type__in=sorted(wanted & PRUNABLE_TYPES))
            )
    if since is not None:
        qs = qs.filter(timestamp__gte=since)
    lo, hi = valid_cursor(after), valid_cursor(before)
    if lo is not None:
        qs = qs.filter(sequence_number__gt=lo)
    if hi is not None:
        qs = qs.filter(sequence_number__lt=hi)
    return qs.order_by("sequence_number")


def event_list(
    *,
    session_id: uuid.UUID,
    after: int | None = None,
    before: int | None = None,
    limit: int | None = None,
    types: str | Iterable[str] | None = None,
    run_id: uuid.UUID | None = None,
    since: datetime | None = None,
) -> list[Event]:
    qs = event_query(
        session_id=session_id, after=after, before=before, types=types, run_id=run_id, since=since
    )
    n = valid_limit(limit)
    return list(qs[:n] if n else qs)


def latest_sequence(*, session_id: uuid.UUID) -> int:
    """The session's highest assigned sequence number; 0 for no events or no such session."""
    found = Session.objects.filter(id=session_id).values_list("last_sequence", flat=True).first()
    return int(found or 0)


def events_follow(
    *,
    session_id: uuid.UUID,
    after: int = 0,
    limit: int = 100,
    poll_interval_s: float = 0.25,
    types: str | Iterable[str] | None = None,
    run_id: uuid.UUID | None = None,
) -> Iterator[Event]:
    """Endless follower (spec 5.8): yield events after `after` as they are appended.

    Pages of `limit`; when a page is empty it sleeps `poll_interval_s` and asks again. It
    never ends by itself; resume after a disconnect by passing the last sequence seen.
    """
    cursor = after
    while True:
        page = event_list(
            session_id=session_id, after=cursor, limit=limit, types=types, run_id=run_id
        )
        if not page:
            time.sleep(poll_interval_s)
            continue
        yield from page
        cursor = max(cursor, page[-1].sequence_number)
