"""The ``codex`` provider: the OpenAI Codex CLI (``codex exec --json``, npm
``@openai/codex``, pinned in ``package.json``) run as a subprocess, one process per run.

Configuration (constructor keyword arguments; ``None`` reads the environment variable):

========================= ============================== ========================================
keyword                   environment / default          meaning
========================= ============================== ========================================
``binary``                ``ASM_CODEX_BIN``; else        the codex CLI (path or name on PATH)
                          ``<project>/node_modules/.bin/
                          codex`` (``npm ci``); else
                          ``codex`` on PATH
``model``                 ``ASM_CODEX_MODEL``,           default model (``-m``); use a slug codex
                          ``gpt-5.5``                    knows, or it warns and changes its tools
``codex_home``            ``ASM_CODEX_HOME``,            ``CODEX_HOME`` (and ``HOME``) of the
                          ``~/.asm/codex``               child: threads live there, so it must
                                                         persist between runs for resume
``api_key``               ``CODEX_API_KEY``, else        the key; reaches the child only as its
                          ``OPENAI_API_KEY``             ``CODEX_API_KEY`` env var, never argv
``base_url``              ``ASM_CODEX_BASE_URL``         a Responses API root ending in ``/v1``:
                                                         set -> a custom provider ``asm`` (HTTP,
                                                         ``env_key="CODEX_API_KEY"``); unset ->
                                                         codex's built-in OpenAI provider
``sandbox``               ``ASM_CODEX_SANDBOX``,         ``read-only`` / ``workspace-write`` /
                          ``workspace-write``            ``danger-full-access``
``bypass_sandbox``        ``ASM_CODEX_BYPASS_SANDBOX``   ``1``/``true``: pass
                          (false)                        ``--dangerously-bypass-approvals-and-
                                                         sandbox`` instead (only where codex's
                                                         bwrap sandbox cannot start and the host
                                                         is sandboxed externally)
``approval``              ``never``                      ``approval_policy`` (exec has no human)
``extra_config``          none                           more ``-c key=value`` overrides (TOML)
``request_max_retries``,  codex defaults                 retries of the ``asm`` provider entry
``stream_max_retries``                                   (only with ``base_url``: codex ignores
                                                         them elsewhere)
========================= ============================== ========================================

``adapter_opts`` (strict; anything else is ``validation_error``): ``model`` (str),
``workspace`` (absolute path of an existing directory), ``reasoning_effort`` (one of
``none minimal low medium high xhigh``).

Invocation: ``codex exec --json --skip-git-repo-check -C <workspace> -m MODEL -s SANDBOX
-c approval_policy=... [-c developer_instructions=<system prompt>] [provider -c ...] --
PROMPT``, with stdin ``/dev/null``, a minimal environment (``cli.child_env``: ``PATH`` and
proxy/CA variables when set, ``LANG`` (default ``C.UTF-8``), then ``HOME=CODEX_HOME=codex_home``
and ``CODEX_API_KEY``) and the process group killed on cancel (``cli.run_jsonl``). The
workspace follows ``workspace.run_workspace``: ``adapter_opts.workspace``, else
``session_context["workspace_path"]``, else ``options.workspace.path``, else a temporary
directory removed after the run.
With ``context.provider_session_id`` the run is ``codex exec resume <thread_id> --json ...
-- PROMPT`` instead (resume takes no ``-C``/``-s``: the workspace is the process ``cwd`` and
the sandbox ``-c sandbox_mode=...``); a thread codex no longer has ("no rollout found") is
reported as an ``error_occurred`` warning and the run starts a new thread with the transcript.

Prompt: the last ``user`` message of ``context.messages``. Without a thread to resume, the
session transcript (``session_context["transcript"]``) is replayed first as plain text, one
``<role>: <content>`` line per message (seed 6.5); earlier input messages of the run are
always prefixed the same way. The session's ``system_prompt`` is codex's
``developer_instructions``.

Event mapping (``CodexJsonlParser``, pure; one JSONL line in, normalized events out):

- ``thread.started`` -> ``provider_session_id`` (the thread id); ``turn.started`` -> nothing.
- ``item.started`` of a tool item -> ``tool_call_started``; its ``item.completed`` ->
  ``tool_call_completed``, or ``tool_call_failed`` when ``status`` is failed/declined or a
  command's ``exit_code`` is not 0. Tool names: ``command_execution`` -> ``shell``
  (``{"command"}``, output ``{"output", "exit_code"}``), ``file_change`` -> ``apply_patch``
  (``{"changes"}``), ``web_search`` -> ``web_search`` (``{"query", "action"}``),
  ``mcp_tool_call`` -> ``mcp:<server>/<tool>`` (its arguments), ``collab_tool_call`` ->
  ``collab:<tool>``. ``tool_call_id`` is codex's item id (unique within a run only; the
  ``web_search`` line repeats ``"id"`` and the last value, ``ws_...``, wins).
- ``agent_message`` -> ``message_streamed`` (the whole text as one delta: codex's JSONL has
  no text deltas, hence no ``streaming`` capability) + ``message_received``. The run's
  ``content`` is the last agent message (what ``codex exec -o`` writes).
- ``reasoning`` -> ``output["reasoning"]`` (summaries joined by blank lines), never message
  text. ``todo_list`` / ``plan`` -> ``output["todo_list"]`` / ``output["plan"]`` (the latest
  state; metadata, not tool calls: codex maintains them itself, nothing is executed).
- ``error`` items and top-level ``error`` lines -> ``error_occurred`` warnings
  (``severity: "warning"``; code from ``errors.error_from_text``), except the top-level
  ``error`` that just repeats the following ``turn.failed``.
- ``turn.completed`` -> ``token_usage_updated``. codex reports usage CUMULATIVE over the
  thread; the event carries this run's delta: the thread total minus the total the previous
  run left in ``session_metadata["codex_thread_usage"][thread_id]`` (the result returns the
  new total there). Keys: ``input_tokens`` (includes cached input, OpenAI's convention),
  ``output_tokens``, ``cache_read_input_tokens`` (= ``cached_input_tokens``),
  ``cache_creation_input_tokens`` (= ``cache_write_input_tokens``) and the extra
  ``reasoning_output_tokens`` (part of ``output_tokens``) when codex reports them.
- ``turn.failed`` -> ``errors.error_from_text`` (``unexpected status 401`` ->
  ``provider_authentication_failed``, 429 -> ``provider_rate_limited``, 5xx / "high demand"
  / "stream disconnected" -> ``provider_unavailable``); EOF without ``turn.completed`` or
  ``turn.failed`` -> the last ``error`` line's text, else ``CliOutcome.raise_unless_finished``.

codex runs its tools itself (sandboxed by its ``sandbox`` policy; its bundled bwrap works
in this project's containers, ``bypass_sandbox`` is for hosts where it cannot):
``context.tool_guard`` is not consulted and tool events are reports of what already ran. A
command that fails because the sandbox denied it produces no ``command_execution`` item in
codex 0.171.0 (only the model sees its output), so it has no tool event either.
"""

