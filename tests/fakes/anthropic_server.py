"""Scripted fake of the Anthropic Messages API (streaming SSE), for real-client tests.

Speaks the wire format of provider-protocols.md section 1 so the real `anthropic` SDK and the
real Claude Code CLI can be pointed at it (`base_url=fake.url` / `ANTHROPIC_BASE_URL`)::

    with FakeAnthropic() as fake:
        fake.script(text_turn("hello"), tool_use_turn([tool_use_block("get", {"k": 1})]))
        client = anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=0)
        ...
        assert fake.message_requests[1].body["messages"][-1]["content"][0]["type"] == "tool_result"

Behaviour:
- Every request is recorded in `fake.requests` (`RecordedRequest`: method, path incl. query,
  lower-case headers, parsed JSON body). Any auth header, any `anthropic-version`, unknown
  roles/keys are accepted.
- Each `POST /v1/messages` (any query, e.g. `?beta=true`) consumes the next scripted turn, in
  order: a list of SSE events (`(event_type, data)` or `(event_type, data, delay_seconds)`), an
  `HttpError`, or a `HangTurn`. A request beyond the script gets HTTP 500 with an `api_error`
  body saying so. A request without `"stream": true` gets the turn's events folded into one JSON
  message (HTTP errors stay errors); a turn with an `error` event answers it with that error's
  body instead, as HTTP 529 for `overloaded_error`, else 500 (the Claude Code CLI retries a
  stream that broke off with `event: error` as one non-streaming request).
- Other endpoints do not consume turns: `POST /v1/messages/count_tokens` -> `{"input_tokens": n}`,
  `GET /v1/models` -> a one-model list, `HEAD` anything -> 200, anything else -> 404
  `not_found_error`.
- `message_start` events built by the helpers carry `model: None`, which is replaced at serve
  time by the request's `model`; message ids are `msg_fake_NN`, tool ids `toolu_fake_NN`.
- SSE frames are `event: <type>\\ndata: <json>\\n\\n`, chunked, flushed one by one, then the
  connection closes (the server machinery: tests/fakes/sse_server.py).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from tests.fakes.sse_server import HangTurn, HttpError, RecordedRequest, SseFake, SseHandler
from tests.fakes.sse_server import next_id as _next_id

__all__ = [
    "DEFAULT_USAGE",
    "FakeAnthropic",
    "HangTurn",
    "HttpError",
    "RecordedRequest",
    "SseEvent",
    "Turn",
    "error_event_turn",
    "hang_turn",
    "http_error",
    "message_turn",
    "redacted_thinking_block",
    "text_block",
    "text_turn",
    "thinking_block",
    "tool_use_block",
    "tool_use_turn",
]

SseEvent: TypeAlias = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], float]
"""One SSE frame: (event type, data) or (event type, data, delay in seconds before sending)."""

DEFAULT_USAGE: dict[str, int] = {
    "input_tokens": 25,
    "output_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}

Turn: TypeAlias = list[SseEvent] | HttpError | HangTurn[SseEvent]
"""What answers one `POST /v1/messages`."""


# --------------------------------------------------------------------------- content blocks
# A block is a list of SSE events *without* the index; message_turn numbers them.


def _split(text: str, chunks: int | Sequence[str] | None, default_parts: int) -> list[str]:
    if chunks is None:
        chunks = default_parts
    if isinstance(chunks, int):
        if not text:
            return []
        n = max(1, min(chunks, len(text)))
        size = -(-len(text) // n)
        return [text[i : i + size] for i in range(0, len(text), size)]
    pieces = list(chunks)
    if "".join(pieces) != text:
        raise ValueError(f"chunks {pieces!r} do not join to {text!r}")
    return pieces


@dataclass
class Block:
    """One content block: its `content_block_start` payload and its deltas."""

    start: dict[str, Any]
    deltas: list[dict[str, Any]]


def text_block(text: str, *, chunks: Sequence[str] | None = None) -> Block:
    """A text block; default chunks: one per word (with its trailing whitespace)."""
    pieces = list(chunks) if chunks is not None else re.findall(r"\s*\S+\s*", text) or [text]
    if "".join(pieces) != text:
        raise ValueError(f"chunks {pieces!r} do not join to {text!r}")
    return Block(
        {"type": "text", "text": ""},
        [{"type": "text_delta", "text": p} for p in pieces if p],
    )


def thinking_block(
    thinking: str, *, signature: str = "sig_fake", chunks: int | Sequence[str] | None = None
) -> Block:
    """A thinking block streamed as thinking_delta pieces (default 2) plus a signature_delta."""
    deltas: list[dict[str, Any]] = [
        {"type": "thinking_delta", "thinking": p} for p in _split(thinking, chunks, 2)
    ]
    deltas.append({"type": "signature_delta", "signature": signature})
    return Block({"type": "thinking", "thinking": "", "signature": ""}, deltas)


def redacted_thinking_block(data: str = "redacted_fake") -> Block:
    """A redacted_thinking block (no deltas)."""
    return Block({"type": "redacted_thinking", "data": data}, [])


def tool_use_block(
    name: str,
    input: dict[str, Any],
    *,
    id: str | None = None,
    chunks: int | Sequence[str] | None = None,
) -> Block:
    """A tool_use block whose JSON input arrives as input_json_delta pieces (default 3)."""
    raw = json.dumps(input)
    return Block(
        {"type": "tool_use", "id": id or _next_id("toolu"), "name": name, "input": {}},
        [{"type": "input_json_delta", "partial_json": p} for p in _split(raw, chunks, 3)],
    )


# --------------------------------------------------------------------------- turn builders


def _message_start(
    usage: dict[str, int], model: str | None, message_id: str | None
) -> dict[str, Any]:
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
    start_usage["output_tokens"] = 1
    return {
        "type": "message_start",
        "message": {
            "id": message_id or _next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,  # None -> the request's model, filled in when served
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        },
    }


def message_turn(
    blocks: Iterable[Block],
    *,
    stop_reason: str = "end_turn",
    usage: dict[str, int] | None = None,
    model: str | None = None,
    message_id: str | None = None,
    ping: bool = True,
    delay: float = 0.0,
) -> list[SseEvent]:
    """A full streamed message: message_start, (ping), blocks, message_delta, message_stop.

    `usage` (merged over DEFAULT_USAGE): message_start carries the input/cache counts with
    output_tokens 1; message_delta carries the final cumulative output_tokens. `delay` is
    waited before every event after message_start.
    """
    u = {**DEFAULT_USAGE, **(usage or {})}
    events: list[SseEvent] = [("message_start", _message_start(u, model, message_id))]
    if ping:
        events.append(("ping", {"type": "ping"}, delay))
    for index, block in enumerate(blocks):
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block.start},
                delay,
            )
        )
        events.extend(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": d},
                delay,
            )
            for d in block.deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}, delay))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": u["output_tokens"]},
            },
            delay,
        )
    )
    events.append(("message_stop", {"type": "message_stop"}, delay))
    return events


def text_turn(
    text: str = "hello",
    *,
    chunks: Sequence[str] | None = None,
    thinking: str | None = None,
    usage: dict[str, int] | None = None,
    stop_reason: str = "end_turn",
    model: str | None = None,
    message_id: str | None = None,
    delay: float = 0.0,
) -> list[SseEvent]:
    """A text reply (optionally preceded by a thinking block)."""
    blocks: list[Block] = []
    if thinking is not None:
        blocks.append(thinking_block(thinking))
    blocks.append(text_block(text, chunks=chunks))
    return message_turn(
        blocks,
        stop_reason=stop_reason,
        usage=usage,
        model=model,
        message_id=message_id,
        delay=delay,
    )


def tool_use_turn(
    tools: Sequence[Block | dict[str, Any]],
    *,
    text: str | None = None,
    thinking: str | None = None,
    usage: dict[str, int] | None = None,
    model: str | None = None,
    message_id: str | None = None,
    delay: float = 0.0,
) -> list[SseEvent]:
    """An assistant message asking for tools: [thinking] [text] tool_use... (stop: tool_use).

    Each tool is a `tool_use_block(...)` or a dict `{"name", "input", "id"?, "chunks"?}`.
    """
    blocks: list[Block] = []
    if thinking is not None:
        blocks.append(thinking_block(thinking))
    if text is not None:
        blocks.append(text_block(text))
    for tool in tools:
        if isinstance(tool, Block):
            blocks.append(tool)
        else:
            blocks.append(
                tool_use_block(
                    tool["name"],
                    tool.get("input", {}),
                    id=tool.get("id"),
                    chunks=tool.get("chunks"),
                )
            )
    return message_turn(
        blocks,
        stop_reason="tool_use",
        usage=usage,
        model=model,
        message_id=message_id,
        delay=delay,
    )


def error_event_turn(
    error_type: str = "overloaded_error",
    message: str | None = None,
    *,
    before: Sequence[SseEvent] | None = None,
) -> list[SseEvent]:
    """`before` (default: message_start + one text delta), then an `event: error` frame."""
    if before is None:
        start = _message_start(dict(DEFAULT_USAGE), None, None)
        before = [
            ("message_start", start),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Par"},
                },
            ),
        ]
    body = {"type": "error", "error": {"type": error_type, "message": message or error_type}}
    return [*before, ("error", body)]


_HTTP_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def http_error(
    status: int,
    error_type: str | None = None,
    message: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> HttpError:
    """An HTTP error turn with the real body shape, e.g. `http_error(429)`."""
    etype = error_type or _HTTP_ERROR_TYPES.get(status, "api_error")
    return HttpError(
        status,
        {
            "type": "error",
            "error": {"type": etype, "message": message or etype},
            "request_id": _next_id("req"),
        },
        dict(headers or {}),
    )


def hang_turn(
    *,
    before: Sequence[SseEvent] | None = None,
    after: Sequence[SseEvent] | None = None,
    release: threading.Event | None = None,
) -> HangTurn[SseEvent]:
    """A turn that sends `before` (default: message_start) and then stays silent (cancel tests)."""
    if before is None:
        before = [("message_start", _message_start(dict(DEFAULT_USAGE), None, None))]
    return HangTurn.of(before, after, release)


def _fold(events: Sequence[SseEvent], model: Any) -> dict[str, Any]:
    """Accumulate SSE events into the JSON of a non-streamed message (for `stream: false`)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for ev in events:
        data = ev[1]
        kind = data.get("type")
        if kind == "message_start":
            message = copy.deepcopy(data["message"])
            if message.get("model") is None:
                message["model"] = model
        elif kind == "content_block_start":
            message["content"].append(copy.deepcopy(data["content_block"]))
        elif kind == "content_block_delta":
            block = message["content"][data["index"]]
            d = data["delta"]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                block["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                block["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + d["partial_json"]
        elif kind == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data.get("usage") or {})
    return message


