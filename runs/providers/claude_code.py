"""The ``claude_code`` provider: the Claude Code CLI in print mode, read as stream-json.

Plain Python (no Django). Each run is one ``claude -p --output-format stream-json --verbose
--include-partial-messages [...] -- PROMPT`` subprocess started through ``cli.run_jsonl``
(stdin closed, own process group, killed on cancel). Wire format: provider-protocols.md
section 4, verified against Claude Code 2.1.332 (bundled in ``claude-agent-sdk==0.2.189``).

Configuration (constructor keyword -> environment variable when the keyword is None):

====================== ===================================== ==============================
keyword                environment variable                  default
====================== ===================================== ==============================
``binary``             ``ASM_CLAUDE_CODE_BIN``               ``claude`` on PATH, else the
                                                             CLI bundled in the installed
                                                             ``claude-agent-sdk`` package
``api_key``            ``ANTHROPIC_API_KEY``                 required (given to the CLI in
                                                             its env, never in argv)
``base_url``           ``ANTHROPIC_BASE_URL``                the CLI's default
``model``              ``ASM_CLAUDE_CODE_MODEL``             the CLI's default
``home``               ``ASM_CLAUDE_CODE_HOME``              ``~/.asm/claude_code``
``permission_mode``    ``ASM_CLAUDE_CODE_PERMISSION_MODE``   ``default``
``allowed_tools``      ``ASM_CLAUDE_CODE_ALLOWED_TOOLS``     none (env: comma-separated)
``disallowed_tools``   ``ASM_CLAUDE_CODE_DISALLOWED_TOOLS``  none (env: comma-separated)
``max_turns``          ``ASM_CLAUDE_CODE_MAX_TURNS``         unlimited
``max_retries``        ``ASM_CLAUDE_CODE_MAX_RETRIES``       the CLI's (sets
                                                             ``CLAUDE_CODE_MAX_RETRIES``)
``extra_env``          (none)                                ``{}``: added to the CLI's env
====================== ===================================== ==============================

``home`` is the ``HOME`` the CLI runs with: its sessions (``$HOME/.claude/projects/``) live
there, so it must persist between runs for resume to work. Bad config never makes the
constructor raise; ``validate_config`` reports it (``validation_error``).

The CLI's environment is built from scratch, never inherited wholesale (the agent runs shell
commands; the service's secrets must not reach them): ``cli.child_env`` passes ``PATH``,
proxy and CA-bundle variables and ``cli.SESSION_ENV`` (locale, ``TZ``, ``TMPDIR``, login
identity) through; then ``HOME``, ``ANTHROPIC_API_KEY``,
``ANTHROPIC_BASE_URL``, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``,
``CLAUDE_CODE_MAX_RETRIES`` and ``IS_SANDBOX`` are set; ``extra_env`` comes last.

Root: the CLI refuses ``bypassPermissions`` as root unless ``IS_SANDBOX=1``; this adapter
sets ``IS_SANDBOX=1`` exactly when that mode is requested (choosing it is the deployer's or
the caller's decision that the workspace is a sandbox). Other modes work as root as they are
(``default`` denies writes the CLI would ask about; allow them with ``allowed_tools``, e.g.
``["Bash"]``, or ``acceptEdits``).

Per-run ``options.adapter_opts`` (strict: unknown key or bad type -> ``validation_error``
with details ``{"field": "adapter_opts.<key>"}``):

======================== ====================================================================
``model``                non-empty string: ``--model``
``max_turns``            int >= 1: ``--max-turns`` (else ``options.max_turns``, else config)
``permission_mode``      one of ``PERMISSION_MODES``: ``--permission-mode``
``allowed_tools``        list of tool rules (``"Bash"``, ``"Bash(git *)"``), added to config
``disallowed_tools``     list of tool rules, added to config
``workspace``            absolute path of an existing directory: the CLI's cwd
``append_system_prompt`` string appended (after the session's ``system_prompt``) through
                         ``--append-system-prompt``
======================== ====================================================================

Policy tool rules: ``options["tool_rules"] = {"allow": [rule, ...], "deny": [rule, ...]}``
(written by the policy engine, in Claude Code's rule syntax) add ``--allowedTools`` /
``--disallowedTools`` entries. ``RunContext.tool_guard`` is not consulted: the CLI runs its
tools itself.

Working directory (``workspace.configured_workspace``): ``adapter_opts.workspace``, else
``session_context["workspace_path"]``, else ``options["workspace"]["path"]``, else
``<home>/workspaces/<session_id>`` (created; kept for the session's later runs, so files an
agent wrote are still there when it resumes).

Prompt: when resuming (``context.provider_session_id``) or when the run has a single user
message, that message's content; otherwise one ``"<role>: <content>"`` line per message
(``session_context["transcript"]`` first when not resuming). A resume whose CLI session is
gone (``No conversation found``) is retried once as a new conversation, after an
``error_occurred`` warning.

Event mapping (``StreamJsonNormalizer``, a pure function of the stdout lines; the usage
arithmetic and the tool-call bookkeeping are ``stream_json``'s, shared with ``amp``):

- ``system/init`` -> provider session id, model, tools (no event; unknown keys ignored).
- ``stream_event`` text_delta (top level only) -> ``message_streamed {delta, content}``
  (``content`` is the delta, like every adapter; alias ``message_id``).
- The CLI prints **one ``assistant`` line per content block**. A message's text is its text
  blocks joined with ``""`` (what the deltas add up to); ``message_received {content, role}``
  is emitted **once per API message id** at that message's ``message_stop``, or, without
  partial messages, when the next message, a ``user`` line or the result arrives. Without
  deltas for a message, each text block is also emitted as one ``message_streamed``.
- ``tool_use`` block -> ``tool_call_started {tool_call_id, tool_name, tool_input}`` (aliases
  ``tool_use_id``, ``input``); ``user`` ``tool_result`` -> ``tool_call_completed`` or, with
  ``is_error``, ``tool_call_failed {..., error}`` (name and input from the started call;
  aliases ``tool_use_id``, ``content``; ``permission_denied`` when the CLI refused the tool).
- ``thinking`` blocks go to ``output["thinking"]``, never into message text.
- Synthetic assistant lines (``model: "<synthetic>"``: an API error the CLI turned into
  text) -> ``error_occurred`` (no ``message_received``); their error kind (``error``:
  ``rate_limit``, ``server_error``, ...) also classifies a failed result that has no
  ``api_error_type`` (a connection failure has no HTTP status: ``server_error`` ->
  ``provider_unavailable``).
- Usage: per API message, ``token_usage_updated`` carries the increment when its
  ``message_delta`` arrives (input/cache counts from ``message_start``, cumulative
  ``output_tokens`` from ``message_delta``); at the result whatever ``result.usage`` (the
  CLI's sum over all API calls) still exceeds is emitted as one last increment. The events
  therefore add up to ``result.usage`` exactly (unless the CLI reported a message it later
  left out of its sum), and ``ProviderResult.token_usage`` is that sum.
- ``result``: success is decided by ``is_error``, never ``subtype``. ``is_error: false`` ->
  ``ProviderResult(output={content: result text, stop_reason, tool_calls, num_turns,
  total_cost_usd, duration_ms, permission_denials, terminal_reason[, thinking]})``.
  ``is_error: true`` -> ``AsmError`` via ``errors.error_from_status`` (when
  ``api_error_status`` is set) or ``errors.error_from_text``, with details
  ``terminal_reason``, ``api_error_type``, ``subtype``.
- EOF without a result -> ``CliOutcome.raise_unless_finished()``; cancel ->
  ``AsmError("cancelled")`` (the process group is killed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from runs.providers.cli import NODE_ENV, SESSION_ENV, child_env, find_binary, run_jsonl
from runs.providers.errors import error_from_status, error_from_text, provider_error
from runs.providers.options import (
    ADAPTER_OPTS,
    adapter_opts,
    env_int,
    env_list,
    env_str,
    integer,
    invalid,
    non_empty_string,
)
from runs.providers.stream_json import (
    USAGE_KEYS,
    ToolCalls,
    UsageMeter,
    count,
    text_blocks,
    tool_result_blocks,
    usage_counts,
    zero_usage,
)
from runs.providers.workspace import configured_workspace, validate_workspace_option

__all__ = [
    "PERMISSION_MODES",
    "PROVIDER",
    "USAGE_KEYS",
    "ClaudeCodeOptions",
    "ClaudeCodeProvider",
    "StreamJsonNormalizer",
    "bundled_binary",
    "validate_adapter_opts",
]

PROVIDER = "claude_code"

#: ``claude --help`` (2.1.332) lists the last six; ``default`` is accepted too.
PERMISSION_MODES: tuple[str, ...] = (
    "default",
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "dontAsk",
    "manual",
    "plan",
)
#: Modes the CLI refuses as root unless ``IS_SANDBOX=1``.
BYPASS_MODES: frozenset[str] = frozenset({"bypassPermissions"})

#: The built-in tools advertised as capabilities (the CLI has more; these are the ones a
#: routing requirement would name).
TOOLS: tuple[str, ...] = (
    "Bash",
    "Read",
    "Edit",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "WebSearch",
    "Task",
)

#: Longest prompt / system prompt passed as one argv element (Linux caps one at 128 KiB).
MAX_ARG_BYTES = 120_000

_KEYS = (
    "model",
    "max_turns",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "workspace",
    "append_system_prompt",
)
#: The CLI's own error kinds on synthetic lines -> the API error type they stand for.
_CLI_ERROR_TYPES = {
    "rate_limit": "rate_limit_error",
    "authentication_failed": "authentication_error",
    "billing_error": "billing_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
    "invalid_request": "invalid_request_error",
}
_SYNTHETIC_MODEL = "<synthetic>"
_RESUME_NOT_FOUND = "No conversation found"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ClaudeCodeOptions:
    """Validated ``adapter_opts`` (see the module docstring)."""

    model: str | None = None
    max_turns: int | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    workspace: str | None = None
    append_system_prompt: str | None = None


def _permission_mode(value: object, field_: str) -> str:
    if not isinstance(value, str) or value not in PERMISSION_MODES:
        invalid(field_, f"must be one of {', '.join(PERMISSION_MODES)}")
    return value


def _tool_list(value: object, field_: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        invalid(field_, "must be a list of tool names or rules")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            invalid(f"{field_}[{i}]", "must be a non-empty string")
        if item.strip().startswith("-"):
            invalid(f"{field_}[{i}]", "must not start with '-'")
        out.append(item.strip())
    return tuple(out)


def validate_adapter_opts(opts: Mapping[str, Any] | None) -> ClaudeCodeOptions:
    """Check ``adapter_opts`` strictly and return them typed (``None``: all defaults)."""
    root = ADAPTER_OPTS
    data = adapter_opts(opts, _KEYS)
    workspace = None
    if data.get("workspace") is not None:
        workspace = validate_workspace_option(data["workspace"], f"{root}.workspace")
    append = data.get("append_system_prompt")
    if append is not None and not isinstance(append, str):
        invalid(f"{root}.append_system_prompt", "must be a string")
    return ClaudeCodeOptions(
        model=(
            non_empty_string(data["model"], f"{root}.model")
            if data.get("model") is not None
            else None
        ),
        max_turns=(
            integer(data["max_turns"], f"{root}.max_turns", 1)
            if data.get("max_turns") is not None
            else None
        ),
        permission_mode=(
            _permission_mode(data["permission_mode"], f"{root}.permission_mode")
            if data.get("permission_mode") is not None
            else None
        ),
        allowed_tools=_tool_list(data.get("allowed_tools", []), f"{root}.allowed_tools"),
        disallowed_tools=_tool_list(data.get("disallowed_tools", []), f"{root}.disallowed_tools"),
        workspace=workspace,
        append_system_prompt=append or None,
    )


def _tool_rules(options: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``options["tool_rules"]`` as (allow, deny); absent -> ((), ())."""
    rules = options.get("tool_rules")
    if rules is None:
        return (), ()
    if not isinstance(rules, Mapping):
        invalid("options.tool_rules", "must be an object {allow, deny}")
    for key in rules:
        if key not in ("allow", "deny"):
            invalid(f"options.tool_rules.{key}", "is not a known key (allowed: allow, deny)")
    return (
        _tool_list(rules.get("allow", []), "options.tool_rules.allow"),
        _tool_list(rules.get("deny", []), "options.tool_rules.deny"),
    )