from __future__ import annotations

import copy
import json
import logging
import os
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
from runs.providers.cli import CliOutcome, child_env, find_binary, run_jsonl
from runs.providers.errors import error_from_text
from runs.providers.options import (
    ADAPTER_OPTS,
    adapter_opts,
    env_flag,
    env_str,
    invalid,
    non_empty_string,
)
from runs.providers.workspace import run_workspace, validate_workspace_option

__all__ = [
    "DEFAULT_MODEL",
    "CodexJsonlParser",
    "CodexOptions",
    "CodexProvider",
    "NormalizedEvent",
    "build_prompt",
    "usage_delta",
    "validate_adapter_opts",
]

logger = logging.getLogger(__name__)

NAME = "codex"
DEFAULT_MODEL = "gpt-5.5"
DEFAULT_SANDBOX = "workspace-write"
DEFAULT_APPROVAL = "never"
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
APPROVAL_POLICIES = ("never", "on-request", "on-failure", "untrusted")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
#: The key reaches the child only through this variable (both provider modes read it).
KEY_ENV = "CODEX_API_KEY"
#: Name of the custom provider entry used with ``base_url``.
PROVIDER_ID = "asm"
#: ``session_metadata`` key holding ``{thread_id: cumulative usage}``.
USAGE_METADATA_KEY = "codex_thread_usage"
MAX_REMEMBERED_THREADS = 50
_STOP_REASON = "end_turn"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_KEYS = ("model", "workspace", "reasoning_effort")
_USAGE_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
)
#: codex usage field -> our ``token_usage_updated`` key.
_USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_input_tokens": "cache_read_input_tokens",
    "cache_write_input_tokens": "cache_creation_input_tokens",
    "reasoning_output_tokens": "reasoning_output_tokens",
}
_MISSING_THREAD = "no rollout found"