# --------------------------------------------------------------------------- server


def _error_event(events: Sequence[SseEvent]) -> dict[str, Any] | None:
    """The data of the turn's first `error` event, if it has one."""
    return next((ev[1] for ev in events if ev[0] == "error"), None)


_MODELS = {
    "data": [
        {
            "type": "model",
            "id": "claude-fake",
            "display_name": "Claude Fake",
            "created_at": "2026-01-01T00:00:00Z",
        }
    ],
    "has_more": False,
    "first_id": "claude-fake",
    "last_id": "claude-fake",
}


def _model(req: RecordedRequest) -> Any:
    return req.body.get("model") if isinstance(req.body, dict) else None


class _Handler(SseHandler):
    request_id_header = "request-id"
    stream_content_type = "text/event-stream; charset=utf-8"
    not_found_type = "not_found_error"
    server_error_type = "api_error"

    def error_body(self, message: str, error_type: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def frame(self, event: SseEvent, req: RecordedRequest) -> tuple[str, Mapping[str, Any], float]:
        etype, data = event[0], copy.deepcopy(event[1])
        if etype == "message_start" and data["message"].get("model") is None:
            data["message"]["model"] = _model(req)
        return etype, data, event[2] if len(event) == 3 else 0.0

    def answer_unstreamed(self, req: RecordedRequest, events: Sequence[SseEvent]) -> bool:
        body = req.body if isinstance(req.body, dict) else {}
        if body.get("stream") is True:
            return False
        error = _error_event(events)
        if error is None:
            self.send_json(200, _fold(events, _model(req)))
        else:
            overloaded = (error.get("error") or {}).get("type") == "overloaded_error"
            self.send_json(529 if overloaded else 500, error)
        return True

    def do_HEAD(self) -> None:
        self.record()
        self.send_json(200, {})

    def do_GET(self) -> None:
        req = self.record()
        if req.route.rstrip("/") == "/v1/models":
            self.send_json(200, _MODELS)
        else:
            self.not_found(req)

    def post(self, req: RecordedRequest) -> None:
        if req.route.rstrip("/") == "/v1/messages/count_tokens":
            self.send_json(200, {"input_tokens": max(1, len(req.raw) // 4)})
        else:
            super().post(req)


class FakeAnthropic(SseFake[SseEvent]):
    """The fake server. Use as a context manager, or `start()` / `close()`.

    `url` is `http://127.0.0.1:PORT` (no trailing slash, no /v1: the clients append /v1/...).
    """

    turn_route = "/v1/messages"
    handler = _Handler

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The recorded POST /v1/messages requests (the ones that consume turns)."""
        return self.turn_requests
