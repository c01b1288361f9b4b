"""The ``echo`` provider: offline, deterministic, scriptable. The embedded default and the
test workhorse.

It replies with the content of the last ``user`` input message (the prompt when there is
none), streamed word by word. ``options.adapter_opts`` scripts everything else
(architecture 5.1; this is the whole surface, anything else is ``validation_error``):

=============== ============================================================ =============
key             meaning                                                      default
=============== ============================================================ =============
``delay_ms``    pause before each chunk (ms, int or float >= 0); the pause   0
                ends at once when the run is cancelled
``chunk_words`` words per ``message_streamed`` chunk (int >= 1)              1
``repeat``      the reply repeated N times, joined by a space (1..10000)     1
``usage``       ``{"input_tokens"?, "output_tokens"?}`` (ints >= 0); a       word counts
                missing key keeps its default (input: whitespace words over
                all input messages; output: whitespace words in the reply)
``tool_calls``  ``[{"name", "input"?, "output"?}]``, emitted before the      none
                reply as ``tool_call_started`` + ``tool_call_completed``
                (ids ``echo_tool_1``, ``echo_tool_2``, ...)
``fail``        ``{"code", "message"?, "after_chunks"?}``: raise             no failure
                ``AsmError(code, message)`` after that many chunks (0: before
                the first chunk, after the tool calls; >= the number of
                chunks: after the stream, before ``message_received``).
                ``code`` must be a taxonomy code.
``hang``        ``true``: after the reply and usage, wait until the cancel   false
                token is set, then raise ``AsmError("cancelled")``
=============== ============================================================ =============

Event order of a successful run: ``tool_call_started``/``tool_call_completed`` per scripted
call, ``message_streamed`` per chunk (``{"delta", "content"}``: the chunk), then
``message_received {"content": reply, "role": "assistant"}``, then
``token_usage_updated {"input_tokens", "output_tokens"}``. Chunks split the reply on single
spaces; every chunk but the last keeps its trailing space, so the deltas concatenate to
the reply exactly. An empty reply streams no chunks.

The options are validated before anything is emitted; ``validate_adapter_opts`` is the
same check as a pure function, for the submit path. The token is checked before every
emitted event.
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from asm_core.errors import AsmError, is_known_code
from asm_core.event_types import EventType
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.options import ADAPTER_OPTS, adapter_opts, check_object, integer, invalid

__all__ = [
    "ECHO_MODEL",
    "EchoFailure",
    "EchoOptions",
    "EchoProvider",
    "EchoToolCall",
    "echo_chunks",
    "validate_adapter_opts",
]

ECHO_MODEL = "echo-1"
MAX_REPEAT = 10_000
_STOP_REASON = "end_turn"
_HANG_POLL_SECONDS = 1.0

_KEYS = ("delay_ms", "chunk_words", "repeat", "usage", "tool_calls", "fail", "hang")
_USAGE_KEYS = ("input_tokens", "output_tokens")
_TOOL_CALL_KEYS = ("name", "input", "output")
_FAIL_KEYS = ("code", "message", "after_chunks")


@dataclass(frozen=True)
class EchoToolCall:
    name: str
    input: Any = None
    output: Any = None


@dataclass(frozen=True)
class EchoFailure:
    code: str
    message: str | None = None
    after_chunks: int = 0


@dataclass(frozen=True)
class EchoOptions:
    """Validated ``adapter_opts`` of the echo provider (see the module docstring)."""

    delay_ms: float = 0
    chunk_words: int = 1
    repeat: int = 1
    input_tokens: int | None = None
    output_tokens: int | None = None
    tool_calls: tuple[EchoToolCall, ...] = ()
    fail: EchoFailure | None = None
    hang: bool = False


# --------------------------------------------------------------------------- validation


def validate_adapter_opts(opts: Mapping[str, Any] | None) -> EchoOptions:
    """Check echo ``adapter_opts`` strictly and return them typed.

    Unknown keys or wrong types -> ``AsmError("validation_error")`` with details
    ``{"field": "adapter_opts.<key>"}`` (nested: ``adapter_opts.fail.code``,
    ``adapter_opts.tool_calls[0].name``). ``None`` means all defaults.
    """
    root = ADAPTER_OPTS
    data = adapter_opts(opts, _KEYS)

    delay_ms: float = 0
    if "delay_ms" in data:
        value = data["delay_ms"]
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            invalid(f"{root}.delay_ms", "must be a finite number")
        if value < 0:
            invalid(f"{root}.delay_ms", "must be >= 0")
        delay_ms = value

    chunk_words = integer(data.get("chunk_words", 1), f"{root}.chunk_words", 1)
    repeat = integer(data.get("repeat", 1), f"{root}.repeat", 1, MAX_REPEAT)

    input_tokens: int | None = None
    output_tokens: int | None = None
    if "usage" in data:
        usage = check_object(data["usage"], f"{root}.usage", _USAGE_KEYS)
        if "input_tokens" in usage:
            input_tokens = integer(usage["input_tokens"], f"{root}.usage.input_tokens", 0)
        if "output_tokens" in usage:
            output_tokens = integer(usage["output_tokens"], f"{root}.usage.output_tokens", 0)

    tool_calls: list[EchoToolCall] = []
    if "tool_calls" in data:
        calls = data["tool_calls"]
        if not isinstance(calls, list):
            invalid(f"{root}.tool_calls", "must be a list")
        for i, raw in enumerate(calls):
            where = f"{root}.tool_calls[{i}]"
            call = check_object(raw, where, _TOOL_CALL_KEYS)
            name = call.get("name")
            if not isinstance(name, str) or not name:
                invalid(f"{where}.name", "must be a non-empty string")
            tool_calls.append(EchoToolCall(name, call.get("input", {}), call.get("output")))

    fail: EchoFailure | None = None
    if "fail" in data:
        spec = check_object(data["fail"], f"{root}.fail", _FAIL_KEYS)
        code = spec.get("code")
        if not isinstance(code, str) or not is_known_code(code):
            invalid(f"{root}.fail.code", f"must be an error taxonomy code, got {code!r}")
        message = spec.get("message")
        if message is not None and not isinstance(message, str):
            invalid(f"{root}.fail.message", "must be a string")
        after = integer(spec.get("after_chunks", 0), f"{root}.fail.after_chunks", 0)
        fail = EchoFailure(str(code), message, after)

    hang = data.get("hang", False)
    if not isinstance(hang, bool):
        invalid(f"{root}.hang", "must be a boolean")

    return EchoOptions(
        delay_ms=delay_ms,
        chunk_words=chunk_words,
        repeat=repeat,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tool_calls=tuple(tool_calls),
        fail=fail,
        hang=hang,
    )


# --------------------------------------------------------------------------- behaviour


def echo_chunks(reply: str, chunk_words: int = 1) -> list[str]:
    """``reply`` split on single spaces into chunks of ``chunk_words`` words.

    Every chunk but the last ends with a space, so ``"".join(chunks) == reply``; an empty
    reply has no chunks.
    """
    if reply == "":
        return []
    words = reply.split(" ")
    groups = [words[i : i + chunk_words] for i in range(0, len(words), chunk_words)]
    last = len(groups) - 1
    return [" ".join(g) + ("" if i == last else " ") for i, g in enumerate(groups)]


def _reply(context: RunContext) -> str:
    for message in reversed(context.messages):
        if message.get("role") == "user":
            return message.get("content", "")
    prompt = context.input.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _raise(failure: EchoFailure) -> NoReturn:
    raise AsmError(failure.code, failure.message, {"provider": "echo", "scripted": True})


class EchoProvider:
    """Replies with the last user message; scripted by ``adapter_opts`` (module docstring).

    Stateless, so one instance serves any number of concurrent runs.
    """

    name: str = "echo"

    def capabilities(self) -> list[Capability]:
        return [
            Capability(
                CapabilityType.STREAMING, "streaming", description="Streams the reply per chunk"
            ),
            Capability(
                CapabilityType.CANCEL, "cancel", description="Stops between chunks when cancelled"
            ),
            Capability(
                CapabilityType.TOOL,
                "echo_tool",
                description="Scripted tool calls (adapter_opts.tool_calls); runs no real tool",
            ),
        ]

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        validate_adapter_opts(opts)

    def validate_config(self) -> None:
        """Nothing to configure: always valid."""

    def cancel(self, run_id: uuid.UUID) -> None:
        """No-op (idempotent): the run's cancel token, set by the executor, stops it."""

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        opts = validate_adapter_opts(context.adapter_opts)
        cancel_token.raise_if_cancelled()

        tool_results: list[dict[str, Any]] = []
        for n, call in enumerate(opts.tool_calls, start=1):
            call_id = f"echo_tool_{n}"
            tool_input = copy.deepcopy(call.input)
            tool_output = copy.deepcopy(call.output)
            cancel_token.raise_if_cancelled()
            emit(
                EventType.TOOL_CALL_STARTED.value,
                {"tool_call_id": call_id, "tool_name": call.name, "tool_input": tool_input},
            )
            cancel_token.raise_if_cancelled()
            emit(
                EventType.TOOL_CALL_COMPLETED.value,
                {
                    "tool_call_id": call_id,
                    "tool_name": call.name,
                    "tool_input": copy.deepcopy(tool_input),
                    "tool_output": tool_output,
                },
            )
            tool_results.append(
                {
                    "id": call_id,
                    "name": call.name,
                    "input": copy.deepcopy(tool_input),
                    "output": copy.deepcopy(tool_output),
                }
            )

        failure = opts.fail
        fail_at = failure.after_chunks if failure is not None else None
        if failure is not None and fail_at == 0:
            _raise(failure)

        base = _reply(context)
        reply = " ".join([base] * opts.repeat)
        delay = opts.delay_ms / 1000
        for k, chunk in enumerate(echo_chunks(reply, opts.chunk_words), start=1):
            if delay > 0:
                cancel_token.wait(delay)  # returns early when the token is set
            cancel_token.raise_if_cancelled()
            emit(EventType.MESSAGE_STREAMED.value, {"delta": chunk, "content": chunk})
            if failure is not None and fail_at == k:
                _raise(failure)
        if failure is not None:  # after_chunks > number of chunks
            _raise(failure)

        cancel_token.raise_if_cancelled()
        emit(EventType.MESSAGE_RECEIVED.value, {"content": reply, "role": "assistant"})

        usage = {
            "input_tokens": (
                opts.input_tokens
                if opts.input_tokens is not None
                else sum(len(m["content"].split()) for m in context.messages)
            ),
            "output_tokens": (
                opts.output_tokens if opts.output_tokens is not None else len(reply.split())
            ),
        }
        cancel_token.raise_if_cancelled()
        emit(EventType.TOKEN_USAGE_UPDATED.value, dict(usage))

        if opts.hang:
            while not cancel_token.wait(_HANG_POLL_SECONDS):
                pass
            cancel_token.raise_if_cancelled()

        return ProviderResult(
            output={"content": reply, "stop_reason": _STOP_REASON, "tool_calls": tool_results},
            token_usage=usage,
            stop_reason=_STOP_REASON,
            provider_session_id=f"echo_{context.session_id.hex}",
            model=ECHO_MODEL,
        )