# --------------------------------------------------------------------------- normalizer


def _text_of(content: object) -> str:
    """A tool_result's content as text (a string, or the text blocks of a list joined with
    newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_blocks(content))
    if content is None:
        return ""
    return json.dumps(content, ensure_ascii=False, default=str)


@dataclass
class _Message:
    """One API message (several assistant lines, one per content block)."""

    id: str
    texts: list[str] = field(default_factory=list)
    streamed: bool = False
    usage: dict[str, int] | None = None
    done: bool = False


class StreamJsonNormalizer:
    """Turns the CLI's stream-json lines into normalized events (module docstring).

    ``feed(line)`` returns True for the ``result`` line; ``finish()`` then returns the
    ``ProviderResult`` or raises the run's ``AsmError``. Pure: no I/O besides ``emit``.
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.session_id: str | None = None
        self.model: str | None = None
        self.tools: list[str] = []
        self.init: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self._messages: dict[str, _Message] = {}
        self._open: list[str] = []  # ids of messages not yet flushed, in order
        self._tools = ToolCalls()
        self._denied: dict[str, str] = {}
        self._thinking: list[str] = []
        self._usage = UsageMeter(emit)
        self._last_stop_reason: str | None = None
        self._cli_error: dict[str, str] = {}  # the last synthetic line's error kinds
        self._last_text = ""

    # -- public

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def emitted_usage(self) -> dict[str, int]:
        """The sum of the ``token_usage_updated`` increments emitted so far."""
        return dict(self._usage.total)

    def resume_not_found(self) -> bool:
        """The result says the resumed CLI session does not exist (nothing else happened)."""
        result = self.result
        if result is None or result.get("is_error") is not True:
            return False
        texts = [str(e) for e in result.get("errors") or []] + [str(result.get("result") or "")]
        return count(result.get("num_turns")) == 0 and any(_RESUME_NOT_FOUND in t for t in texts)

    def feed(self, line: Mapping[str, Any]) -> bool:
        kind = line.get("type")
        if kind == "system":
            self._system(line)
        elif kind == "stream_event":
            self._stream_event(line)
        elif kind == "assistant":
            self._assistant(line)
        elif kind == "user":
            self._flush_all()
            self._user(line)
        elif kind == "result":
            self._flush_all()
            self.result = dict(line)
            if isinstance(line.get("session_id"), str):
                self.session_id = self.session_id or line["session_id"]
            return True
        return False

    def finish(self) -> ProviderResult:
        """The run's result (success) or its ``AsmError`` (``is_error``). Emits the usage
        ``result.usage`` still holds beyond what was emitted."""
        result = self.result
        if result is None:
            raise provider_error(
                PROVIDER, "the CLI printed no result", code=ErrorCode.PROVIDER_ERROR
            )
        self._usage.settle(usage_counts(result.get("usage")))
        if result.get("is_error") is not False:
            raise self._error(result)
        stop_reason = result.get("stop_reason") or self._last_stop_reason or "end_turn"
        text = result.get("result")
        output: dict[str, Any] = {
            "content": text if isinstance(text, str) else self._last_text,
            "stop_reason": stop_reason,
            "tool_calls": [
                {
                    "id": c.id,
                    "name": c.name,
                    "input": c.input,
                    "output": c.output,
                    "is_error": c.is_error,
                }
                for c in self._tools.latest()
            ],
            "num_turns": result.get("num_turns"),
            "total_cost_usd": result.get("total_cost_usd"),
            "duration_ms": result.get("duration_ms"),
            "permission_denials": list(result.get("permission_denials") or []),
            "terminal_reason": result.get("terminal_reason"),
        }
        if self._thinking:
            output["thinking"] = list(self._thinking)
        metadata = {
            key: value
            for key, value in (
                ("session_id", self.session_id),
                ("model", self.model),
                ("cwd", self.init.get("cwd")),
                ("claude_code_version", self.init.get("claude_code_version")),
                ("permission_mode", self.init.get("permissionMode")),
            )
            if value is not None
        }
        return ProviderResult(
            output=output,
            token_usage=dict(self._usage.total),
            stop_reason=str(stop_reason),
            provider_session_id=self.session_id,
            model=self.model,
            session_metadata={"claude_code": metadata} if metadata else {},
        )

    # -- line kinds

    def _system(self, line: Mapping[str, Any]) -> None:
        subtype = line.get("subtype")
        if subtype == "init":
            self.init = dict(line)
            if isinstance(line.get("session_id"), str):
                self.session_id = line["session_id"]
            if isinstance(line.get("model"), str):
                self.model = line["model"]
            tools = line.get("tools")
            if isinstance(tools, list):
                self.tools = [t for t in tools if isinstance(t, str)]
        elif subtype == "permission_denied":
            tool_use_id = line.get("tool_use_id")
            if isinstance(tool_use_id, str):
                self._denied[tool_use_id] = str(line.get("message") or "permission denied")

    def _stream_event(self, line: Mapping[str, Any]) -> None:
        if line.get("parent_tool_use_id") is not None:
            return  # a subagent's stream: its usage is settled from result.usage
        event = line.get("event")
        if not isinstance(event, Mapping):
            return
        kind = event.get("type")
        message_id = line.get("api_message_id")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, Mapping):
                return
            message_id = message.get("id") or message_id
            if not isinstance(message_id, str):
                return
            self._flush_all(keep=message_id)
            state = self._message(message_id)
            state.usage = usage_counts(message.get("usage"))
            if isinstance(message.get("model"), str) and message["model"] != _SYNTHETIC_MODEL:
                self.model = message["model"]
            return
        if not isinstance(message_id, str):
            message_id = self._open[-1] if self._open else None
        if message_id is None:
            return
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    self._message(message_id).streamed = True
                    self._emit(
                        EventType.MESSAGE_STREAMED.value,
                        {"delta": text, "content": text, "message_id": message_id},
                    )
        elif kind == "message_delta":
            state = self._message(message_id)
            delta = event.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("stop_reason"), str):
                self._last_stop_reason = delta["stop_reason"]
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                current = dict(state.usage or zero_usage())
                for key in USAGE_KEYS:
                    if key in usage:
                        current[key] = count(usage[key])
                state.usage = current
                self._usage.message(message_id, current)
        elif kind == "message_stop":
            self._flush(message_id)

    def _assistant(self, line: Mapping[str, Any]) -> None:
        message = line.get("message")
        if not isinstance(message, Mapping):
            return
        if message.get("model") == _SYNTHETIC_MODEL or line.get("is_api_error_message"):
            self._synthetic(line, message)
            return
        message_id = message.get("id")
        if not isinstance(message_id, str):
            message_id = f"anonymous_{len(self._messages)}"
        self._flush_all(keep=message_id)
        state = self._message(message_id)
        if state.usage is None:
            state.usage = usage_counts(message.get("usage"))
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        top_level = line.get("parent_tool_use_id") is None
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind == "text" and top_level:
                text = block.get("text")
                if isinstance(text, str) and text:
                    state.texts.append(text)
                    if not state.streamed:
                        self._emit(
                            EventType.MESSAGE_STREAMED.value,
                            {"delta": text, "content": text, "message_id": message_id},
                        )
            elif kind in ("tool_use", "server_tool_use"):
                self._tool_started(block, line.get("parent_tool_use_id"))
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                self._thinking.append(block["thinking"])
            elif kind == "redacted_thinking":
                self._thinking.append("[redacted]")
            elif isinstance(kind, str) and kind.endswith("_tool_result"):
                self._tool_finished(block, None)  # a server tool's result (web search)

    def _user(self, line: Mapping[str, Any]) -> None:
        for block in tool_result_blocks(line):
            self._tool_finished(block, line.get("tool_use_result"))

    def _synthetic(self, line: Mapping[str, Any], message: Mapping[str, Any]) -> None:
        """An API error the CLI turned into an assistant line: a warning event (the result
        that follows decides whether the run failed)."""
        text = "\n".join(text_blocks(message.get("content")))
        status = line.get("api_error_status")
        if not line.get("is_api_error_message") and status is None and not line.get("error"):
            return  # a synthetic non-error line: not model text, nothing to report
        self._cli_error = {
            key: line[key] for key in ("error", "api_error") if isinstance(line.get(key), str)
        }
        error = _api_error(
            status if isinstance(status, int) else None,
            line.get("api_error_type"),
            line.get("error"),
            text or "API error",
        )
        payload: dict[str, Any] = {"error_code": error.code, "error_message": error.message}
        if isinstance(status, int):
            payload["api_error_status"] = status
        self._emit(EventType.ERROR_OCCURRED.value, payload)

    # -- helpers

    def _message(self, message_id: str) -> _Message:
        state = self._messages.get(message_id)
        if state is None or state.done:
            state = _Message(message_id)
            self._messages[message_id] = state
        if message_id not in self._open:
            self._open.append(message_id)
        return state

    def _flush(self, message_id: str) -> None:
        state = self._messages.get(message_id)
        if message_id in self._open:
            self._open.remove(message_id)
        if state is None or state.done:
            return
        state.done = True
        text = "".join(state.texts)
        if text:
            self._last_text = text
            self._emit(
                EventType.MESSAGE_RECEIVED.value,
                {"content": text, "role": "assistant", "message_id": message_id},
            )

    def _flush_all(self, keep: str | None = None) -> None:
        for message_id in [m for m in self._open if m != keep]:
            self._flush(message_id)

    def _tool_started(self, block: Mapping[str, Any], parent: object) -> None:
        call_id = block.get("id")
        if not isinstance(call_id, str):
            return
        raw_input = block.get("input")
        tool_input = raw_input if isinstance(raw_input, Mapping) else {}
        name = block.get("name") if isinstance(block.get("name"), str) else "unknown"
        payload = self._tools.start(call_id, str(name), tool_input)
        payload["input"] = raw_input  # the alias is the block's input as the CLI sent it
        if parent is not None:
            payload["parent_tool_use_id"] = parent
        self._emit(EventType.TOOL_CALL_STARTED.value, payload)

    def _tool_finished(self, block: Mapping[str, Any], extra: object) -> None:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str):
            return
        content = block.get("content")
        is_error = block.get("is_error") is True
        event_type, payload = self._tools.finish(call_id, _text_of(content), is_error=is_error)
        payload["content"] = content  # the alias is the raw content (a string or blocks)
        payload["is_error"] = is_error
        if isinstance(extra, Mapping):
            payload["tool_use_result"] = dict(extra)
        if is_error and call_id in self._denied:
            payload["permission_denied"] = True
            payload["error_code"] = ErrorCode.TOOL_PERMISSION_DENIED.value
        self._emit(event_type, payload)

    def _error(self, result: Mapping[str, Any]) -> AsmError:
        errors = [str(e) for e in result.get("errors") or [] if e]
        text = result.get("result")
        message = (
            text
            if isinstance(text, str) and text
            else "; ".join(errors) or f"run ended with {result.get('subtype') or 'an error'}"
        )
        status = result.get("api_error_status")
        error = _api_error(
            status if isinstance(status, int) and not isinstance(status, bool) else None,
            result.get("api_error_type"),
            self._cli_error.get("error"),
            message,
        )
        for key in ("terminal_reason", "api_error_type", "subtype", "num_turns"):
            if result.get(key) is not None:
                error.details.setdefault(key, result[key])
        if self._cli_error:  # e.g. {"error": "server_error", "api_error": "connection_failed"}
            error.details.setdefault("cli_error", dict(self._cli_error))
        if self.session_id:
            error.details.setdefault("provider_session_id", self.session_id)
        return error


