"""The ``claude`` provider: the Anthropic Messages API (streaming) through the ``anthropic``
SDK, with a tool loop over Python callables the deployer registers.

Configuration (constructor keyword arguments; ``None`` reads the environment variable):

=============== ======================== =====================================================
keyword         environment / default    meaning
=============== ======================== =====================================================
``api_key``     ``ANTHROPIC_API_KEY``    API key (required: ``validate_config``)
``base_url``    ``ANTHROPIC_BASE_URL``   API root; unset: the SDK's default
``model``       ``ASM_CLAUDE_MODEL``,    default model
                ``claude-sonnet-5-5``
``max_tokens``  4096                     default ``max_tokens`` per API call
``max_turns``   8                        default limit of API calls (model turns) per run
``max_retries`` 2                        SDK retries (connection errors, 408/409/429/5xx)
``timeout``     600                      SDK timeout per request, seconds
``tools``       none                     ``[{"name", "description"?, "input_schema"?,
                                         "callable": "package.module.function"}]``
=============== ======================== =====================================================

Tools: the callable is imported on first use and called with the tool input as keyword
arguments (``fn(**tool_input)``; the input schema's properties are its parameters). A ``str``
return value is the ``tool_result`` content as is; anything else is sent as JSON. An exception
(a ``TypeError`` for arguments that do not fit included) becomes a ``tool_result`` with
``is_error: true`` and a ``tool_call_failed`` event; so does an unknown tool name
(``tool_not_found``) and a tool refused by ``context.tool_guard``
(``tool_permission_denied``; the tool is not run). Tools run in the calling thread: cancel is
checked before and after each one, not during it.

``adapter_opts`` (validated strictly, unknown keys are ``validation_error``): ``model`` (str),
``max_tokens`` (int >= 1), ``max_turns`` (int 1..100), ``stop_sequences`` (list of str),
``system`` (str: replaces the session's system prompt), ``thinking``
(``{"type": "enabled", "budget_tokens": int >= 1024 and < max_tokens, "display"?}``,
``{"type": "adaptive", "display"?}``, ``{"type": "between_tools"}`` or
``{"type": "disabled"}``; ``display`` is ``summarized`` or ``omitted``). There is no
``temperature``/``top_p``/``top_k``: API version 2026-10-21 (sent by anthropic SDK 2.x)
rejects them with HTTP 400 and the SDK no longer has them.

Request: ``system`` = ``adapter_opts.system`` or ``session_context["system_prompt"]``, plus the
content of ``system``/``developer`` messages. ``messages`` = the session transcript
(``session_context["transcript"]``, ``runs.transcript``'s message shape) as real turns, then
``context.messages``: text of one role in a row is one turn (roles other than user/assistant
become user); a transcript tool call is a ``tool_use`` block of its assistant turn and its
result a ``tool_result`` block heading the next user turn (paired by id, else by tool name;
ids and names made API-safe); a call with no recorded result gets an error ``tool_result``
(``NO_TOOL_RESULT``); a result without its call is text. Tools the transcript uses that are
not registered are declared (``HISTORY_TOOL_DESCRIPTION``; with no tool registered,
``tool_choice`` is ``none``), as the API requires. A transcript that starts with an assistant
turn gets a placeholder user turn first.

Event mapping, per API call (one per model turn):

- ``text_delta`` -> ``message_streamed {delta, content}`` (thinking is never streamed);
- a ``tool_use`` block complete (``content_block_stop``, input parsed from the joined
  ``input_json_delta``) -> ``tool_call_started {tool_call_id, tool_name, tool_input,
  tool_use_id, input}``;
- ``message_stop`` -> ``message_received {content, role, message_id, stop_reason,
  thinking?}`` when the message has text, then ``token_usage_updated`` with THIS call's
  usage (final cumulative values of the call, never a running total);
- after a ``tool_use`` stop: each tool -> ``tool_call_completed`` or ``tool_call_failed``;
  all results go back as ``tool_result`` blocks, in order, in one user message; the loop
  ends when ``stop_reason != "tool_use"``. Still asking for tools after ``max_turns`` calls
  -> the pending tools are reported failed (not run) and the run fails with
  ``provider_error`` (details ``reason: max_turns_exceeded``).

Failures: HTTP errors and mid-stream ``error`` events -> ``errors.error_from_status``
(429 rate limited, 401/403 authentication, 5xx/``overloaded_error`` unavailable);
``APITimeoutError`` -> ``provider_timeout``; ``APIConnectionError`` or a stream cut short
-> ``provider_unavailable``. Cancel: each API call streams on a worker thread while the
calling thread waits on the cancel token; once it is set the stream's socket is shut down
and ``AsmError("cancelled")`` is raised at once (silent server or not). No provider session
(``provider_session_id`` is None): continuity comes from the transcript.
"""

