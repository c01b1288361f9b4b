"""Scripted fake of the OpenAI Responses API (streaming SSE), for real-client tests.

Speaks the wire format of provider-protocols.md section 2.3, so the real ``codex`` binary
can be pointed at it through a custom ``model_providers`` entry whose ``base_url`` is
``fake.url`` (which ends in ``/v1``: codex appends ``/responses``)::

    with FakeResponses() as fake:
        fake.script(exec_command_turn("echo hi > proof.txt"), message_turn("done"))
        ...  # run codex with base_url=fake.url
        assert fake.response_requests[1].body["input"][-1]["type"] == "function_call_output"

Behaviour:

- Every request is recorded in ``fake.requests`` (``RecordedRequest``: method, path incl.
  query, lower-case headers, parsed JSON body). Any auth header and unknown keys are
  accepted.
- Each ``POST /v1/responses`` consumes the next scripted turn, in order: a list of SSE
  events (a data dict whose ``"type"`` is also the SSE event name, or ``(data, delay_s)``),
  an ``HttpError``, or a ``HangTurn``. A request beyond the script gets HTTP 500 with an
  OpenAI-shaped error body saying so.
- ``GET`` anything (codex's WebSocket upgrade attempts on ``/v1/responses``) -> 426 when it
  asks for an upgrade, else 404; neither consumes a turn. Other methods/paths -> 404.
- Turn builders number their ``resp_fake_NN`` / ``call_fake_NN`` / ``msg_fake_NN`` ids from
  one counter (shared with the other fakes), so ids never repeat within a test run.
- SSE frames are ``event: <type>\\ndata: <json>\\n\\n``, chunked, flushed one by one; then
  the connection closes (the server machinery: tests/fakes/sse_server.py). A stream that ends
  without ``response.completed`` is what codex calls "stream disconnected before completion".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from tests.fakes.sse_server import HangTurn, HttpError, RecordedRequest, SseFake, SseHandler
from tests.fakes.sse_server import next_id as _next_id

__all__ = [
    "DEFAULT_USAGE",
    "FakeResponses",
    "HangTurn",
    "HttpError",
    "RecordedRequest",
    "SseEvent",
    "Turn",
    "apply_patch_item",
    "apply_patch_turn",
    "completed_event",
    "created_event",
    "exec_command_item",
    "exec_command_turn",
    "failed_event",
    "failed_turn",
    "function_call_item",
    "hang_turn",
    "http_error",
    "item_done",
    "message_item",
    "message_turn",
    "reasoning_item",
    "response_turn",
    "web_search_item",
]

SseEvent: TypeAlias = dict[str, Any] | tuple[dict[str, Any], float]
"""One SSE frame: its data (``data["type"]`` is the event name), or (data, delay seconds)."""

#: Usage of a ``response.completed`` unless a builder is given other numbers.
DEFAULT_USAGE: dict[str, int] = {"input_tokens": 100, "cached_tokens": 0, "output_tokens": 10}

Turn: TypeAlias = list[SseEvent] | HttpError | HangTurn[SseEvent]
"""What answers one ``POST /v1/responses``."""


# --------------------------------------------------------------------------- events and items


def created_event(response_id: str) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": response_id}}


def item_done(item: dict[str, Any]) -> dict[str, Any]:
    """``response.output_item.done`` carrying ``item``."""
    return {"type": "response.output_item.done", "item": item}


def message_item(text: str, *, item_id: str | None = None) -> dict[str, Any]:
    """An assistant message output item."""
    return {
        "type": "message",
        "role": "assistant",
        "id": item_id or _next_id("msg"),
        "content": [{"type": "output_text", "text": text}],
    }


def reasoning_item(summary: str, *, item_id: str | None = None) -> dict[str, Any]:
    """A reasoning item with one summary part (codex shows it as a ``reasoning`` item)."""
    return {
        "type": "reasoning",
        "id": item_id or _next_id("rs"),
        "summary": [{"type": "summary_text", "text": summary}],
    }


def function_call_item(
    name: str, arguments: dict[str, Any] | str, *, call_id: str | None = None
) -> dict[str, Any]:
    """A function tool call; ``arguments`` is JSON-encoded when given as a dict."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "type": "function_call",
        "id": _next_id("fc"),
        "call_id": call_id or _next_id("call"),
        "name": name,
        "arguments": args,
    }


def exec_command_item(cmd: str, *, call_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """codex's ``exec_command`` tool (args ``{"cmd", "workdir"?, "yield_time_ms"?, ...}``)."""
    return function_call_item("exec_command", {"cmd": cmd, **extra}, call_id=call_id)


def apply_patch_item(patch: str, *, call_id: str | None = None) -> dict[str, Any]:
    """codex's freeform ``apply_patch`` tool: a custom tool call whose input is the patch."""
    return {
        "type": "custom_tool_call",
        "id": _next_id("ctc"),
        "call_id": call_id or _next_id("call"),
        "name": "apply_patch",
        "input": patch,
    }


def web_search_item(query: str, *, item_id: str | None = None) -> dict[str, Any]:
    """A hosted web search call (already completed on the server side)."""
    return {
        "type": "web_search_call",
        "id": item_id or _next_id("ws"),
        "status": "completed",
        "action": {"type": "search", "query": query},
    }


def completed_event(
    response_id: str,
    *,
    input_tokens: int = DEFAULT_USAGE["input_tokens"],
    cached_tokens: int = DEFAULT_USAGE["cached_tokens"],
    output_tokens: int = DEFAULT_USAGE["output_tokens"],
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """``response.completed`` with usage (the numbers of this one model call)."""
    return {
        "type": "response.completed",
        "response": {
            "id": response_id,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached_tokens},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                "total_tokens": input_tokens + output_tokens,
            },
        },
    }