def _api_error(
    status: int | None, api_error_type: object, cli_error: object, message: str
) -> AsmError:
    """The taxonomy error for an API failure the CLI reported (one mapping: errors.py)."""
    error_type = api_error_type if isinstance(api_error_type, str) else None
    if cli_error == "billing_error":
        error_type = "billing_error"
    elif error_type is None and isinstance(cli_error, str):
        error_type = _CLI_ERROR_TYPES.get(cli_error)
    if status is not None:
        body = {"error": {"type": error_type, "message": message}}
        return error_from_status(PROVIDER, status, body, message)
    if error_type is not None:
        return provider_error(PROVIDER, message, error_type=error_type)
    return error_from_text(PROVIDER, message)


# --------------------------------------------------------------------------- provider


def bundled_binary() -> str | None:
    """The CLI bundled in the installed ``claude-agent-sdk`` package (found without
    importing it), or None."""
    try:
        spec = importlib.util.find_spec("claude_agent_sdk")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "_bundled" / "claude"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


class ClaudeCodeProvider:
    """Runs the Claude Code CLI per run (module docstring). Thread-safe: per-run state lives
    in ``execute``; the only shared state is the map of active runs for ``cancel``."""

    name: str = PROVIDER

    def __init__(
        self,
        *,
        binary: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        home: str | os.PathLike[str] | None = None,
        permission_mode: str | None = None,
        allowed_tools: Sequence[str] | None = None,
        disallowed_tools: Sequence[str] | None = None,
        max_turns: int | None = None,
        max_retries: int | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        problems: list[str] = []
        self.binary = binary or env_str("ASM_CLAUDE_CODE_BIN")
        self.api_key = api_key or env_str("ANTHROPIC_API_KEY")
        self.base_url = base_url or env_str("ANTHROPIC_BASE_URL")
        self.model = model or env_str("ASM_CLAUDE_CODE_MODEL")
        home_value = home or env_str("ASM_CLAUDE_CODE_HOME") or "~/.asm/claude_code"
        self.home = Path(home_value).expanduser()
        self.permission_mode = (
            permission_mode or env_str("ASM_CLAUDE_CODE_PERMISSION_MODE") or "default"
        )
        if self.permission_mode not in PERMISSION_MODES:
            problems.append(
                f"permission mode {self.permission_mode!r} is not one of "
                f"{', '.join(PERMISSION_MODES)} (ASM_CLAUDE_CODE_PERMISSION_MODE)"
            )
        self.allowed_tools = list(
            allowed_tools
            if allowed_tools is not None
            else env_list("ASM_CLAUDE_CODE_ALLOWED_TOOLS") or []
        )
        self.disallowed_tools = list(
            disallowed_tools
            if disallowed_tools is not None
            else env_list("ASM_CLAUDE_CODE_DISALLOWED_TOOLS") or []
        )
        self.max_turns = (
            max_turns if max_turns is not None else env_int("ASM_CLAUDE_CODE_MAX_TURNS", problems)
        )
        if self.max_turns is not None and self.max_turns < 1:
            problems.append("max_turns (ASM_CLAUDE_CODE_MAX_TURNS) must be >= 1")
        self.max_retries = (
            max_retries
            if max_retries is not None
            else env_int("ASM_CLAUDE_CODE_MAX_RETRIES", problems)
        )
        if self.max_retries is not None and self.max_retries < 0:
            problems.append("max_retries (ASM_CLAUDE_CODE_MAX_RETRIES) must be >= 0")
        self.extra_env = {str(k): str(v) for k, v in (extra_env or {}).items()}
        self._problems = problems
        self._lock = threading.Lock()
        self._active: dict[uuid.UUID, CancelToken] = {}

    # -- protocol

    def capabilities(self) -> list[Capability]:
        denied = set(self.disallowed_tools)
        tools = [
            Capability(CapabilityType.TOOL, tool, enabled=tool not in denied) for tool in TOOLS
        ]
        return [
            Capability(CapabilityType.STREAMING, "streaming", description="Streams text deltas"),
            Capability(
                CapabilityType.CANCEL, "cancel", description="Kills the CLI's process group"
            ),
            Capability(CapabilityType.RESUME, "resume", description="claude --resume <session id>"),
            Capability(
                CapabilityType.THINKING, "thinking", description="Thinking blocks in the output"
            ),
            Capability(
                CapabilityType.PROMPT,
                "system_prompt",
                description="The session's system prompt via --append-system-prompt",
            ),
            *tools,
            Capability(
                CapabilityType.CODE_EXECUTION,
                "Bash",
                enabled="Bash" not in denied,
                description="Runs shell commands in the workspace",
            ),
            Capability(
                CapabilityType.FILE_ACCESS,
                "workspace",
                description="Reads and edits files in the run's working directory",
            ),
            Capability(
                CapabilityType.NETWORK_ACCESS,
                "WebFetch",
                enabled="WebFetch" not in denied,
                description="Fetches web pages",
            ),
        ]

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        validate_adapter_opts(opts)

    def validate_config(self) -> None:
        if self._problems:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{PROVIDER}: " + "; ".join(self._problems),
                {"provider": PROVIDER},
            )
        self.resolve_binary()
        if not self.api_key:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{PROVIDER}: no API key: set ANTHROPIC_API_KEY",
                {"provider": PROVIDER, "setting": "ANTHROPIC_API_KEY"},
            )

    def resolve_binary(self) -> str:
        """The CLI to run: ``binary`` / ASM_CLAUDE_CODE_BIN, else ``claude`` on PATH, else the
        ``claude-agent-sdk`` bundled one; none -> ``validation_error``."""
        hint = (
            "set ASM_CLAUDE_CODE_BIN to the Claude Code CLI, put `claude` on PATH, or install "
            "the `claude-agent-sdk` Python package (it bundles the CLI)"
        )
        if self.binary:
            try:
                return find_binary(PROVIDER, self.binary, "claude")
            except AsmError as exc:
                raise AsmError(
                    exc.code,
                    f"{exc.message} (ASM_CLAUDE_CODE_BIN); {hint}",
                    {**exc.details, "setting": "ASM_CLAUDE_CODE_BIN"},
                ) from None
        found = shutil.which("claude") or bundled_binary()
        if found is None:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{PROVIDER}: Claude Code CLI not found: {hint}",
                {"provider": PROVIDER, "setting": "ASM_CLAUDE_CODE_BIN"},
            )
        return found

    def cancel(self, run_id: uuid.UUID) -> None:
        """Sets the run's cancel token (the CLI's process group is then killed); idempotent,
        a no-op for a run that is not active here."""
        with self._lock:
            token = self._active.get(run_id)
        if token is not None:
            token.cancel()

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        opts = validate_adapter_opts(context.adapter_opts)
        allow_rules, deny_rules = _tool_rules(context.options)
        self.validate_config()
        binary = self.resolve_binary()
        cancel_token.raise_if_cancelled()
        cwd = self._workspace(context, opts)
        with self._lock:
            self._active[context.run_id] = cancel_token
        try:
            resume = context.provider_session_id
            argv, env = self._command(context, opts, binary, allow_rules, deny_rules, resume)
            normalizer = self._run(argv, env, cwd, emit, cancel_token)
            if resume and normalizer.resume_not_found():
                emit(
                    EventType.ERROR_OCCURRED.value,
                    {
                        "error_code": ErrorCode.PROVIDER_ERROR.value,
                        "error_message": f"{PROVIDER}: CLI session {resume} not found under "
                        f"{self.home}; starting a new conversation",
                    },
                )
                argv, env = self._command(context, opts, binary, allow_rules, deny_rules, None)
                normalizer = self._run(argv, env, cwd, emit, cancel_token)
            return normalizer.finish()
        finally:
            with self._lock:
                self._active.pop(context.run_id, None)

    # -- helpers

    def _run(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        emit: Emit,
        cancel_token: CancelToken,
    ) -> StreamJsonNormalizer:
        normalizer = StreamJsonNormalizer(emit)
        outcome = run_jsonl(
            argv,
            provider=PROVIDER,
            on_line=normalizer.feed,
            cancel_token=cancel_token,
            cwd=cwd,
            env=env,
        )
        if not normalizer.finished:
            outcome.raise_unless_finished()
        return normalizer

    def _workspace(self, context: RunContext, opts: ClaudeCodeOptions) -> Path:
        """The configured workspace (``workspace.configured_workspace``), else the session's
        own directory under ``home``, created and kept for its later runs."""
        configured = configured_workspace(context, opts.workspace)
        if configured is not None:
            return Path(configured).resolve()
        path = self.home / "workspaces" / str(context.session_id)
        _make_dir(path, "the workspace")
        return path

    def _command(
        self,
        context: RunContext,
        opts: ClaudeCodeOptions,
        binary: str,
        allow_rules: Sequence[str],
        deny_rules: Sequence[str],
        resume: str | None,
    ) -> tuple[list[str], dict[str, str]]:
        prompt = _prompt(context, resumed=resume is not None)
        mode = opts.permission_mode or self.permission_mode
        argv = [
            binary,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-mode",
            mode,
        ]
        model = opts.model or self.model
        if model:
            argv += ["--model", model]
        run_max_turns = context.options.get("max_turns")
        if not isinstance(run_max_turns, int) or isinstance(run_max_turns, bool):
            run_max_turns = None
        max_turns = opts.max_turns or run_max_turns or self.max_turns
        if max_turns:
            argv += ["--max-turns", str(max_turns)]
        if resume:
            argv += ["--resume", resume]
        allowed = _unique([*self.allowed_tools, *opts.allowed_tools, *allow_rules])
        if allowed:
            argv += ["--allowedTools", *allowed]
        disallowed = _unique([*self.disallowed_tools, *opts.disallowed_tools, *deny_rules])
        if disallowed:
            argv += ["--disallowedTools", *disallowed]
        system_prompt = context.session_context.get("system_prompt")
        appended = "\n\n".join(
            part
            for part in (
                system_prompt if isinstance(system_prompt, str) else None,
                opts.append_system_prompt,
            )
            if part
        )
        if appended:
            _check_arg_size(appended, "the system prompt")
            argv += ["--append-system-prompt", appended]
        argv += ["--", prompt]
        return argv, self._env(mode)

    def _env(self, mode: str) -> dict[str, str]:
        env = child_env(SESSION_ENV, NODE_ENV)
        _make_dir(self.home, "HOME")
        env["HOME"] = str(self.home)
        env["ANTHROPIC_API_KEY"] = self.api_key or ""
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
        if self.max_retries is not None:
            env["CLAUDE_CODE_MAX_RETRIES"] = str(self.max_retries)
        if mode in BYPASS_MODES:
            env["IS_SANDBOX"] = "1"
        env.update(self.extra_env)
        return env


