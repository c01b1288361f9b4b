"""The transcript builder: a session's conversation rebuilt from its stored events (spec 6.1-6.3).

Pure: a function of the events it is given (the `*_from_store` variants read through the
`SessionStore` port passed in); no Django, no clock, no I/O of its own. Used by continuation
(`runs.continuation`), compaction and fork, and by anyone reading a session as a chat.

Invariants:

- A message always has the seven keys ``role`` (system|user|assistant|tool), ``content``
  (str or None), ``tool_call_id``, ``tool_name``, ``tool_input`` (a dict or None),
  ``tool_output`` and ``metadata`` (``{event_id, run_id, timestamp, sequence_number}``, None
  values left out, merged with the event's own metadata; ``timestamp`` as ISO 8601 text).
- Order (spec 6.2 rule 2): events with an integer ``sequence_number`` first, ascending; then
  the others by timestamp (none last), event id, input position. Sorting is stable and
  linear for input that is already in order (the store's).
- The event rules are spec 6.2's table: ``message_streamed`` chunks are buffered (one
  assistant message per stream), ``message_received``/``message_sent`` are messages (an
  assistant ``message_received`` closes the stream into ONE message), ``tool_call_started``
  is an assistant tool-call message, ``tool_call_completed``/``tool_call_failed`` a ``tool``
  message (``metadata.is_error`` true for a failure); any other type is ignored and keeps
  the buffer open.
- asm fix: a reply streamed before a tool call and confirmed by ``message_received`` after
  it (the claude adapter's order: text deltas, ``tool_call_started``, ``message_received``)
  is one message, not two.
- ``max_messages`` (a positive int; anything else is ignored) keeps the newest N messages.
- Incremental update (fixes the seed quirk): ``transcript_update(build(A), B)`` equals
  ``build(A + B)`` for every split, because the builder's open state (a stream not closed
  yet, its provisional message being the last one) travels with the transcript. Events whose
  integer sequence is <= the transcript's ``last_sequence`` are already in and are skipped.
- Linear cost: one pass after the sort; a stream's chunks are joined once, when it closes.
- Retention (``runs.retention``): an ``events_pruned`` marker for ``message_streamed``
  chunks carries what those chunks contributed (``data.stream``: the first non-empty
  chunk's sequence, their merged metadata, and their text when no later event carries the
  assembled text), and the builder applies it as if the chunks were there, so a session's
  transcript is the same before and after pruning. A stream whose text was all pruned
  (because its closing ``message_received`` carries it) has no provisional message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from asm_core.records import EventRecord
from asm_core.store import SessionStore

__all__ = [
    "MESSAGE_ROLES",
    "TRANSCRIPT_EVENT_TYPES",
    "EventLike",
    "PendingStream",
    "Transcript",
    "message_chars",
    "stream_chunk",
    "stream_closer",
    "transcript_build",
    "transcript_from_store",
    "transcript_update",
    "transcript_update_from_store",
]

MESSAGE_ROLES = ("system", "user", "assistant", "tool")

_STREAMED = EventType.MESSAGE_STREAMED.value
_RECEIVED = EventType.MESSAGE_RECEIVED.value
_SENT = EventType.MESSAGE_SENT.value
_TOOL_STARTED = EventType.TOOL_CALL_STARTED.value
_TOOL_COMPLETED = EventType.TOOL_CALL_COMPLETED.value
_TOOL_FAILED = EventType.TOOL_CALL_FAILED.value
_PRUNED = EventType.EVENTS_PRUNED.value

#: The event types that make messages (every other type is ignored by the builder).
TRANSCRIPT_EVENT_TYPES: frozenset[str] = frozenset(
    {_STREAMED, _RECEIVED, _SENT, _TOOL_STARTED, _TOOL_COMPLETED, _TOOL_FAILED}
)

_ROLES = frozenset(MESSAGE_ROLES)
_TOOL_ID_KEYS = ("tool_call_id", "tool_use_id", "call_id")
_TOOL_INPUT_KEYS = ("tool_input", "input", "arguments")
_TOOL_OUTPUT_KEYS = ("tool_output", "output", "content", "result")
_CHUNK_KEYS = ("delta", "content")
_STORE_QUERY_KEYS = ("run_id", "types", "since", "limit", "after", "before")


class _EventAttrs(Protocol):
    @property
    def id(self) -> Any: ...
    @property
    def session_id(self) -> Any: ...
    @property
    def run_id(self) -> Any: ...
    @property
    def sequence_number(self) -> Any: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...
    @property
    def timestamp(self) -> Any: ...


#: A stored event: an `EventRecord`, or a mapping with the same keys (all optional but
#: ``type``; a ``timestamp`` may be ISO 8601 text).
EventLike = EventRecord | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PendingStream:
    """A streamed message not closed yet: its text so far, its merged metadata and the
    sequence number of its first chunk. Its provisional message is the transcript's last."""

    text: str
    metadata: dict[str, Any]
    first_sequence: int | None