from __future__ import annotations

import importlib
import json
import logging
import queue
import re
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.errors import error_from_status, provider_error
from runs.providers.options import (
    ADAPTER_OPTS,
    adapter_opts,
    check_object,
    env_str,
    integer,
    invalid,
    non_empty_string,
)
from runs.providers.stream_json import tool_payload, zero_usage

__all__ = ["DEFAULT_MODEL", "ClaudeOptions", "ClaudeProvider", "ToolSpec"]

logger = logging.getLogger(__name__)

NAME = "claude"
DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_MAX_TOKENS = 4096
DEFAULT_MAX_TURNS = 8
MAX_TURNS_LIMIT = 100
MIN_THINKING_BUDGET = 1024
_POLL_SECONDS = 0.05

_KEYS = ("model", "max_tokens", "max_turns", "stop_sequences", "system", "thinking")
_THINKING_DISPLAY = ("summarized", "omitted")
_TOOL_KEYS = ("name", "description", "input_schema", "callable")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_PASSTHROUGH_ROLES = ("user", "assistant")
_SYSTEM_ROLES = ("system", "developer")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ClaudeOptions:
    """The effective per-run settings: constructor defaults overridden by ``adapter_opts``."""

    model: str
    max_tokens: int
    max_turns: int
    stop_sequences: tuple[str, ...] | None = None
    system: str | None = None
    thinking: dict[str, Any] | None = None


def _thinking(value: object, max_tokens: int) -> dict[str, Any]:
    where = "adapter_opts.thinking"
    if not isinstance(value, Mapping):
        invalid(where, "must be an object")
    kind = value.get("type")
    if kind == "enabled":
        allowed: tuple[str, ...] = ("type", "budget_tokens", "display")
    elif kind == "adaptive":
        allowed = ("type", "display")
    elif kind in ("between_tools", "disabled"):
        allowed = ("type",)
    else:
        invalid(f"{where}.type", "must be 'enabled', 'adaptive', 'between_tools' or 'disabled'")
    check_object(value, where, allowed)
    out: dict[str, Any] = {"type": kind}
    if "display" in value:
        if value["display"] not in _THINKING_DISPLAY:
            invalid(f"{where}.display", "must be 'summarized' or 'omitted'")
        out["display"] = value["display"]
    if kind == "enabled":
        if "budget_tokens" not in value:
            invalid(f"{where}.budget_tokens", "is required when type is 'enabled'")
        budget = integer(value["budget_tokens"], f"{where}.budget_tokens", MIN_THINKING_BUDGET)
        if budget >= max_tokens:
            invalid(f"{where}.budget_tokens", f"must be less than max_tokens ({max_tokens})")
        out["budget_tokens"] = budget
    return out


