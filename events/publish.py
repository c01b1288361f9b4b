"""The doorbell: after commit, stored events are group-sent to their session's group.

Invariants:
- Nothing is published before the transaction that stored it commits
  (`transaction.on_commit`); a rolled-back append rings no bell.
- The database is the truth and this is only a doorbell: a lost, late, duplicated or
  reordered message is harmless, because subscribers drop what they already sent and
  backfill any gap from the database (`events.selectors.event_list`).
- The append hot path never waits on the channel layer: on commit the events are handed
  to one publisher thread per process, which sends whatever has queued up within 2 ms as
  one message per session, in the order the events were committed in this process. Events in one
  message are ascending per session except across processes, which subscribers handle.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from events.models import Event

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "events.appended"
COALESCE_S = 0.002  # longest an event waits for others to share its doorbell message


def session_group(session_id: uuid.UUID) -> str:
    """The channel-layer group of a session's subscribers."""
    return f"session.{session_id.hex}"


def event_json(event: Event) -> dict[str, Any]:
    """The public JSON form of an event (API, WebSocket, SSE and the doorbell alike)."""
    return {
        "id": str(event.id),
        "session_id": str(event.session_id),
        "run_id": str(event.run_id) if event.run_id else None,
        "sequence_number": event.sequence_number,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "provider": event.provider,
        "timestamp": event.timestamp.isoformat(),
    }


class _Publisher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[uuid.UUID, list[dict[str, Any]]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, session_id: uuid.UUID, events: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="asm-event-publisher", daemon=True
                )
                self._thread.start()
        self._queue.put((session_id, events))

    def _run(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        # One event loop for the life of this thread (async_to_sync would set one up per call).
        loop = asyncio.new_event_loop()

        while True:
            # Take everything queued: one message per session per round, so a burst of small
            # appends costs one layer call per session, not one per append.
            # Waiting COALESCE_S after the first item lets a stream of appends (one per
            # streamed chunk flush, or a busy worker's many sessions) share a layer call.
            # Sleeping (rather than waiting on the queue with a timeout) means a burst wakes
            # this thread once, not once per append: each wake would take the GIL from the
            # appending threads.
            pending: dict[uuid.UUID, list[dict[str, Any]]] = {}
            item = self._queue.get()
            time.sleep(COALESCE_S)
            while True:
                pending.setdefault(item[0], []).extend(item[1])
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if layer is None:
                continue
            for session_id, events in pending.items():
                try:
                    publish = layer.group_send(
                        session_group(session_id),
                        {
                            "type": MESSAGE_TYPE,
                            "session_id": str(session_id),
                            "events": events,
                            "last_sequence": max(e["sequence_number"] for e in events),
                        },
                    )
                    loop.run_until_complete(publish)
                except Exception:  # only a doorbell: subscribers backfill from the DB
                    logger.warning(
                        "could not publish events of session %s", session_id, exc_info=True
                    )


_publisher = _Publisher()


def events_publish(session_id: uuid.UUID, events: Sequence[dict[str, Any]]) -> None:
    """Publish stored events (in their `event_json` form) to the session's subscribers once
    the transaction commits. The append path builds that form anyway (it is also what it
    sends to PostgreSQL), so the publisher thread only rings."""
    if not events:
        return
    stored = list(events)
    transaction.on_commit(lambda: _publisher.submit(session_id, stored))
