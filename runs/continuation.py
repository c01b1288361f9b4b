"""Continuation: the prior conversation a run hands its provider, and transcript compaction.

Plain Python over the `SessionStore` port (no Django): the executor calls
`continuation_for_run` while preparing a run; `sessions.compaction` (the API's compaction)
uses the same `compaction_plan`.

Invariants:

- ``options.continuation`` off (the default): no transcript. On (``true``, or
  ``{"max_messages": N}``; ``options.continuation_opts.max_messages`` also counts): the
  transcript of the session's PRIOR history goes to ``session_context["transcript"]`` as
  message dicts (``runs.transcript``'s shape). Prior: read before the run's own
  ``message_sent`` events are written, and never any event of the run itself (a retried
  attempt does not replay its first attempt's partial output as history).
- The transcript starts from the latest ``session_compacted`` event: one ``system`` message
  holding its summary (``metadata.compaction`` names the range), then the messages of the
  events after its ``to_sequence``. ``max_messages`` keeps the newest N of those (the
  summary is always kept).
- Compaction covers ``from_sequence..to_sequence`` (inclusive) of the log: from its start
  (1), up to a message boundary; it never splits a tool call from its result, nor a
  streamed message. A new compaction covers everything its predecessor did (same
  ``from_sequence``; its summary carries the previous one) and ends later than it, so only
  the latest one matters. The log stays append-only: compaction only adds an event.
- The summary is extractive and deterministic (message counts, the tools used, the user's
  requests, the last assistant reply; at most ``SUMMARY_MAX_CHARS``) unless the caller
  provides one; no provider is called.
- Automatic compaction: when the transcript is larger than ``max_chars`` characters
  (``ASM_TRANSCRIPT_MAX_CHARS``; 0 disables) at run start, a ``session_compacted`` event
  (``reason: "auto"``) is written first, keeping the newest messages that fit in half of
  ``max_chars`` verbatim.
- Reads: one query for the compactions (type filter) and one for the message events after
  the latest one (type filter), both through the port.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from asm_core.records import EventRecord, NewEvent, RunRecord
from asm_core.store import SessionStore
from runs.transcript import (
    TRANSCRIPT_EVENT_TYPES,
    EventLike,
    Transcript,
    message_chars,
    transcript_build,
)

__all__ = [
    "SUMMARY_MAX_CHARS",
    "CompactionPlan",
    "ContinuationOptions",
    "compaction_event",
    "compaction_plan",
    "continuation_events",
    "continuation_for_run",
    "continuation_options",
    "continuation_transcript",
    "transcript_chars",
]

_COMPACTED = EventType.SESSION_COMPACTED.value
#: The longest summary compaction writes (characters).
SUMMARY_MAX_CHARS = 8000
_USER_REQUESTS = 20
_USER_REQUEST_CHARS = 300
_LAST_REPLY_CHARS = 1500
_MAX_MESSAGES_LIMIT = 100_000


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ContinuationOptions:
    enabled: bool = False
    max_messages: int | None = None


def _invalid(field: str, message: str) -> AsmError:
    return AsmError(ErrorCode.VALIDATION_ERROR, f"{field} {message}", {"field": field})


def _max_messages(value: object, field: str) -> int | None:
    if value is None:
        return None
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 1 <= value <= _MAX_MESSAGES_LIMIT
    ):
        raise _invalid(field, f"must be an integer from 1 to {_MAX_MESSAGES_LIMIT}")
    return value


def _object(value: object, field: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(field, "must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Unsupported {field} key(s): {', '.join(map(str, unknown))}",
            {"field": field, "unsupported": unknown, "supported": sorted(allowed)},
        )
    return value


def continuation_options(options: Mapping[str, Any] | None) -> ContinuationOptions:
    """``options.continuation`` (bool, or ``{"enabled"?, "max_messages"?}``) and
    ``options.continuation_opts`` (``{"max_messages"}``), validated (``validation_error``)."""
    opts = options or {}
    raw = opts.get("continuation")
    extra = opts.get("continuation_opts")
    max_messages: int | None = None
    if extra is not None:
        extra = _object(extra, "options.continuation_opts", frozenset({"max_messages"}))
        max_messages = _max_messages(
            extra.get("max_messages"), "options.continuation_opts.max_messages"
        )
    if raw is None or raw is False:
        return ContinuationOptions(False, max_messages)
    if raw is True:
        return ContinuationOptions(True, max_messages)
    if isinstance(raw, Mapping):
        raw = _object(raw, "options.continuation", frozenset({"enabled", "max_messages"}))
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _invalid("options.continuation.enabled", "must be a boolean")
        own = _max_messages(raw.get("max_messages"), "options.continuation.max_messages")
        return ContinuationOptions(enabled, own if own is not None else max_messages)
    raise _invalid("options.continuation", "must be a boolean or an object")


# --------------------------------------------------------------------------- transcript


def _seq(e: EventLike) -> int | None:
    value = e.get("sequence_number") if isinstance(e, Mapping) else e.sequence_number
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _type(e: EventLike) -> str:
    return str(e.get("type") if isinstance(e, Mapping) else e.type)


def _data(e: EventLike) -> Mapping[str, Any]:
    data = e.get("data") if isinstance(e, Mapping) else e.data
    return data if isinstance(data, Mapping) else {}


def _run_id(e: EventLike) -> Any:
    return e.get("run_id") if isinstance(e, Mapping) else e.run_id


def _latest_compaction(events: Sequence[EventLike]) -> EventLike | None:
    latest: EventLike | None = None
    for e in events:
        if _type(e) == _COMPACTED and (latest is None or (_seq(e) or 0) >= (_seq(latest) or 0)):
            latest = e
    return latest


def _summary_message(compaction: EventLike) -> dict[str, Any]:
    data = _data(compaction)
    meta: dict[str, Any] = {
        "compaction": {
            "from_sequence": data.get("from_sequence"),
            "to_sequence": data.get("to_sequence"),
        }
    }
    event_id = compaction.get("id") if isinstance(compaction, Mapping) else compaction.id
    if event_id is not None:
        meta["event_id"] = str(event_id)
    seq = _seq(compaction)
    if seq is not None:
        meta["sequence_number"] = seq
    return {
        "role": "system",
        "content": str(data.get("summary") or ""),
        "tool_call_id": None,
        "tool_name": None,
        "tool_input": None,
        "tool_output": None,
        "metadata": meta,
    }


def _history(
    events: Sequence[EventLike],
    session_id: str | uuid.UUID | None,
    exclude_run_id: uuid.UUID | None,
    before: int | None = None,
) -> tuple[EventLike | None, Transcript]:
    """The latest compaction and the transcript of the events after it."""
    latest = _latest_compaction(events)
    after = _data(latest).get("to_sequence") if latest is not None else None
    cut = after if isinstance(after, int) and not isinstance(after, bool) else None
    exclude = None if exclude_run_id is None else str(exclude_run_id)
    kept = [
        e
        for e in events
        if _type(e) != _COMPACTED
        and (cut is None or (s := _seq(e)) is None or s > cut)
        and (before is None or (s := _seq(e)) is None or s < before)
        and (exclude is None or str(_run_id(e)) != exclude)
    ]
    sid = session_id
    if sid is None and events:
        first = events[0]
        sid = first.get("session_id") if isinstance(first, Mapping) else first.session_id
    return latest, transcript_build(kept, session_id=sid)


def continuation_transcript(
    events: Sequence[EventLike],
    *,
    session_id: str | uuid.UUID | None = None,
    exclude_run_id: uuid.UUID | None = None,
    max_messages: int | None = None,
) -> Transcript:
    """The continuation transcript of ``events`` (pure): the latest compaction's summary as a
    ``system`` message, then the messages after it (the newest ``max_messages`` of them)."""
    latest, transcript = _history(events, session_id, exclude_run_id)
    messages, starts = transcript.messages, transcript.starts
    if max_messages is not None and max_messages > 0 and len(messages) > max_messages:
        messages, starts = messages[-max_messages:], starts[-max_messages:]
    if latest is not None:
        messages = (_summary_message(latest), *messages)
        starts = (_seq(latest), *starts)
    return Transcript(
        session_id=transcript.session_id,
        messages=messages,
        last_sequence=transcript.last_sequence,
        last_timestamp=transcript.last_timestamp,
        starts=starts,
        pending=transcript.pending,
        unconfirmed=transcript.unconfirmed,
    )


def transcript_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """The transcript's size in characters (what ``ASM_TRANSCRIPT_MAX_CHARS`` limits)."""
    return sum(message_chars(m) for m in messages)