def resolve_options(
    opts: Mapping[str, Any] | None,
    *,
    model: str = DEFAULT_MODEL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_turns: int = DEFAULT_MAX_TURNS,
) -> ClaudeOptions:
    """Check ``adapter_opts`` strictly and merge them over the given defaults.

    Unknown keys or bad values -> ``AsmError("validation_error")`` with details
    ``{"field": "adapter_opts.<key>"}``.
    """
    root = ADAPTER_OPTS
    data = adapter_opts(opts, _KEYS)

    if "model" in data:
        model = non_empty_string(data["model"], f"{root}.model")
    if "max_tokens" in data:
        max_tokens = integer(data["max_tokens"], f"{root}.max_tokens", 1)
    if "max_turns" in data:
        max_turns = integer(data["max_turns"], f"{root}.max_turns", 1, MAX_TURNS_LIMIT)

    stop_sequences: tuple[str, ...] | None = None
    if "stop_sequences" in data:
        value = data["stop_sequences"]
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            invalid(f"{root}.stop_sequences", "must be a list of non-empty strings")
        stop_sequences = tuple(value)

    system: str | None = None
    if "system" in data:
        system = data["system"]
        if not isinstance(system, str):
            invalid(f"{root}.system", "must be a string")

    thinking = _thinking(data["thinking"], max_tokens) if "thinking" in data else None

    return ClaudeOptions(
        model=model,
        max_tokens=max_tokens,
        max_turns=max_turns,
        stop_sequences=stop_sequences,
        system=system,
        thinking=thinking,
    )


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class ToolSpec:
    """One configured tool: what the model is told, and the dotted path of the callable."""

    name: str
    description: str
    input_schema: dict[str, Any]
    callable: str

    def to_param(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


def _parse_tools(raw: object) -> tuple[list[ToolSpec], list[str]]:
    """The well-formed tool specs and a problem per malformed one (never raises)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list | tuple):
        return [], ["tools must be a list of {name, description, input_schema, callable}"]
    specs: list[ToolSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} must be an object")
            continue
        unknown = sorted(str(k) for k in entry if k not in _TOOL_KEYS)
        name = entry.get("name")
        path = entry.get("callable")
        description = entry.get("description", "")
        schema = entry.get("input_schema", {"type": "object", "properties": {}})
        if unknown:
            problems.append(
                f"{where} has unknown keys {unknown} (allowed: {', '.join(_TOOL_KEYS)})"
            )
        elif not isinstance(name, str) or not _TOOL_NAME.match(name):
            problems.append(f"{where}.name must match {_TOOL_NAME.pattern}")
        elif name in seen:
            problems.append(f"{where}.name {name!r} is configured twice")
        elif not isinstance(path, str) or not re.match(r"^[\w.]+[.:]\w+$", path):
            problems.append(f"{where}.callable must be a dotted path 'package.module.function'")
        elif not isinstance(description, str):
            problems.append(f"{where}.description must be a string")
        elif not isinstance(schema, Mapping) or schema.get("type") != "object":
            problems.append(f"{where}.input_schema must be a JSON schema object of type 'object'")
        else:
            seen.add(name)
            specs.append(ToolSpec(name, description, dict(schema), path))
    return specs, problems


def _import_callable(path: str) -> Callable[..., Any]:
    """``package.module.function`` (or ``package.module:function``) -> the function."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target  # type: ignore[no-any-return]


def _tool_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------- request


_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")
#: The ``tool_result`` of a transcript tool call whose result was never recorded.
NO_TOOL_RESULT = "Error: no result was recorded for this tool call."
#: The description of a tool that only the transcript uses (declared so the API accepts the
#: history's ``tool_use``/``tool_result`` blocks).
HISTORY_TOOL_DESCRIPTION = "A tool used earlier in this session. It is not available now."
_NO_EARLIER_TURNS = "(The earlier part of this conversation is not included.)"


def _safe(value: str, limit: int) -> str:
    return _UNSAFE_ID.sub("_", value)[:limit]


class _Turns:
    """Messages API turns from transcript entries and the run's messages.

    Text of one role in a row is joined into one turn; a transcript tool call is a
    ``tool_use`` block of the assistant turn and its result a ``tool_result`` block at the
    head of the next user turn (paired by id, else by tool name). A call whose result never
    came gets an error ``tool_result`` before anything else is said; a result without its
    call (e.g. cut off by ``max_messages``) becomes text.
    """

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self.system: list[str] = []
        self.open: dict[str, str] = {}  # tool_use id -> tool name, awaiting their results
        self.seen_ids: set[str] = set()
        self.generated = 0

    def _add(self, role: str, block: dict[str, Any]) -> None:
        last = self.turns[-1] if self.turns else None
        if self.open and not (role == "assistant" and last is not None and last["role"] == role):
            self.close_open()
            last = self.turns[-1]
        if last is not None and last["role"] == role:
            blocks = last["content"]
            if block["type"] == "text" and blocks and blocks[-1]["type"] == "text":
                blocks[-1] = {"type": "text", "text": blocks[-1]["text"] + "\n\n" + block["text"]}
            else:
                blocks.append(block)
        else:
            self.turns.append({"role": role, "content": [block]})

    def _results(self, blocks: list[dict[str, Any]]) -> None:
        last = self.turns[-1] if self.turns else None
        if (
            last is not None
            and last["role"] == "user"
            and all(b["type"] == "tool_result" for b in last["content"])
        ):
            last["content"].extend(blocks)
        else:
            self.turns.append({"role": "user", "content": blocks})

    def close_open(self) -> None:
        """Answer every call still waiting with an error result."""
        if self.open:
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": i,
                    "content": NO_TOOL_RESULT,
                    "is_error": True,
                }
                for i in self.open
            ]
            self.open.clear()
            self._results(blocks)

    def text(self, role: str, content: str) -> None:
        if role in _SYSTEM_ROLES:
            self.system.append(content)
            return
        self._add(role if role in _PASSTHROUGH_ROLES else "user", {"type": "text", "text": content})

    def entry(self, entry: Mapping[str, Any]) -> None:
        """One transcript message (``runs.transcript``'s shape)."""
        role = str(entry.get("role") or "user").strip().lower()
        content = entry.get("content")
        if content is not None and content != "":
            self.text(role, _tool_content(content))
            return
        name = entry.get("tool_name")
        if not isinstance(name, str) or not name:
            return
        raw_id = entry.get("tool_call_id")
        call_id = _safe(raw_id, 128) if isinstance(raw_id, str) and raw_id else None
        if role == "assistant":
            self._tool_use(call_id, _safe(name, 64) or "tool", entry.get("tool_input"))
        else:
            meta = entry.get("metadata")
            failed = isinstance(meta, Mapping) and meta.get("is_error") is True
            self._tool_result(call_id, name, entry.get("tool_output"), failed)

    def _tool_use(self, call_id: str | None, name: str, tool_input: object) -> None:
        if call_id is None or call_id in self.seen_ids:
            self.generated += 1
            call_id = f"toolu_asm_{self.generated}"
        self.seen_ids.add(call_id)
        params = dict(tool_input) if isinstance(tool_input, Mapping) else {}
        self._add("assistant", {"type": "tool_use", "id": call_id, "name": name, "input": params})
        self.open[call_id] = name

    def _tool_result(self, call_id: str | None, name: str, output: object, failed: bool) -> None:
        match = call_id if call_id in self.open else None
        if match is None and call_id is None:
            match = next((i for i, n in self.open.items() if n == _safe(name, 64)), None)
        printed = "" if output is None else _tool_content(output)
        if match is None:
            self.text("user", f"tool_result({call_id or 'unknown'}): {name} {printed}".rstrip())
            return
        del self.open[match]
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": match}
        if printed:
            block["content"] = printed
        if failed:
            block["is_error"] = True
        self._results([block])

    def messages(self) -> list[dict[str, Any]]:
        """The turns; a turn of text only has its text as ``content`` (a string)."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            blocks = turn["content"]
            if len(blocks) == 1 and blocks[0]["type"] == "text":
                out.append({"role": turn["role"], "content": blocks[0]["text"]})
            else:
                out.append({"role": turn["role"], "content": blocks})
        return out


def build_request(
    context: RunContext, opts: ClaudeOptions
) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)`` for the first API call of a run (see the module docstring)."""
    session_system = context.session_context.get("system_prompt")
    system_parts: list[str] = []
    if opts.system is not None:
        system_parts.append(opts.system)
    elif isinstance(session_system, str):
        system_parts.append(session_system)

    turns = _Turns()
    transcript = context.session_context.get("transcript")
    if isinstance(transcript, list):
        for raw in transcript:
            if isinstance(raw, Mapping):
                turns.entry(raw)
    from_transcript = bool(turns.turns)
    for message in context.messages:
        role, content = message.get("role", "user"), message.get("content", "")
        if content:
            turns.text(role, content)
    turns.close_open()
    system_parts.extend(p for p in turns.system if p)
    messages = turns.messages()
    if not any(m["role"] == "user" for m in messages):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{NAME}: the run has no user message to send",
            {"field": "input.messages"},
        )
    if from_transcript and messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": _NO_EARLIER_TURNS})
    system = "\n\n".join(p for p in system_parts if p) or None
    return system, messages


