"""Claude's message format as the CLIs stream it: what the ``claude_code`` and ``amp``
parsers share (and the tool-call payload naming the ``claude`` SDK adapter uses too).

Plain Python (no Django); only ``asm_core`` and ``runs.providers``. Amp's ``--stream-json``
follows Claude Code's ``stream-json``: ``assistant`` and ``user`` lines carry one API
message (content blocks ``text`` / ``tool_use`` / ``tool_result``, ``usage``), a ``result``
line ends the run. This module is the block-level normalization of that format; each
parser keeps its own line handling (Claude Code: partial messages, synthetic error lines,
``api_error_status``; Amp: the error in ``error``, thread ids).

Invariants:

- Usage has the four ``USAGE_KEYS``; a count that is not a finite non-negative number is 0
  (a ``bool`` too), a float is truncated.
- ``UsageMeter``: for a message id, only the increment over what that id already counted is
  emitted (a message reported twice, or cumulatively, is never double counted; a count
  never goes back); ``settle`` emits what a final total still exceeds. An all-zero
  increment is never emitted, and the emitted ``token_usage_updated`` payloads always add
  up to ``total``.
- ``ToolCalls``: a ``tool_result`` is matched to the call its ``tool_use_id`` started (its
  name and input come from there); a result for a call never seen is still reported, as
  tool ``"unknown"`` with input ``{}``. A failed result is ``tool_call_failed`` with
  ``is_error: true`` and ``error`` = its text, or ``"tool failed"`` when it has none.
- Tool payloads carry the canonical keys (``tool_call_id``, ``tool_name``, ``tool_input``,
  ``tool_output`` once finished) plus Claude's own names as aliases: ``tool_use_id``
  always, ``input`` on a started call (``tool_payload``). ``tool_input`` is always a copy,
  never the caller's dict. What else a parser adds (its ``content`` alias, parent ids,
  ``is_error`` on success) is its own.
- ``ToolCalls.calls`` lists every call in the order seen (a call started twice under one
  id twice); ``latest()`` has one per id, the last one started, at the id's first place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asm_core.event_types import EventType
from runs.providers.base import Emit

__all__ = [
    "USAGE_KEYS",
    "ToolCall",
    "ToolCalls",
    "UsageMeter",
    "count",
    "text_blocks",
    "tool_payload",
    "tool_result_blocks",
    "usage_counts",
    "zero_usage",
]

USAGE_KEYS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


# --------------------------------------------------------------------------- usage


def count(value: object) -> int:
    """``value`` as a token count: a finite number >= 0 (floats truncated), else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return 0


def usage_counts(raw: object) -> dict[str, int]:
    """A ``usage`` object as the four ``USAGE_KEYS`` counts (missing or bad -> 0)."""
    data = raw if isinstance(raw, Mapping) else {}
    return {key: count(data.get(key)) for key in USAGE_KEYS}


def zero_usage() -> dict[str, int]:
    return dict.fromkeys(USAGE_KEYS, 0)


class UsageMeter:
    """Emits ``token_usage_updated`` increments and keeps their sum (module docstring)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        #: The sum of the increments emitted so far (updated in place).
        self.total: dict[str, int] = zero_usage()
        self._by_message: dict[str, dict[str, int]] = {}

    def message(self, message_id: str | None, usage: Mapping[str, int]) -> None:
        """Emit the increment of ``usage`` over what ``message_id`` already counted
        (no id: all of ``usage``)."""
        if not message_id:
            self.add(usage)
            return
        seen = self._by_message.get(message_id, zero_usage())
        increment = {k: max(usage[k] - seen[k], 0) for k in USAGE_KEYS}
        self._by_message[message_id] = {k: max(usage[k], seen[k]) for k in USAGE_KEYS}
        self.add(increment)

    def settle(self, final: Mapping[str, int]) -> None:
        """Emit what ``final`` (the CLI's own sum over the run) still exceeds ``total`` by."""
        self.add({k: max(final[k] - self.total[k], 0) for k in USAGE_KEYS})

    def add(self, increment: Mapping[str, int]) -> None:
        """Emit ``increment`` (unless it is all zero) and add it to ``total``."""
        if not any(increment[k] for k in USAGE_KEYS):
            return
        for key in USAGE_KEYS:
            self.total[key] += increment[key]
        self._emit(EventType.TOKEN_USAGE_UPDATED.value, {k: increment[k] for k in USAGE_KEYS})


# --------------------------------------------------------------------------- blocks


def text_blocks(content: object) -> list[str]:
    """The text of each ``text`` block of a content list, in order (a block whose ``text``
    is not a string is skipped; content that is not a list has none)."""
    if not isinstance(content, list):
        return []
    return [
        block["text"]
        for block in content
        if isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]


def tool_result_blocks(line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``tool_result`` blocks of a ``user`` line's message, in order."""
    message = line.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, Mapping) and b.get("type") == "tool_result"]


# --------------------------------------------------------------------------- tool calls


def tool_payload(
    call_id: str, name: str, tool_input: Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    """A ``tool_call_*`` payload: canonical keys plus the aliases ``tool_use_id`` and
    ``input`` (Claude's names), then ``extra``."""
    return {
        "tool_call_id": call_id,
        "tool_name": name,
        "tool_input": dict(tool_input),
        "tool_use_id": call_id,
        "input": dict(tool_input),
        **extra,
    }


@dataclass
class ToolCall:
    """One tool call of a run; ``is_error`` is None until its result arrived."""

    id: str
    name: str
    input: dict[str, Any]
    output: Any = None
    is_error: bool | None = None


class ToolCalls:
    """The run's tool calls: each started one remembered by id until its result arrives."""

    def __init__(self) -> None:
        #: Every call in the order seen (a call started again under the same id twice).
        self.calls: list[ToolCall] = []
        self._by_id: dict[str, ToolCall] = {}

    def latest(self) -> list[ToolCall]:
        """One call per id (the last one started under it), in the order ids were seen."""
        return list({call.id: call for call in self.calls}.values())

    def start(self, call_id: str, name: str, tool_input: Mapping[str, Any]) -> dict[str, Any]:
        """Remember the call; returns its ``tool_call_started`` payload."""
        call = ToolCall(call_id, name, dict(tool_input))
        self._remember(call)
        return tool_payload(call_id, name, call.input)

    def finish(self, call_id: str, output: str, *, is_error: bool) -> tuple[str, dict[str, Any]]:
        """Record the result of ``call_id`` (module docstring); returns the event type
        (``tool_call_completed`` / ``tool_call_failed``) and its payload (canonical keys and
        ``tool_use_id``; the parser adds its own ``content`` alias)."""
        call = self._by_id.get(call_id)
        if call is None:  # a result for a call never seen: still reported
            call = ToolCall(call_id, "unknown", {})
            self._remember(call)
        call.output = output
        call.is_error = is_error
        data: dict[str, Any] = {
            "tool_call_id": call_id,
            "tool_name": call.name,
            "tool_input": dict(call.input),
            "tool_output": output,
            "tool_use_id": call_id,
        }
        if not is_error:
            return EventType.TOOL_CALL_COMPLETED.value, data
        data["is_error"] = True
        data["error"] = output or "tool failed"
        return EventType.TOOL_CALL_FAILED.value, data

    def _remember(self, call: ToolCall) -> None:
        self.calls.append(call)
        self._by_id[call.id] = call