#: One normalized event: ``(event_type, data)``.
NormalizedEvent = tuple[str, dict[str, Any]]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class CodexOptions:
    """Validated ``adapter_opts`` of the codex provider (None: the provider's default)."""

    model: str | None = None
    workspace: str | None = None
    reasoning_effort: str | None = None


def validate_adapter_opts(opts: Mapping[str, Any] | None) -> CodexOptions:
    """Check codex ``adapter_opts`` strictly (module docstring) and return them typed.

    Unknown keys or bad values -> ``AsmError("validation_error")`` with details
    ``{"field": "adapter_opts.<key>"}``.
    """
    root = ADAPTER_OPTS
    data = adapter_opts(opts, _KEYS)
    model = non_empty_string(data["model"], f"{root}.model") if "model" in data else None
    workspace = None
    if "workspace" in data:  # present means given: null is refused
        workspace = validate_workspace_option(data["workspace"], f"{root}.workspace")
    effort = None
    if "reasoning_effort" in data:
        effort = data["reasoning_effort"]
        if effort not in REASONING_EFFORTS:
            invalid(f"{root}.reasoning_effort", f"must be one of {', '.join(REASONING_EFFORTS)}")
    return CodexOptions(model=model, workspace=workspace, reasoning_effort=effort)


# --------------------------------------------------------------------------- prompt