def failed_event(
    response_id: str, *, code: str = "server_error", message: str = "boom"
) -> dict[str, Any]:
    """``response.failed`` with an error."""
    return {
        "type": "response.failed",
        "response": {"id": response_id, "error": {"code": code, "message": message}},
    }


# --------------------------------------------------------------------------- turn builders


def response_turn(
    items: Sequence[dict[str, Any]],
    *,
    usage: dict[str, int] | None = None,
    delay: float = 0.0,
) -> list[SseEvent]:
    """``response.created``, one ``output_item.done`` per item, ``response.completed``.

    ``usage`` keys: ``input_tokens``, ``cached_tokens``, ``output_tokens``,
    ``reasoning_tokens`` (merged over ``DEFAULT_USAGE``). ``delay`` is waited before every
    event after ``response.created``.
    """
    rid = _next_id("resp")
    u = {**DEFAULT_USAGE, **(usage or {})}
    events: list[SseEvent] = [created_event(rid)]
    events.extend((item_done(item), delay) for item in items)
    events.append((completed_event(rid, **u), delay))
    return events


def message_turn(
    text: str = "Hello from fake",
    *,
    reasoning: str | None = None,
    usage: dict[str, int] | None = None,
    delay: float = 0.0,
) -> list[SseEvent]:
    """A final assistant reply, optionally preceded by a reasoning summary."""
    items: list[dict[str, Any]] = []
    if reasoning is not None:
        items.append(reasoning_item(reasoning))
    items.append(message_item(text))
    return response_turn(items, usage=usage, delay=delay)


def exec_command_turn(
    cmd: str,
    *,
    reasoning: str | None = None,
    call_id: str | None = None,
    usage: dict[str, int] | None = None,
) -> list[SseEvent]:
    """The model asks codex to run ``cmd`` (codex runs it, then makes the next request)."""
    items: list[dict[str, Any]] = []
    if reasoning is not None:
        items.append(reasoning_item(reasoning))
    items.append(exec_command_item(cmd, call_id=call_id))
    return response_turn(items, usage=usage)


def apply_patch_turn(
    patch: str, *, call_id: str | None = None, usage: dict[str, int] | None = None
) -> list[SseEvent]:
    """The model asks codex to apply ``patch`` (``*** Begin Patch`` ... ``*** End Patch``)."""
    return response_turn([apply_patch_item(patch, call_id=call_id)], usage=usage)


def failed_turn(
    message: str = "boom", *, code: str = "server_error", delay: float = 0.0
) -> list[SseEvent]:
    """``response.created`` then ``response.failed``."""
    rid = _next_id("resp")
    return [created_event(rid), (failed_event(rid, code=code, message=message), delay)]


_HTTP_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def http_error(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpError:
    """An HTTP error turn with the OpenAI body shape, e.g. ``http_error(401)``."""
    default_type, default_code = _HTTP_ERROR_TYPES.get(status, ("server_error", None))
    return HttpError(
        status,
        {
            "error": {
                "message": message or f"fake HTTP {status}",
                "type": error_type or default_type,
                "param": None,
                "code": code if code is not None else default_code,
            }
        },
        dict(headers or {}),
    )


def hang_turn(
    *,
    before: Sequence[SseEvent] | None = None,
    after: Sequence[SseEvent] | None = None,
    release: threading.Event | None = None,
) -> HangTurn[SseEvent]:
    """A turn that sends ``before`` (default: ``response.created``) and then stays silent."""
    if before is None:
        before = [created_event(_next_id("resp"))]
    return HangTurn.of(before, after, release)


# --------------------------------------------------------------------------- server


class _Handler(SseHandler):
    request_id_header = "x-request-id"
    stream_content_type = "text/event-stream"
    not_found_type = "invalid_request_error"
    server_error_type = "server_error"

    def error_body(self, message: str, error_type: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": error_type, "param": None, "code": None}}

    def frame(self, event: SseEvent, req: RecordedRequest) -> tuple[str, Mapping[str, Any], float]:
        data, delay = event if isinstance(event, tuple) else (event, 0.0)
        return data["type"], data, delay

    def do_GET(self) -> None:
        req = self.record()
        if req.headers.get("upgrade", "").lower() == "websocket":
            self.send_error_json(
                426, "FakeResponses: WebSockets are not supported, use HTTP", self.not_found_type
            )
        else:
            self.not_found(req)


class FakeResponses(SseFake[SseEvent]):
    """The fake server. Use as a context manager, or ``start()`` / ``close()``.

    ``url`` is ``http://127.0.0.1:PORT/v1``: the ``base_url`` codex wants (it appends
    /responses).
    """

    turn_route = "/v1/responses"
    handler = _Handler
    url_suffix = "/v1"

    @property
    def response_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/responses`` requests (the ones that consume turns)."""
        return self.turn_requests