def _history_tools(messages: list[dict[str, Any]], registered: set[str]) -> list[str]:
    """Names of the ``tool_use`` blocks in ``messages`` that no registered tool has."""
    names: set[str] = set()
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, Mapping) and block.get("type") == "tool_use":
                    name = block.get("name")
                    if isinstance(name, str) and name not in registered:
                        names.add(name)
    return sorted(names)


def _block_param(block: Any) -> dict[str, Any]:
    """A response content block as a request content block (for the echoed assistant turn)."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    dumped.pop("parsed_output", None)
    return dumped


def _usage(message: Any) -> dict[str, int]:
    usage = message.usage
    out = {
        "input_tokens": int(usage.input_tokens or 0),
        "output_tokens": int(usage.output_tokens or 0),
    }
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        value = getattr(usage, key, None)
        if value is not None:
            out[key] = int(value)
    return out


# --------------------------------------------------------------------------- errors


def _map_exception(exc: BaseException) -> AsmError:
    if isinstance(exc, AsmError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        status: int | None = exc.status_code
        if status == 200:  # an `event: error` frame mid-stream
            status = None
        return error_from_status(NAME, status, exc.body, exc.message)
    if isinstance(exc, anthropic.APITimeoutError):
        return provider_error(NAME, "request timed out", code=ErrorCode.PROVIDER_TIMEOUT)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc
        return provider_error(
            NAME, f"connection failed: {cause}", code=ErrorCode.PROVIDER_UNAVAILABLE
        )
    if isinstance(exc, anthropic.APIError):
        return provider_error(NAME, str(exc) or type(exc).__name__)
    text = str(exc) or type(exc).__name__
    if type(exc).__module__.startswith(("httpx", "httpcore", "h11")):  # read while streaming
        if "Timeout" in type(exc).__name__:
            return provider_error(
                NAME, f"stream timed out: {text}", code=ErrorCode.PROVIDER_TIMEOUT
            )
        return provider_error(
            NAME, f"stream interrupted: {text}", code=ErrorCode.PROVIDER_UNAVAILABLE
        )
    return provider_error(NAME, f"unexpected {type(exc).__name__}: {text}")


def _cancelled() -> AsmError:
    return AsmError(ErrorCode.CANCELLED, "Run was cancelled", {"provider": NAME})


# --------------------------------------------------------------------------- streaming


@dataclass
class _Call:
    """One streamed API call running on a worker thread; events come through ``queue``."""

    queue: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    abandoned: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stream: Any = None

    def abort(self) -> None:
        """Stop the worker: shut the stream's socket down so a blocked read returns."""
        self.abandoned.set()
        with self.lock:
            stream = self.stream
        if stream is None:
            return  # still connecting: the worker checks `abandoned` once connected
        try:
            network = stream.response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # best effort: the worker is a daemon and the caller moves on
            logger.debug("claude: could not shut the stream socket down", exc_info=True)