@dataclass(frozen=True)
class Transcript:
    """A session's conversation (spec 6.1). Treat ``messages`` as read-only.

    ``starts`` runs parallel to ``messages``: the sequence number of the first event of each
    message (a stream's first chunk), for cutting the transcript at a message boundary.
    ``pending`` and ``unconfirmed`` are the builder's open state, for incremental updates.
    """

    session_id: str
    messages: tuple[dict[str, Any], ...] = ()
    last_sequence: int | None = None
    last_timestamp: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    starts: tuple[int | None, ...] = ()
    pending: PendingStream | None = None
    unconfirmed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The spec's serialized transcript (JSON-ready; the open state is not included)."""
        return {
            "session_id": self.session_id,
            "messages": [dict(m) for m in self.messages],
            "last_sequence": self.last_sequence,
            "last_timestamp": None
            if self.last_timestamp is None
            else self.last_timestamp.isoformat(),
            "metadata": dict(self.metadata),
        }


# --------------------------------------------------------------------------- event access


class _Ev:
    """A mapping event seen through the `EventRecord` attribute names."""

    __slots__ = (
        "data",
        "id",
        "metadata",
        "run_id",
        "sequence_number",
        "session_id",
        "timestamp",
        "type",
    )

    def __init__(self, raw: Mapping[str, Any]) -> None:
        data = raw.get("data")
        meta = raw.get("metadata")
        self.id = raw.get("id")
        self.session_id = raw.get("session_id")
        self.run_id = raw.get("run_id")
        self.sequence_number = raw.get("sequence_number")
        self.type = str(raw.get("type") or "")
        self.data = data if isinstance(data, Mapping) else {}
        self.metadata = meta if isinstance(meta, Mapping) else {}
        self.timestamp = _timestamp(raw.get("timestamp"))


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _seq(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _events(events: Iterable[EventLike]) -> list[_EventAttrs]:
    return [_Ev(e) if isinstance(e, Mapping) else e for e in events]


def _ordered(events: list[_EventAttrs]) -> list[_EventAttrs]:
    """Spec 6.2 rule 2. Already-ordered sequenced input (the store's) is returned as is."""
    sequenced: list[_EventAttrs] = []
    loose: list[tuple[int, _EventAttrs]] = []
    in_order, previous = True, None
    for pos, e in enumerate(events):
        seq = _seq(e.sequence_number)
        if seq is None:
            loose.append((pos, e))
            continue
        if previous is not None and seq < previous:
            in_order = False
        previous = seq
        sequenced.append(e)
    if not in_order:
        sequenced.sort(key=lambda e: e.sequence_number)  # stable
    if not loose:
        return sequenced
    lowest = datetime.min.replace(tzinfo=UTC)

    def loose_key(item: tuple[int, _EventAttrs]) -> tuple[bool, datetime, str, int]:
        pos, e = item
        ts = _timestamp(e.timestamp)
        return (ts is None, ts or lowest, "" if e.id is None else str(e.id), pos)

    loose.sort(key=loose_key)
    return sequenced + [e for _, e in loose]


# --------------------------------------------------------------------------- values


def _first(data: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first value that is neither None nor False (the seed's ``a || b || c``)."""
    for key in keys:
        value = data.get(key)
        if value is not None and value is not False:
            return value
    return None


def _text(value: object) -> str | None:
    """Content as text: strings as they are, maps and lists as JSON, others printed."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _role(value: object, default: str) -> str:
    if isinstance(value, str):
        role = value.strip().lower()
        if role in _ROLES:
            return role
    return default


def _base_meta(e: _EventAttrs) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if e.id is not None:
        meta["event_id"] = str(e.id)
    if e.run_id is not None:
        meta["run_id"] = str(e.run_id)
    ts = e.timestamp
    if ts is not None:
        meta["timestamp"] = ts.isoformat() if isinstance(ts, datetime) else str(ts)
    seq = _seq(e.sequence_number)
    if seq is not None:
        meta["sequence_number"] = seq
    return meta


def _event_meta(e: _EventAttrs) -> dict[str, Any]:
    meta = _base_meta(e)
    if e.metadata:
        meta.update(e.metadata)
    return meta


def _message(
    role: str,
    content: str | None,
    metadata: dict[str, Any],
    *,
    tool_call_id: str | None = None,
    tool_name: str | None = None,
    tool_input: dict[str, Any] | None = None,
    tool_output: Any = None,
) -> dict[str, Any]:
    return {
        "role": role,
        "content": content,
        "tool_call_id": tool_call_id,
        "tool_name": tool_name,
        "tool_input": tool_input,
        "tool_output": tool_output,
        "metadata": metadata,
    }


def message_chars(message: Mapping[str, Any]) -> int:
    """A message's size in characters: its content plus its tool input and output as text."""
    size = len(message.get("content") or "")
    for key in ("tool_input", "tool_output"):
        value = message.get(key)
        if value is not None:
            size += len(_text(value) or "")
    return size


def _valid_max(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --------------------------------------------------------------------------- the walk


class _Builder:
    """One left-to-right walk over ordered events (the spec 6.2 state machine)."""

    def __init__(
        self,
        messages: list[dict[str, Any]],
        starts: list[int | None],
        pending: PendingStream | None,
        unconfirmed: Sequence[str],
    ) -> None:
        self.messages, self.starts = messages, starts
        self.unconfirmed = list(unconfirmed)
        # The open stream: its texts, its metadata merged so far (a restored stream), the
        # chunk events since, whether any of them has metadata, its first sequence.
        self.texts: list[str] | None = None
        self.prefix: dict[str, Any] | None = None
        self.chunks: list[_EventAttrs] = []
        self.chunk_meta = False
        self.first_seq: int | None = None
        if pending is not None:
            self.texts = [pending.text]
            self.prefix = dict(pending.metadata)
            self.first_seq = pending.first_sequence

    # -- the stream buffer
    def _stream_meta(self) -> dict[str, Any]:
        last = self.chunks[-1] if self.chunks else None
        if last is not None and not self.chunk_meta:
            base = _base_meta(last)
            if len(base) == 4:  # the last chunk overrides every key an earlier one set
                return {**self.prefix, **base} if self.prefix else base
        meta = dict(self.prefix or {})
        for chunk in self.chunks:
            meta.update(_base_meta(chunk))
            if chunk.metadata:
                meta.update(chunk.metadata)
        return meta

    def _close_stream(self) -> tuple[str, dict[str, Any], int | None] | None:
        if self.texts is None:
            return None
        closed = ("".join(self.texts), self._stream_meta(), self.first_seq)
        self.texts, self.prefix, self.chunks, self.chunk_meta = None, None, [], False
        self.first_seq = None
        return closed

    def _flush(self, *, unconfirmed: bool) -> None:
        closed = self._close_stream()
        if closed is None:
            return
        text, meta, start = closed
        if text:
            self._emit(_message("assistant", text, meta), start)
            if unconfirmed:
                self.unconfirmed.append(text)

    def _emit(self, message: dict[str, Any], start: int | None) -> None:
        self.messages.append(message)
        self.starts.append(start)

    # -- events
    def feed(self, e: _EventAttrs) -> None:
        kind = e.type
        if kind == _STREAMED:
            chunk = _text(_first(e.data, _CHUNK_KEYS))
            if not chunk:
                return
            if self.texts is None:
                self.texts, self.first_seq = [], _seq(e.sequence_number)
            self.texts.append(chunk)
            self.chunks.append(e)
            if e.metadata:
                self.chunk_meta = True
        elif kind == _RECEIVED:
            self._received(e)
        elif kind == _SENT:
            self._flush(unconfirmed=False)
            self.unconfirmed.clear()
            content = _text(e.data.get("content"))
            if content:
                role = _role(e.data.get("role"), "user")
                self._emit(_message(role, content, _event_meta(e)), _seq(e.sequence_number))
        elif kind == _TOOL_STARTED:
            self._flush(unconfirmed=True)
            data = e.data
            tool_input = _first(data, _TOOL_INPUT_KEYS)
            message = _message(
                "assistant",
                None,
                _event_meta(e),
                tool_call_id=_text(_first(data, _TOOL_ID_KEYS)),
                tool_name=_text(data.get("tool_name")),
                tool_input=dict(tool_input) if isinstance(tool_input, Mapping) else None,
            )
            self._emit(message, _seq(e.sequence_number))
        elif kind in (_TOOL_COMPLETED, _TOOL_FAILED):
            self._flush(unconfirmed=True)
            data = e.data
            meta = _event_meta(e)
            if kind == _TOOL_FAILED or data.get("is_error") is True:
                meta["is_error"] = True
            message = _message(
                "tool",
                None,
                meta,
                tool_call_id=_text(_first(data, _TOOL_ID_KEYS)),
                tool_name=_text(data.get("tool_name")),
                tool_output=_first(data, _TOOL_OUTPUT_KEYS),
            )
            self._emit(message, _seq(e.sequence_number))
        elif kind == _PRUNED:
            self._pruned(e.data)
        # any other type: ignored, the stream stays open

    def _pruned(self, data: Mapping[str, Any]) -> None:
        """Retention's marker: apply what the pruned chunks contributed (their text, when
        kept, and merged metadata), opening the stream as their first chunk did."""
        stream = data.get("stream")
        if data.get("pruned_type") != _STREAMED or not isinstance(stream, Mapping):
            return  # nothing the transcript used was pruned here
        if self.texts is None:
            self.texts, self.first_seq = [], _seq(stream.get("first_sequence"))
        meta = stream.get("metadata")
        if isinstance(meta, Mapping) and meta:
            self.prefix = {**self._stream_meta(), **meta}
            self.chunks, self.chunk_meta = [], False
        text = stream.get("text")
        if isinstance(text, str) and text:
            self.texts.append(text)

    def _received(self, e: _EventAttrs) -> None:
        role = _role(e.data.get("role"), "assistant")
        content = _text(e.data.get("content"))
        closed = self._close_stream() if role == "assistant" else None
        if closed is not None:
            text, meta, start = closed
            self._emit(_message("assistant", content or text, meta), start)
        elif (
            role == "assistant"
            and content
            and self.unconfirmed
            and content == "".join(self.unconfirmed)
        ):
            pass  # already in, streamed before a tool call flushed it (asm fix)
        else:
            self._flush(unconfirmed=False)
            if content:
                self._emit(_message(role, content, _event_meta(e)), _seq(e.sequence_number))
        self.unconfirmed.clear()

    def finish(self) -> tuple[PendingStream | None, tuple[str, ...]]:
        """Emit the open stream as a provisional message; return the open state."""
        pending: PendingStream | None = None
        if self.texts is not None:
            text, meta, start = "".join(self.texts), self._stream_meta(), self.first_seq
            pending = PendingStream(text=text, metadata=meta, first_sequence=start)
            if text:  # empty only when retention kept the text in the closing message
                self._emit(_message("assistant", text, dict(meta)), start)
        return pending, tuple(self.unconfirmed)


def _limited(transcript: Transcript, max_messages: object) -> Transcript:
    n = _valid_max(max_messages)
    if n is None or len(transcript.messages) <= n:
        return transcript
    return replace(transcript, messages=transcript.messages[-n:], starts=transcript.starts[-n:])


# --------------------------------------------------------------------------- retention


def stream_chunk(event: EventLike) -> tuple[str, dict[str, Any]] | None:
    """What a ``message_streamed`` event adds to its stream: its text and the metadata it
    merges into the stream's message; None for a chunk the builder ignores (empty)."""
    e = _events([event])[0]
    text = _text(_first(e.data, _CHUNK_KEYS))
    return (text, _event_meta(e)) if text else None


def stream_closer(event: EventLike) -> bool | None:
    """For an event that closes an open stream: whether the stream's text is used (False
    only for an assistant ``message_received`` with content, which replaces it); None for
    an event that leaves the stream open (chunks, retention markers, ignored types)."""
    e = _events([event])[0]
    if e.type == _RECEIVED:
        role = _role(e.data.get("role"), "assistant")
        return not (role == "assistant" and _text(e.data.get("content")))
    if e.type in (_SENT, _TOOL_STARTED, _TOOL_COMPLETED, _TOOL_FAILED):
        return True
    return None


# --------------------------------------------------------------------------- public API


def transcript_build(
    events: Iterable[EventLike],
    *,
    session_id: str | uuid.UUID | None = None,
    max_messages: int | None = None,
) -> Transcript:
    """The transcript of ``events`` (spec 6.2 ``from_events``).

    ``session_id``: else the first event's; neither -> ``validation_error``.
    """
    evs = _events(events)
    sid = session_id if session_id is not None else (evs[0].session_id if evs else None)
    if sid is None or str(sid) == "":
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "A session id is required to build a transcript",
            {"field": "session_id"},
        )
    ordered = _ordered(evs)
    builder = _Builder([], [], None, ())
    for e in ordered:
        builder.feed(e)
    pending, unconfirmed = builder.finish()
    seqs = [s for s in (_seq(e.sequence_number) for e in ordered) if s is not None]
    transcript = Transcript(
        session_id=str(sid),
        messages=tuple(builder.messages),
        last_sequence=max(seqs) if seqs else None,
        last_timestamp=_timestamp(ordered[-1].timestamp) if ordered else None,
        starts=tuple(builder.starts),
        pending=pending,
        unconfirmed=unconfirmed,
    )
    return _limited(transcript, max_messages)


def transcript_update(
    transcript: Transcript,
    events: Iterable[EventLike],
    *,
    max_messages: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Transcript:
    """``transcript`` with the messages of the newer ``events`` appended (spec 6.3's update,
    without its split-stream quirk: the result equals building from all the events)."""
    known = transcript.last_sequence
    evs = [
        e
        for e in _events(events)
        if known is None or (s := _seq(e.sequence_number)) is None or s > known
    ]
    if not evs:
        return _limited(transcript, max_messages)
    ordered = _ordered(evs)
    messages, starts = list(transcript.messages), list(transcript.starts)
    if transcript.pending is not None and transcript.pending.text and messages:
        messages.pop()  # the provisional message of the open stream: the stream goes on
        starts.pop()
    builder = _Builder(messages, starts, transcript.pending, transcript.unconfirmed)
    for e in ordered:
        builder.feed(e)
    pending, unconfirmed = builder.finish()
    seqs = [s for s in (_seq(e.sequence_number) for e in ordered) if s is not None]
    last_sequence = max([*seqs, *([known] if known is not None else [])]) if seqs else known
    last_ts = _timestamp(ordered[-1].timestamp)
    updated = Transcript(
        session_id=transcript.session_id,
        messages=tuple(builder.messages),
        last_sequence=last_sequence,
        last_timestamp=last_ts if last_ts is not None else transcript.last_timestamp,
        metadata={**transcript.metadata, **(metadata or {})},
        starts=tuple(builder.starts),
        pending=pending,
        unconfirmed=unconfirmed,
    )
    return _limited(updated, max_messages)


def _store_query(opts: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(opts) - set(_STORE_QUERY_KEYS)
    if unknown:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Unknown transcript option(s): {', '.join(sorted(unknown))}",
            {"field": "options", "unsupported": sorted(unknown)},
        )
    return {k: v for k, v in opts.items() if v is not None}


def transcript_from_store(
    store: SessionStore,
    session_id: uuid.UUID,
    *,
    max_messages: int | None = None,
    **query: Any,
) -> Transcript:
    """The session's transcript from the store (spec 6.3 ``from_store``).

    ``query``: the port's ``event_list`` filters (``run_id``, ``types``, ``since``,
    ``limit``, ``after``, ``before``); note ``limit`` keeps the OLDEST events while
    ``max_messages`` keeps the newest messages.
    """
    found = store.event_list(session_id, **_store_query(query))
    return transcript_build(found, session_id=session_id, max_messages=max_messages)


def transcript_update_from_store(
    store: SessionStore,
    transcript: Transcript,
    *,
    max_messages: int | None = None,
    **query: Any,
) -> Transcript:
    """``transcript`` brought up to date from the store (spec 6.3 ``update_from_store``).

    The cursor: ``after = last_sequence`` when it is an int >= 0; else ``since =
    last_timestamp`` (unless ``since`` is given); else none.
    """
    params = _store_query(query)
    if transcript.last_sequence is not None and transcript.last_sequence >= 0:
        params["after"] = transcript.last_sequence
    elif transcript.last_timestamp is not None:
        params.setdefault("since", transcript.last_timestamp)
    found = store.event_list(uuid.UUID(transcript.session_id), **params)
    return transcript_update(transcript, found, max_messages=max_messages)