def _printed(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _transcript_line(entry: Mapping[str, Any]) -> str | None:
    """One transcript entry as a plain-text line (seed 6.5), or None to drop it."""
    role = str(entry.get("role") or "user").strip().lower() or "user"
    content = entry.get("content")
    if content is not None and content != "":
        return f"{role}: {_printed(content)}"
    name = entry.get("tool_name")
    if not isinstance(name, str) or not name:
        return None
    call_id = entry.get("tool_call_id") or "unknown"
    if role == "assistant":
        tool_input = entry.get("tool_input")
        printed = _printed(tool_input if isinstance(tool_input, Mapping) else {})
        return f"assistant_tool_call({call_id}): {name} {printed}"
    output = entry.get("tool_output")
    return f"tool_result({call_id}): {name} {'' if output is None else _printed(output)}".rstrip()


def build_prompt(context: RunContext, *, resuming: bool) -> str:
    """The prompt codex gets (module docstring): [transcript lines, blank line] last user message.

    The session transcript is replayed only when not ``resuming`` (the thread has it). No
    user message -> ``validation_error``.
    """
    messages = list(context.messages)
    last = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"),
        None,
    )
    if last is None:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{NAME}: the run has no user message to send",
            {"field": "input.messages"},
        )
    lines: list[str] = []
    transcript = context.session_context.get("transcript")
    if not resuming and isinstance(transcript, list):
        converted = (_transcript_line(e) for e in transcript if isinstance(e, Mapping))
        lines.extend(line for line in converted if line)
    for message in messages[:last]:
        line = _transcript_line(message)
        if line:
            lines.append(line)
    prompt = messages[last]["content"]
    return "\n".join(lines) + "\n\n" + prompt if lines else prompt


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (for ``-c key=<value>``)."""
    # JSON escapes are TOML escapes; ensure_ascii=False avoids \\ud83d surrogate escapes,
    # which TOML rejects; DEL is the one control character JSON leaves raw.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


# --------------------------------------------------------------------------- usage


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def thread_totals(usage: object) -> dict[str, int]:
    """The known non-negative integer fields of a ``turn.completed`` ``usage`` object."""
    if not isinstance(usage, Mapping):
        return {}
    out: dict[str, int] = {}
    for key in _USAGE_FIELDS:
        n = _count(usage.get(key))
        if n is not None:
            out[key] = n
    return out


def usage_delta(
    current: Mapping[str, int], previous: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """This run's ``token_usage_updated`` payload: thread totals ``current`` minus the totals
    ``previous`` (the thread before this run; None: a new thread), never negative.

    ``input_tokens`` and ``output_tokens`` are always present; the cache and reasoning
    keys only when codex reported them.
    """
    prev = previous if isinstance(previous, Mapping) else {}
    out: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
    for source, target in _USAGE_KEYS.items():
        if source not in current:
            continue
        before = _count(prev.get(source)) or 0
        out[target] = max(0, current[source] - before)
    return out


# --------------------------------------------------------------------------- parser


@dataclass
class _Tool:
    call_id: str
    name: str
    input: dict[str, Any]
    aliases: dict[str, Any] = field(default_factory=dict)


def _tool_of(item: Mapping[str, Any]) -> _Tool | None:
    """The tool call an item stands for, or None when the item is not a tool."""
    kind = item.get("type")
    call_id = str(item.get("id") or "")
    if kind == "command_execution":
        command = item.get("command")
        return _Tool(call_id, "shell", {"command": command}, {"command": command})
    if kind == "file_change":
        changes = item.get("changes")
        return _Tool(
            call_id, "apply_patch", {"changes": changes if isinstance(changes, list) else []}
        )
    if kind == "web_search":
        action = item.get("action")
        query = item.get("query")
        if query is None and isinstance(action, Mapping):
            query = action.get("query")
        return _Tool(call_id, "web_search", {"query": query, "action": action})
    if kind == "mcp_tool_call":
        server, tool = item.get("server"), item.get("tool")
        arguments = item.get("arguments")
        tool_input = dict(arguments) if isinstance(arguments, Mapping) else {}
        if arguments is not None and not isinstance(arguments, Mapping):
            tool_input = {"arguments": arguments}
        return _Tool(
            call_id,
            f"mcp:{server}/{tool}",
            tool_input,
            {"server": server, "tool": tool, "arguments": arguments},
        )
    if kind == "collab_tool_call":
        tool = item.get("tool")
        return _Tool(
            call_id,
            f"collab:{tool}",
            {
                "prompt": item.get("prompt"),
                "receiver_thread_ids": item.get("receiver_thread_ids"),
            },
        )
    return None


def _tool_result(item: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``(tool_output, error)`` of a completed tool item; ``error`` None means success."""
    kind = item.get("type")
    status = item.get("status")
    if kind == "command_execution":
        exit_code = item.get("exit_code")
        output = {"output": item.get("aggregated_output") or "", "exit_code": exit_code}
        if status == "declined":
            return output, "command declined"
        if isinstance(exit_code, int) and exit_code != 0:
            return output, f"command exited with code {exit_code}"
        if status == "failed":
            return output, "command failed"
        return output, None
    if kind == "file_change":
        output = {"changes": item.get("changes") or []}
        return output, "patch failed" if status in ("failed", "declined") else None
    if kind == "mcp_tool_call":
        error = item.get("error")
        if isinstance(error, Mapping) or status in ("failed", "declined"):
            message = error.get("message") if isinstance(error, Mapping) else None
            return item.get("result"), str(message or f"tool call {status}")
        return item.get("result"), None
    if kind == "web_search":
        tool = _tool_of(item)
        return (dict(tool.input) if tool else {}), None
    output = {k: v for k, v in item.items() if k not in ("id", "type")}
    return output, f"tool call {status}" if status in ("failed", "declined") else None


