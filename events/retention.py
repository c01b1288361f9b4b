"""The event store's retention write: `event_prune_range`, the one delete path of the log.

The log is append-only except for this: retention (`runs.retention`, which decides WHAT to
prune and audits it) replaces a contiguous range a..b of a finished run's `message_streamed`
chunks by ONE `events_pruned` marker. Invariants:

- Atomic: the chunks' rows are deleted and the marker inserted in one transaction; a
  reader sees either all the chunks or the marker, never neither.
- The marker takes the range's LAST number b (the chunk at b is deleted first, so the unique
  (session, sequence_number) constraint holds), a new event id, the run's id and the
  timestamp and provider of the chunk at b. A reader whose `after` cursor lies anywhere
  before b (also inside the range) therefore gets the marker, in ascending order, with
  plain strict `after` semantics.
- `Session.last_sequence` is never touched: numbers are never reused (the next append
  gets latest + 1 as always).
- Guarded: the range must be exactly b - a + 1 `message_streamed` rows of that run; any
  other state (already pruned by a concurrent pruner, a foreign event in the range) changes
  nothing and returns None. The rows are locked by the DELETE, so two pruners of one range
  serialize and the second finds nothing to do.
- The marker is not published to live subscribers: it is not a new head event (its number
  is in the past), and live feeds only forward numbers above their cursor.

Locking precondition: none; the caller must not hold a transaction that also appends to the
session (the marker does not take the session's counter lock; it needs none, because it
allocates no number).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from asm_core.event_types import EventType, validate_event
from asm_core.store import prune_range_check
from events.models import Event

_STREAMED = EventType.MESSAGE_STREAMED.value
_PRUNED = EventType.EVENTS_PRUNED.value


class _Refused(Exception):
    """The range is not (or no longer) exactly the run's chunks: roll back, change nothing."""


def event_prune_range(
    *,
    session_id: uuid.UUID,
    run_id: uuid.UUID,
    from_sequence: int,
    to_sequence: int,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> Event | None:
    """Replace chunks `from_sequence..to_sequence` of `run_id` by one `events_pruned` event
    at `to_sequence`; the stored marker, or None when the range is not all such chunks."""
    prune_range_check(run_id, from_sequence, to_sequence)
    payload = dict(validate_event(_PRUNED, data))
    size = to_sequence - from_sequence + 1
    in_range = Event.objects.filter(
        session_id=session_id, sequence_number__gte=from_sequence, sequence_number__lte=to_sequence
    )
    try:
        with transaction.atomic():
            last = (
                in_range.filter(sequence_number=to_sequence, run_id=run_id, type=_STREAMED)
                .only("timestamp", "provider")
                .first()
            )
            if last is None:
                raise _Refused
            deleted, _ = in_range.filter(run_id=run_id, type=_STREAMED).delete()
            if deleted != size or in_range.exists():
                raise _Refused  # a foreign event in the range, or already (partly) pruned
            return Event.objects.create(
                id=uuid.uuid4(),
                session_id=session_id,
                run_id=run_id,
                sequence_number=to_sequence,
                type=_PRUNED,
                data=payload,
                metadata=dict(metadata),
                provider=last.provider,
                timestamp=last.timestamp,
            )
    except _Refused:
        return None