@dataclass
class _Run:
    """Per-run state shared with ``cancel(run_id)``."""

    stop: threading.Event = field(default_factory=threading.Event)
    call: _Call | None = None

    def stopped(self, token: CancelToken) -> bool:
        return token.cancelled or self.stop.is_set()


def _stream_worker(client: anthropic.Anthropic, params: dict[str, Any], call: _Call) -> None:
    try:
        with client.messages.stream(**params) as stream:
            with call.lock:
                call.stream = stream
            if call.abandoned.is_set():
                return
            for event in stream:
                if call.abandoned.is_set():
                    return
                call.queue.put(("event", event))
            try:
                final = stream.get_final_message()
            except AssertionError:  # the stream ended before message_start
                final = None
            call.queue.put(("done", final))
    except BaseException as exc:
        call.queue.put(("error", exc))


# --------------------------------------------------------------------------- provider


class ClaudeProvider:
    """The Anthropic Messages API with a tool loop (module docstring).

    One instance serves concurrent runs: per-run state lives in ``execute``; the SDK client
    (thread-safe) is shared.
    """

    name: str = NAME

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_retries: int = 2,
        timeout: float = 600.0,
        tools: list[Mapping[str, Any]] | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else env_str("ANTHROPIC_API_KEY")
        self.base_url = base_url if base_url is not None else env_str("ANTHROPIC_BASE_URL")
        self.model = model or env_str("ASM_CLAUDE_MODEL") or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.max_turns = max_turns
        self.max_retries = max_retries
        self.timeout = timeout
        self.tools, self._problems = _parse_tools(tools)
        for label, value, low in (
            ("max_tokens", max_tokens, 1),
            ("max_turns", max_turns, 1),
            ("max_retries", max_retries, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                self._problems.append(f"{label} must be an integer >= {low}")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            self._problems.append("timeout must be a positive number of seconds")
        self._callables: dict[str, Callable[..., Any]] = {}
        self._client: anthropic.Anthropic | None = None
        self._lock = threading.Lock()
        self._runs: dict[uuid.UUID, _Run] = {}

    # -- port

    def capabilities(self) -> list[Capability]:
        caps = [
            Capability(CapabilityType.STREAMING, "streaming", description="Streams text deltas"),
            Capability(
                CapabilityType.CANCEL,
                "cancel",
                description="Closes the stream in flight when cancelled",
            ),
            Capability(
                CapabilityType.THINKING,
                "extended_thinking",
                description="adapter_opts.thinking; thinking is recorded, not streamed",
            ),
            Capability(
                CapabilityType.PROMPT,
                "system_prompt",
                description="The session's system_prompt (or adapter_opts.system)",
            ),
            Capability(
                CapabilityType.SAMPLING,
                "sampling",
                description="adapter_opts model, max_tokens, stop_sequences",
            ),
        ]
        caps.extend(
            Capability(CapabilityType.TOOL, spec.name, description=spec.description or None)
            for spec in self.tools
        )
        return caps

    def validate_config(self) -> None:
        if not self.api_key:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: no API key: set ANTHROPIC_API_KEY (or the provider's api_key setting)",
                {"provider": NAME, "setting": "ANTHROPIC_API_KEY"},
            )
        if self._problems:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: invalid configuration: {'; '.join(self._problems)}",
                {"provider": NAME, "problems": list(self._problems)},
            )
        for spec in self.tools:
            self._callable(spec)

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        self._options(opts)

    def cancel(self, run_id: uuid.UUID) -> None:
        """Best effort and idempotent: stops the run's stream in flight, if any."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.stop.set()
            if run.call is not None:
                run.call.abort()

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        opts = self._options(context.adapter_opts)
        self.validate_config()
        system, messages = build_request(context, opts)
        cancel_token.raise_if_cancelled()

        run = _Run()
        with self._lock:
            self._runs[context.run_id] = run
        try:
            return self._loop(context, opts, system, messages, emit, cancel_token, run)
        finally:
            with self._lock:
                self._runs.pop(context.run_id, None)

    # -- internals

    def _options(self, opts: Mapping[str, Any] | None) -> ClaudeOptions:
        return resolve_options(
            opts, model=self.model, max_tokens=self.max_tokens, max_turns=self.max_turns
        )

    def _callable(self, spec: ToolSpec) -> Callable[..., Any]:
        fn = self._callables.get(spec.name)
        if fn is None:
            try:
                fn = _import_callable(spec.callable)
            except Exception as exc:
                raise AsmError(
                    ErrorCode.VALIDATION_ERROR,
                    f"{NAME}: tool {spec.name!r}: cannot import callable {spec.callable!r}: "
                    f"{type(exc).__name__}: {exc}",
                    {"provider": NAME, "tool": spec.name, "callable": spec.callable},
                ) from exc
            self._callables[spec.name] = fn
        return fn

    def _get_client(self) -> anthropic.Anthropic:
        with self._lock:
            if self._client is None:
                self._client = anthropic.Anthropic(
                    api_key=self.api_key,
                    base_url=self.base_url or None,
                    max_retries=self.max_retries,
                    timeout=self.timeout,
                )
            return self._client

    def _params(
        self, opts: ClaudeOptions, system: str | None, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": opts.model,
            "max_tokens": opts.max_tokens,
            "messages": messages,
        }
        if system:
            params["system"] = system
        if opts.stop_sequences:
            params["stop_sequences"] = list(opts.stop_sequences)
        if opts.thinking is not None:
            params["thinking"] = dict(opts.thinking)
        tools = [spec.to_param() for spec in self.tools]
        # The API refuses tool_use/tool_result blocks (the transcript's) unless their tools are
        # declared: declare the ones no longer registered, and with none registered forbid
        # tool use outright.
        history = _history_tools(messages, {spec.name for spec in self.tools})
        tools += [
            {"name": n, "description": HISTORY_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}
            for n in history
        ]
        if tools:
            params["tools"] = tools
        if history and not self.tools:
            params["tool_choice"] = {"type": "none"}
        return params

    def _loop(
        self,
        context: RunContext,
        opts: ClaudeOptions,
        system: str | None,
        messages: list[dict[str, Any]],
        emit: Emit,
        token: CancelToken,
        run: _Run,
    ) -> ProviderResult:
        client = self._get_client()
        total = zero_usage()
        tool_calls: list[dict[str, Any]] = []
        thinking_parts: list[str] = []
        model: str | None = None
        content = ""
        stop_reason: str | None = None
        turn = 0
        while True:
            turn += 1
            message = self._stream_call(
                client, self._params(opts, system, messages), emit, token, run
            )
            model = model or message.model
            stop_reason = message.stop_reason
            texts = [b.text for b in message.content if b.type == "text"]
            thinking = [b.thinking for b in message.content if b.type == "thinking" and b.thinking]
            content = "".join(texts)
            thinking_parts.extend(thinking)
            if run.stopped(token):
                raise _cancelled()
            if content:
                received: dict[str, Any] = {
                    "content": content,
                    "role": "assistant",
                    "message_id": message.id,
                    "stop_reason": stop_reason,
                }
                if thinking:
                    received["thinking"] = "\n\n".join(thinking)
                emit(EventType.MESSAGE_RECEIVED.value, received)
            usage = _usage(message)
            for key, value in usage.items():
                total[key] += value
            emit(EventType.TOKEN_USAGE_UPDATED.value, usage)

            uses = [b for b in message.content if b.type == "tool_use"]
            tool_calls.extend({"id": b.id, "name": b.name, "input": b.input} for b in uses)
            if stop_reason != "tool_use" or not uses:
                break
            if turn >= opts.max_turns:
                for block in uses:
                    self._fail_tool(
                        emit,
                        block,
                        {
                            "code": ErrorCode.PROVIDER_ERROR.value,
                            "message": f"not run: max_turns ({opts.max_turns}) reached",
                        },
                        None,
                    )
                raise provider_error(
                    NAME,
                    f"the model still asked for tools after max_turns={opts.max_turns} turns",
                    code=ErrorCode.PROVIDER_ERROR,
                    reason="max_turns_exceeded",
                    max_turns=opts.max_turns,
                )
            messages.append(
                {"role": "assistant", "content": [_block_param(b) for b in message.content]}
            )
            results = [self._run_tool(context, block, emit, token, run) for block in uses]
            messages.append({"role": "user", "content": results})

        output: dict[str, Any] = {
            "content": content,
            "stop_reason": stop_reason,
            "turns": turn,
            "tool_calls": tool_calls,
        }
        if thinking_parts:
            output["thinking"] = "\n\n".join(thinking_parts)
        return ProviderResult(
            output=output,
            token_usage=total,
            stop_reason=stop_reason,
            provider_session_id=None,
            model=model,
        )

    def _stream_call(
        self,
        client: anthropic.Anthropic,
        params: dict[str, Any],
        emit: Emit,
        token: CancelToken,
        run: _Run,
    ) -> Any:
        """One streamed API call: emits its events; returns the final message."""
        call = _Call()
        run.call = call
        worker = threading.Thread(
            target=_stream_worker, args=(client, params, call), name="claude-stream", daemon=True
        )
        worker.start()
        finished = False
        saw_stop = False
        try:
            while True:
                try:
                    kind, value = call.queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if run.stopped(token):
                        raise _cancelled() from None
                    continue
                if run.stopped(token):
                    raise _cancelled()
                if kind == "error":
                    finished = True
                    raise _map_exception(value) from value
                if kind == "done":
                    finished = True
                    if not saw_stop or value is None:
                        raise provider_error(
                            NAME,
                            "the stream ended before message_stop",
                            code=ErrorCode.PROVIDER_UNAVAILABLE,
                        )
                    return value
                event = value
                if event.type == "message_stop":
                    saw_stop = True
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    if event.delta.text:
                        emit(
                            EventType.MESSAGE_STREAMED.value,
                            {"delta": event.delta.text, "content": event.delta.text},
                        )
                elif event.type == "content_block_stop" and event.content_block.type == "tool_use":
                    block = event.content_block
                    tool_input = block.input if isinstance(block.input, dict) else {}
                    emit(
                        EventType.TOOL_CALL_STARTED.value,
                        tool_payload(block.id, block.name, tool_input),
                    )
        finally:
            run.call = None
            if not finished:
                call.abort()

    def _fail_tool(
        self, emit: Emit, block: Any, error: dict[str, Any], result_text: str | None
    ) -> None:
        tool_input = block.input if isinstance(block.input, dict) else {}
        data = tool_payload(block.id, block.name, tool_input, is_error=True, error=error)
        if result_text is not None:
            data["tool_output"] = result_text
        emit(EventType.TOOL_CALL_FAILED.value, data)

    def _run_tool(
        self, context: RunContext, block: Any, emit: Emit, token: CancelToken, run: _Run
    ) -> dict[str, Any]:
        """Run one requested tool; emit its outcome; return its ``tool_result`` block."""
        if run.stopped(token):
            raise _cancelled()
        name: str = block.name
        tool_input: dict[str, Any] = block.input if isinstance(block.input, dict) else {}
        spec = next((s for s in self.tools if s.name == name), None)
        refusal = context.tool_guard(name, tool_input) if context.tool_guard else None

        def failed(code: ErrorCode, message: str, text: str) -> dict[str, Any]:
            self._fail_tool(emit, block, {"code": code.value, "message": message}, text)
            return {
                "type": "tool_result",
                "tool_use_id": block.id,
                "content": text,
                "is_error": True,
            }

        if spec is None:
            return failed(
                ErrorCode.TOOL_NOT_FOUND,
                f"tool {name!r} is not configured",
                f"Error: tool not found: {name!r} is not an available tool.",
            )
        if refusal is not None:
            return failed(
                ErrorCode.TOOL_PERMISSION_DENIED,
                refusal,
                f"Error: the tool call was refused and was not run: {refusal}",
            )
        try:
            fn = self._callable(spec)
            value = fn(**tool_input)
        except Exception as exc:
            logger.warning("claude: tool %s failed", name, exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
            return failed(ErrorCode.TOOL_EXECUTION_FAILED, message, f"Error: {message}")
        if run.stopped(token):
            raise _cancelled()
        text = _tool_content(value)
        emit(
            EventType.TOOL_CALL_COMPLETED.value,
            tool_payload(block.id, name, tool_input, tool_output=_jsonable(value), content=text),
        )
        return {"type": "tool_result", "tool_use_id": block.id, "content": text}