class CodexJsonlParser:
    """Maps the lines of one ``codex exec --json`` process to normalized events. Pure.

    ``feed(line)`` takes one parsed JSONL object and returns the events it produces (module
    docstring); ``close()`` returns what is still pending at EOF. ``previous_usage`` is
    ``session_metadata["codex_thread_usage"]`` (``{thread_id: totals}``); the entry of this
    process's thread is what the thread had used before this run.
    """

    def __init__(self, previous_usage: Mapping[str, Any] | None = None) -> None:
        self._previous_usage = previous_usage if isinstance(previous_usage, Mapping) else {}
        self.thread_id: str | None = None
        self.messages: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.todo_list: list[Any] | None = None
        self.plan: str | None = None
        self.warnings: list[str] = []
        self.thread_usage: dict[str, int] | None = None  # cumulative, from turn.completed
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}  # this run
        self.completed = False
        self.failure: str | None = None  # turn.failed message
        self.lines = 0
        self._open: dict[str, _Tool] = {}
        self._pending_error: str | None = None

    # -- state

    @property
    def finished(self) -> bool:
        """A terminal line (``turn.completed`` or ``turn.failed``) was seen."""
        return self.completed or self.failure is not None

    @property
    def content(self) -> str:
        """The final reply: the last agent message ("" when there was none)."""
        return self.messages[-1] if self.messages else ""

    @property
    def last_error(self) -> str | None:
        """The last top-level ``error`` text not yet reported (a fatal one, at EOF)."""
        return self._pending_error

    # -- feeding

    def feed(self, line: Mapping[str, Any]) -> list[NormalizedEvent]:
        self.lines += 1
        kind = line.get("type")
        events: list[NormalizedEvent] = []
        if self._pending_error is not None:
            repeated = kind == "turn.failed" and self._error_text(line) == self._pending_error
            if not repeated:
                events.append(self._warning(self._pending_error))
            self._pending_error = None
        if kind == "thread.started":
            thread_id = line.get("thread_id")
            if isinstance(thread_id, str) and thread_id:
                self.thread_id = thread_id
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = line.get("item")
            if isinstance(item, Mapping):
                events.extend(self._item(str(kind), item))
        elif kind == "turn.completed":
            self.completed = True
            self.thread_usage = thread_totals(line.get("usage"))
            previous = self._previous_usage.get(self.thread_id or "")
            self.usage = usage_delta(self.thread_usage, previous)
            events.append((EventType.TOKEN_USAGE_UPDATED.value, dict(self.usage)))
        elif kind == "turn.failed":
            self.failure = self._error_text(line) or "turn failed"
        elif kind == "error":
            message = str(line.get("message") or "error")
            if message.startswith("Reconnecting"):
                events.append(self._warning(message))  # a retry notice is never fatal
            else:
                self._pending_error = message
        else:
            logger.debug("%s: ignoring line type %r", NAME, kind)
        return events

    def close(self) -> list[NormalizedEvent]:
        """At EOF: a pending top-level error stays pending (it is the failure) unless the
        turn finished, in which case it is reported as a warning."""
        if self._pending_error is not None and self.finished:
            message, self._pending_error = self._pending_error, None
            return [self._warning(message)]
        return []

    # -- helpers

    @staticmethod
    def _error_text(line: Mapping[str, Any]) -> str | None:
        error = line.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            return str(message) if message is not None else None
        return str(error) if error is not None else None

    def _warning(self, message: str) -> NormalizedEvent:
        self.warnings.append(message)
        mapped = error_from_text(NAME, message)
        data: dict[str, Any] = {
            "error_code": mapped.code,
            "error_message": message,
            "severity": "warning",
            "provider": NAME,
        }
        return (EventType.ERROR_OCCURRED.value, data)

    def _started(self, tool: _Tool) -> NormalizedEvent:
        self._open[tool.call_id] = tool
        data: dict[str, Any] = {
            "tool_call_id": tool.call_id,
            "tool_name": tool.name,
            "tool_input": dict(tool.input),
            "item_id": tool.call_id,
            **tool.aliases,
        }
        return (EventType.TOOL_CALL_STARTED.value, data)

    def _item(self, kind: str, item: Mapping[str, Any]) -> list[NormalizedEvent]:
        item_type = item.get("type")
        if item_type == "todo_list":
            items = item.get("items")
            self.todo_list = list(items) if isinstance(items, list) else []
            return []
        if item_type == "plan" and isinstance(item.get("text"), str):
            self.plan = item["text"]
            return []
        tool = _tool_of(item)
        if tool is not None:
            return self._tool_item(kind, item, tool)
        if kind != "item.completed":
            return []
        if item_type == "agent_message":
            text = item.get("text")
            text = text if isinstance(text, str) else ""
            self.messages.append(text)
            events: list[NormalizedEvent] = []
            if text:
                events.append((EventType.MESSAGE_STREAMED.value, {"delta": text, "content": text}))
            events.append(
                (
                    EventType.MESSAGE_RECEIVED.value,
                    {"content": text, "role": "assistant", "item_id": item.get("id")},
                )
            )
            return events
        if item_type == "reasoning":
            text = item.get("text")
            if isinstance(text, str) and text:
                self.reasoning.append(text)
            return []
        if item_type == "error":
            return [self._warning(str(item.get("message") or "error"))]
        logger.debug("%s: ignoring item type %r", NAME, item_type)
        return []

    def _tool_item(self, kind: str, item: Mapping[str, Any], tool: _Tool) -> list[NormalizedEvent]:
        events: list[NormalizedEvent] = []
        if kind == "item.started":
            if tool.call_id not in self._open:
                events.append(self._started(tool))
            return events
        if kind == "item.updated":
            return events
        if tool.call_id not in self._open:  # completed without a started line
            events.append(self._started(tool))
        started = self._open.pop(tool.call_id)
        output, error = _tool_result(item)
        data: dict[str, Any] = {
            "tool_call_id": tool.call_id,
            "tool_name": tool.name,
            "tool_input": dict(started.input),
            "tool_output": output,
            "item_id": tool.call_id,
            "status": item.get("status"),
            **tool.aliases,
        }
        record: dict[str, Any] = {
            "id": tool.call_id,
            "name": tool.name,
            "input": copy.deepcopy(started.input),
            "output": copy.deepcopy(output),
        }
        if error is None:
            events.append((EventType.TOOL_CALL_COMPLETED.value, data))
        else:
            data["is_error"] = True
            data["error"] = error
            record["error"] = error
            events.append((EventType.TOOL_CALL_FAILED.value, data))
        self.tool_calls.append(record)
        return events