def _make_dir(path: Path, what: str) -> None:
    """Create ``path`` (a directory under ``home``); failing -> ``validation_error``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{PROVIDER}: cannot create {what} {path} ({exc}); "
            "set ASM_CLAUDE_CODE_HOME to a writable directory",
            {"provider": PROVIDER, "setting": "ASM_CLAUDE_CODE_HOME"},
        ) from exc


def _unique(items: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _check_arg_size(text: str, what: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_ARG_BYTES:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{PROVIDER}: {what} is {size} bytes; the CLI takes at most {MAX_ARG_BYTES}",
            {"provider": PROVIDER, "bytes": size},
        )


def _prompt(context: RunContext, *, resumed: bool) -> str:
    """The prompt argument (module docstring: Prompt)."""
    messages = [dict(m) for m in context.messages]
    history: list[dict[str, str]] = []
    transcript = context.session_context.get("transcript")
    if not resumed and isinstance(transcript, list):
        history = [
            {"role": str(item.get("role") or "user"), "content": item["content"]}
            for item in transcript
            if isinstance(item, Mapping)
            and isinstance(item.get("content"), str)
            and item["content"]
        ]
    if not history and len(messages) == 1 and messages[0].get("role") == "user":
        prompt = messages[0]["content"]
    else:
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in [*history, *messages])
    if not prompt.strip():
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{PROVIDER}: the run has no input message",
            {"field": "input"},
        )
    _check_arg_size(prompt, "the prompt")
    return prompt