def continuation_events(store: SessionStore, session_id: uuid.UUID) -> list[EventRecord]:
    """What continuation and compaction read: the latest compaction event (if any), then the
    message-making events after the sequence it covers."""
    compactions = store.event_list(session_id, types=_COMPACTED)
    latest = compactions[-1] if compactions else None
    after = latest.data.get("to_sequence") if latest is not None else None
    found = store.event_list(
        session_id,
        after=after if isinstance(after, int) and not isinstance(after, bool) else None,
        types=TRANSCRIPT_EVENT_TYPES,
    )
    return [latest, *found] if latest is not None else found


# --------------------------------------------------------------------------- compaction


@dataclass(frozen=True)
class CompactionPlan:
    """What a ``session_compacted`` event will say (see ``compaction_event``)."""

    from_sequence: int
    to_sequence: int
    summary: str
    messages_compacted: int
    messages_kept: int
    method: str  # "extractive" | "provided"


def _tool_pairs(messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(call index, result index) of every tool call whose result is in ``messages``: by
    ``tool_call_id``, else (a result without an id) the oldest open call of that tool."""
    by_id: dict[str, int] = {}
    by_name: dict[Any, deque[int]] = {}
    done: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        call_id, name = m.get("tool_call_id"), m.get("tool_name")
        if m.get("role") == "assistant" and m.get("content") is None and name is not None:
            if call_id:
                by_id[str(call_id)] = i
            by_name.setdefault(name, deque()).append(i)
        elif m.get("role") == "tool":
            call: int | None = None
            if call_id:
                found = by_id.pop(str(call_id), None)
                call = found if found is not None and found not in done else None
            else:
                waiting = by_name.get(name)
                while waiting and waiting[0] in done:
                    waiting.popleft()
                call = waiting.popleft() if waiting else None
            if call is not None:
                done.add(call)
                pairs.append((call, i))
    return pairs


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _extractive_summary(
    messages: Sequence[Mapping[str, Any]],
    previous: str | None,
    from_sequence: int,
    to_sequence: int,
    max_chars: int,
) -> str:
    roles = {"user": 0, "assistant": 0, "tool_calls": 0}
    tools: dict[str, int] = {}
    requests: list[str] = []
    last_reply = ""
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role == "assistant" and content is None:
            roles["tool_calls"] += 1
            name = str(m.get("tool_name") or "unknown")
            tools[name] = tools.get(name, 0) + 1
        elif role == "user" and content:
            roles["user"] += 1
            requests.append(str(content))
        elif role == "assistant" and content:
            roles["assistant"] += 1
            last_reply = str(content)
    head = (
        f"Summary of the earlier conversation (events {from_sequence}-{to_sequence}, "
        f"compacted): {roles['user']} user message(s), {roles['assistant']} assistant "
        f"message(s), {roles['tool_calls']} tool call(s)."
    )
    parts = [head]
    if tools:
        used = ", ".join(f"{n} x{c}" for n, c in sorted(tools.items()))
        parts.append(f"Tools used: {used}.")
    if requests:
        shown = requests[-_USER_REQUESTS:]
        skipped = len(requests) - len(shown)
        lines = [f"- {_clip(r, _USER_REQUEST_CHARS)}" for r in shown]
        more = f" (the last {len(shown)} of {len(requests)})" if skipped else ""
        parts.append(f"User requests{more}:\n" + "\n".join(lines))
    if last_reply:
        parts.append("Last assistant reply:\n" + _clip(last_reply, _LAST_REPLY_CHARS))
    body = "\n\n".join(parts)
    if previous:
        room = max_chars - len(body) - 40
        if room > 200:
            earlier = previous if len(previous) <= room else "\u2026" + previous[-(room - 1) :]
            body = f"{head}\n\nEarlier summary:\n{earlier}\n\n" + "\n\n".join(parts[1:])
    return body if len(body) <= max_chars else body[: max_chars - 1] + "\u2026"


def compaction_plan(
    events: Sequence[EventLike],
    *,
    keep_messages: int | None = None,
    keep_chars: int | None = None,
    summary: str | None = None,
    exclude_run_id: uuid.UUID | None = None,
    before: int | None = None,
    summary_max_chars: int = SUMMARY_MAX_CHARS,
    session_id: str | uuid.UUID | None = None,
) -> CompactionPlan | None:
    """What to compact, or None when nothing (more) can be (pure).

    ``events``: the session's events from its latest compaction on (``continuation_events``)
    or all of them. Keeps the newest ``keep_messages`` messages, or the newest that fit in
    ``keep_chars`` characters, verbatim (then moves the cut earlier so that no tool call is
    compacted while its result is kept); ``before``: events from that sequence on (a running
    run's) are neither compacted nor counted. ``summary``: the caller's text instead of the
    extractive summary.
    """
    if not events:
        return None
    latest, transcript = _history(events, session_id, exclude_run_id, before)
    messages, starts = transcript.messages, transcript.starts
    if keep_messages is not None:
        cut = max(0, len(messages) - max(0, keep_messages))
    else:
        budget, cut = max(0, keep_chars or 0), len(messages)
        while cut > 0 and message_chars(messages[cut - 1]) <= budget:
            budget -= message_chars(messages[cut - 1])
            cut -= 1
    moved = True
    while moved:  # never keep a tool result whose call would be compacted
        moved = False
        for call, result in _tool_pairs(messages):
            if call < cut <= result:
                cut, moved = call, True
    if cut <= 0:
        return None
    if cut < len(messages):
        start = starts[cut]
        if start is None:
            return None
        to_sequence = start - 1
    else:
        if transcript.last_sequence is None:
            return None
        to_sequence = transcript.last_sequence
    previous = _data(latest) if latest is not None else {}
    prev_to = previous.get("to_sequence")
    if isinstance(prev_to, int) and to_sequence <= prev_to:
        return None
    prev_from = previous.get("from_sequence")
    from_sequence = prev_from if isinstance(prev_from, int) else 1  # the log's start
    from_sequence = max(0, min(from_sequence, to_sequence))
    text = (summary or "").strip()
    method = "provided" if text else "extractive"
    if not text:
        text = _extractive_summary(
            messages[:cut],
            str(previous.get("summary") or "") or None,
            from_sequence,
            to_sequence,
            summary_max_chars,
        )
    return CompactionPlan(
        from_sequence=from_sequence,
        to_sequence=to_sequence,
        summary=text,
        messages_compacted=cut,
        messages_kept=len(messages) - cut,
        method=method,
    )


def compaction_event(
    plan: CompactionPlan, *, reason: str, metadata: Mapping[str, Any] | None = None
) -> NewEvent:
    """The ``session_compacted`` event of ``plan`` (session-level: no run)."""
    return NewEvent(
        type=_COMPACTED,
        data={
            "summary": plan.summary,
            "from_sequence": plan.from_sequence,
            "to_sequence": plan.to_sequence,
            "messages_compacted": plan.messages_compacted,
            "messages_kept": plan.messages_kept,
            "method": plan.method,
            "reason": reason,
        },
        metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------- the executor's hook


def continuation_for_run(
    store: SessionStore, run: RunRecord, *, max_chars: int = 0
) -> list[dict[str, Any]] | None:
    """The transcript a run's provider gets (None: continuation is off); compacts first when
    it is larger than ``max_chars`` (> 0). Call before the run's own events are written."""
    opts = continuation_options(run.options)
    if not opts.enabled:
        return None
    events = continuation_events(store, run.session_id)

    def build() -> Transcript:
        return continuation_transcript(
            events,
            session_id=run.session_id,
            exclude_run_id=run.id,
            max_messages=opts.max_messages,
        )

    transcript = build()
    if max_chars > 0 and transcript_chars(transcript.messages) > max_chars:
        plan = compaction_plan(
            events, keep_chars=max_chars // 2, exclude_run_id=run.id, session_id=run.session_id
        )
        if plan is not None:
            stored = store.event_append(
                run.session_id,
                compaction_event(
                    plan, reason="auto", metadata={"actor": "system", "run_id": str(run.id)}
                ),
            )
            events = [stored, *(e for e in events if (_seq(e) or 0) > plan.to_sequence)]
            transcript = build()
    return [dict(m) for m in transcript.messages]