# --------------------------------------------------------------------------- provider


def _default_binary() -> str:
    local = _PROJECT_ROOT / "node_modules" / ".bin" / "codex"
    return str(local) if local.is_file() else "codex"


class CodexProvider:
    """Runs ``codex exec --json`` per run (module docstring). Thread-safe: per-run state
    lives in locals; the configuration is read-only after construction."""

    name: str = NAME

    def __init__(
        self,
        *,
        binary: str | None = None,
        model: str | None = None,
        codex_home: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        sandbox: str | None = None,
        bypass_sandbox: bool | None = None,
        approval: str = DEFAULT_APPROVAL,
        extra_config: Sequence[str] = (),
        request_max_retries: int | None = None,
        stream_max_retries: int | None = None,
    ) -> None:
        self.binary = binary or env_str("ASM_CODEX_BIN") or _default_binary()
        self.binary_configured = bool(binary or env_str("ASM_CODEX_BIN"))
        self.model = model or env_str("ASM_CODEX_MODEL") or DEFAULT_MODEL
        home = codex_home or env_str("ASM_CODEX_HOME") or Path.home() / ".asm" / "codex"
        self.codex_home = Path(home).expanduser()
        self.api_key = api_key or env_str("CODEX_API_KEY") or env_str("OPENAI_API_KEY")
        self.base_url = base_url or env_str("ASM_CODEX_BASE_URL")
        self.sandbox = sandbox or env_str("ASM_CODEX_SANDBOX") or DEFAULT_SANDBOX
        self.bypass_sandbox = (
            bypass_sandbox if bypass_sandbox is not None else env_flag("ASM_CODEX_BYPASS_SANDBOX")
        )
        self.approval = approval
        self.extra_config = tuple(extra_config)
        self.request_max_retries = request_max_retries
        self.stream_max_retries = stream_max_retries

    # -- port

    def capabilities(self) -> list[Capability]:
        tool = CapabilityType.TOOL
        return [
            Capability(tool, "shell", description="codex's exec_command: shell commands"),
            Capability(tool, "apply_patch", description="File edits through patches"),
            Capability(tool, "web_search", description="Hosted web search (server side)"),
            Capability(
                CapabilityType.CODE_EXECUTION,
                "shell",
                description="Runs commands in the workspace under codex's sandbox policy",
            ),
            Capability(
                CapabilityType.FILE_ACCESS,
                "workspace",
                description="Reads and writes files in the run's workspace",
            ),
            Capability(
                CapabilityType.RESUME,
                "thread",
                description="Continues the codex thread (codex exec resume)",
            ),
            Capability(
                CapabilityType.CANCEL,
                "cancel",
                description="Kills the codex process group when cancelled",
            ),
            Capability(
                CapabilityType.THINKING,
                "reasoning_summaries",
                description="Reasoning summaries in output.reasoning",
            ),
        ]

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        validate_adapter_opts(opts)

    def validate_config(self) -> None:
        """The binary must be runnable and a key (or a ``codex login`` in codex_home) set."""
        self._binary()
        if self.sandbox not in SANDBOX_MODES:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: sandbox {self.sandbox!r} is not one of {', '.join(SANDBOX_MODES)} "
                "(set ASM_CODEX_SANDBOX)",
                {"provider": NAME, "field": "sandbox"},
            )
        if self.approval not in APPROVAL_POLICIES:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: approval {self.approval!r} is not one of {', '.join(APPROVAL_POLICIES)}",
                {"provider": NAME, "field": "approval"},
            )
        if not self.api_key and not (self.codex_home / "auth.json").is_file():
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: no API key: set CODEX_API_KEY or OPENAI_API_KEY "
                f"(or run `codex login` with CODEX_HOME={self.codex_home})",
                {"provider": NAME, "field": "api_key"},
            )

    def cancel(self, run_id: uuid.UUID) -> None:
        """No-op (idempotent): the run's cancel token, set by the executor, kills the process."""

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        opts = validate_adapter_opts(context.adapter_opts)
        self.validate_config()
        binary = self._binary()
        cancel_token.raise_if_cancelled()
        model = opts.model or self.model
        thread = context.provider_session_id
        prompt = build_prompt(context, resuming=bool(thread))
        previous_usage = context.session_metadata.get(USAGE_METADATA_KEY)
        if not isinstance(previous_usage, Mapping):
            previous_usage = {}
        self.codex_home.mkdir(mode=0o700, parents=True, exist_ok=True)

        with run_workspace(context, opts.workspace, temp_prefix="asm-codex-") as workspace:
            argv = self.build_argv(
                context, prompt=prompt, workspace=workspace, thread=thread, binary=binary
            )
            parser, outcome = self._run(argv, workspace, emit, cancel_token, previous_usage)
            if (
                thread
                and parser.lines == 0
                and not outcome.finished
                and _MISSING_THREAD in outcome.stderr_tail
            ):
                emit(
                    EventType.ERROR_OCCURRED.value,
                    {
                        "error_code": ErrorCode.PROVIDER_ERROR.value,
                        "error_message": f"{NAME}: thread {thread} not found in "
                        f"{self.codex_home}; starting a new thread from the transcript",
                        "severity": "warning",
                        "provider": NAME,
                    },
                )
                prompt = build_prompt(context, resuming=False)
                argv = self.build_argv(context, prompt=prompt, workspace=workspace, binary=binary)
                parser, outcome = self._run(argv, workspace, emit, cancel_token, previous_usage)

        if parser.failure is not None:
            raise self._failure(parser.failure, parser.thread_id)
        if not parser.finished:
            if parser.last_error is not None:
                raise self._failure(parser.last_error, parser.thread_id)
            outcome.raise_unless_finished()

        output: dict[str, Any] = {
            "content": parser.content,
            "stop_reason": _STOP_REASON,
            "tool_calls": parser.tool_calls,
            "thread_id": parser.thread_id,
        }
        if parser.reasoning:
            output["reasoning"] = "\n\n".join(parser.reasoning)
        if parser.todo_list is not None:
            output["todo_list"] = parser.todo_list
        if parser.plan is not None:
            output["plan"] = parser.plan
        session_metadata: dict[str, Any] = {}
        if parser.thread_id and parser.thread_usage is not None:
            remembered = {
                k: v
                for k, v in previous_usage.items()
                if isinstance(k, str) and k != parser.thread_id
            }
            remembered[parser.thread_id] = dict(parser.thread_usage)
            keep = list(remembered)[-MAX_REMEMBERED_THREADS:]
            session_metadata[USAGE_METADATA_KEY] = {k: remembered[k] for k in keep}
        return ProviderResult(
            output=output,
            token_usage=dict(parser.usage),
            stop_reason=_STOP_REASON,
            provider_session_id=parser.thread_id,
            model=model,
            session_metadata=session_metadata,
        )

    # -- helpers

    def _binary(self) -> str:
        try:
            return find_binary(NAME, self.binary, "codex")
        except AsmError as exc:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{NAME}: the codex CLI {self.binary!r} was not found or is not executable: "
                "run `npm ci` in the project root (installs node_modules/.bin/codex) or set "
                "ASM_CODEX_BIN",
                {"provider": NAME, "binary": self.binary, "field": "binary"},
            ) from exc

    def build_argv(
        self,
        context: RunContext,
        *,
        prompt: str,
        workspace: str,
        thread: str | None = None,
        binary: str | None = None,
    ) -> list[str]:
        """The codex command line of one run (module docstring); ``thread``: resume it.

        Never contains the API key (it travels in the child's environment).
        """
        opts = validate_adapter_opts(context.adapter_opts)
        model = opts.model or self.model
        binary = binary or self.binary
        config: list[str] = []
        if self.base_url:
            fields = [
                f"name={toml_string(PROVIDER_ID)}",
                f"base_url={toml_string(self.base_url)}",
                f"env_key={toml_string(KEY_ENV)}",
                'wire_api="responses"',
            ]
            if self.request_max_retries is not None:
                fields.append(f"request_max_retries={int(self.request_max_retries)}")
            if self.stream_max_retries is not None:
                fields.append(f"stream_max_retries={int(self.stream_max_retries)}")
            config.append(f"model_provider={toml_string(PROVIDER_ID)}")
            config.append(f"model_providers.{PROVIDER_ID}={{{', '.join(fields)}}}")
        if not self.bypass_sandbox:
            config.append(f"approval_policy={toml_string(self.approval)}")
            if thread:
                config.append(f"sandbox_mode={toml_string(self.sandbox)}")
        system_prompt = context.session_context.get("system_prompt")
        if isinstance(system_prompt, str) and system_prompt:
            config.append(f"developer_instructions={toml_string(system_prompt)}")
        if opts.reasoning_effort:
            config.append(f"model_reasoning_effort={toml_string(opts.reasoning_effort)}")
        config.extend(self.extra_config)

        argv = [binary, "exec"]
        if thread:
            argv += ["resume", thread]
        argv += ["--json", "--skip-git-repo-check"]
        if not thread:
            argv += ["-C", workspace]
        argv += ["-m", model]
        if self.bypass_sandbox:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        elif not thread:
            argv += ["-s", self.sandbox]
        for override in config:
            argv += ["-c", override]
        argv += ["--", prompt]
        return argv

    def _child_env(self) -> dict[str, str]:
        home = str(self.codex_home)
        env = child_env(("LANG",))
        env.setdefault("LANG", "C.UTF-8")
        env["HOME"] = home
        env["CODEX_HOME"] = home
        if self.api_key:
            env[KEY_ENV] = self.api_key
        return env

    def _run(
        self,
        argv: list[str],
        workspace: str,
        emit: Emit,
        cancel_token: CancelToken,
        previous_usage: Mapping[str, Any],
    ) -> tuple[CodexJsonlParser, CliOutcome]:
        parser = CodexJsonlParser(previous_usage)

        def on_line(line: dict[str, Any]) -> bool:
            for event_type, data in parser.feed(line):
                emit(event_type, data)
            return parser.finished

        outcome = run_jsonl(
            argv,
            provider=NAME,
            on_line=on_line,
            cancel_token=cancel_token,
            cwd=workspace,
            env=self._child_env(),
        )
        for event_type, data in parser.close():
            emit(event_type, data)
        return parser, outcome

    @staticmethod
    def _failure(message: str, thread_id: str | None) -> AsmError:
        error = error_from_text(NAME, message)
        if thread_id:
            error.details.setdefault("thread_id", thread_id)
        return error
