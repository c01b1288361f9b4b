"""The ``amp`` provider: Sourcegraph's Amp CLI in execute mode, ``amp --execute --stream-json``.

Plain Python (no Django). One CLI process per run, started through ``runs.providers.cli``
(stdin closed, own process group, killed as a group on cancel or exit). Amp has no local
model endpoint: the CLI talks to Amp's own server (``AMP_URL``), which runs the model.

Configuration (constructor keyword arguments; ``None`` reads the environment variable):

========================= ================================= ===================================
kwarg                     environment variable              meaning
========================= ================================= ===================================
``binary``                ``ASM_AMP_BIN``                   the CLI: a path or a name on PATH;
                                                            default ``amp`` on PATH, else
                                                            ``~/.amp/bin/amp``
``api_key``               ``AMP_API_KEY``                   required; given to the CLI in its
                                                            environment only, never in argv
``url``                   ``AMP_URL``                       Amp server (CLI default:
                                                            https://ampcode.com/)
``settings_file``         ``AMP_SETTINGS_FILE``             ``--settings-file`` (must exist)
``mode``                  ``ASM_AMP_MODE``                  ``--mode`` (low, medium, high,
                                                            ultra or a plugin mode); default:
                                                            the CLI's
``dangerously_allow_all`` ``ASM_AMP_DANGEROUSLY_ALLOW_ALL`` ``--dangerously-allow-all`` (1/true/
                                                            yes/on). Default **false**: Amp's
                                                            own permission rules apply, so
                                                            commands that would need a
                                                            confirmation are not run in execute
                                                            mode. True lets the agent run any
                                                            command in the workspace unasked:
                                                            only in a sandbox.
``workspace_roots``       ``ASM_WORKSPACE_ROOTS``           directories a run's workspace must
                                                            lie under (comma- or ``:``-
                                                            separated); empty: any directory
``env_passthrough``       ``ASM_AMP_ENV_PASSTHROUGH``       extra variable names (comma-
                                                            separated) copied from the worker's
                                                            environment to the CLI
``extra_env``             (kwarg only)                      a mapping of extra variables for
                                                            the CLI
========================= ================================= ===================================

The CLI gets a minimal environment (``cli.child_env``: PATH, proxy/CA variables, locale,
TZ, TMPDIR, login identity, then HOME and XDG directories, where Amp keeps its settings, then
``env_passthrough``, ``extra_env``, ``AMP_API_KEY``, ``AMP_URL``): the worker's own secrets
never reach the agent's shell. The constructor never raises; ``validate_config``
names what is missing.

``options.adapter_opts`` (strict: anything else is ``validation_error``):
``workspace`` (absolute path of an existing directory: the CLI's cwd), ``mode`` (overrides
the configured mode), ``labels`` (up to 20 thread labels, ``[A-Za-z0-9][A-Za-z0-9-]*``,
1..32 chars). The cwd follows ``workspace.run_workspace``: ``adapter_opts.workspace``, else
``session_context["workspace_path"]``, else ``options.workspace.path``, else a temporary
directory removed after the run; a configured one must lie under ``workspace_roots``.

argv (verified against the real CLI 0.0.1790142911's parser): ``amp [threads continue
<T-id>] --execute=<prompt> --stream-json [--dangerously-allow-all] [--mode M]
[--settings-file F] [--label L]...``. ``--execute=`` keeps a prompt that starts with ``-``
from being read as an option. ``threads continue <T-id>`` is used when
``context.provider_session_id`` is an Amp thread id (``T-<uuid>``): the thread holds the
history, so the prompt is the current user messages only. On a new thread the prompt is the
session's ``system_prompt``, the ``transcript`` (``<role>: <content>`` lines) and the current
user messages, separated by blank lines.

Event mapping (``AmpStreamParser``, pure; Amp prints whole messages, no partial text; the
usage arithmetic and the tool-call bookkeeping are ``stream_json``'s, shared with
``claude_code``):

- ``system/init``: thread id (``session_id``) -> ``provider_session_id``; tools, cwd noted.
- ``assistant``: its text blocks -> ``message_streamed {delta, content}`` (the whole text)
  and ``message_received {content, role}``; each ``tool_use`` -> ``tool_call_started``
  (``tool_call_id``/``tool_name``/``tool_input`` plus ``tool_use_id``/``input``);
  ``message.usage`` -> ``token_usage_updated`` with the increment since the last usage of
  the same message id (a message counted twice is never double counted).
- ``user`` ``tool_result`` -> ``tool_call_completed`` or, with ``is_error``,
  ``tool_call_failed``, carrying the started call's name and input.
- ``result`` with ``is_error`` false (success is judged by ``is_error``, never ``subtype``)
  finishes the run: output ``{content: result, stop_reason, tool_calls, num_turns,
  duration_ms}``; a ``result.usage`` larger than the per-message sum adds one last
  ``token_usage_updated`` for the difference.
- ``result`` with ``is_error`` true fails it with the message from ``error`` (not
  ``result``): ``error_max_turns`` -> ``provider_error``; otherwise the code
  ``errors.error_from_text`` finds; details carry ``subtype``, ``num_turns``, ``thread_id``.
- EOF without a result: the known Amp stderr lines (invalid API key, server unreachable) map
  to ``provider_authentication_failed`` / ``provider_unavailable``, anything else follows
  ``CliOutcome.raise_unless_finished`` (``provider_error`` "interrupted" on exit 0).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from runs.providers.cli import NODE_ENV, SESSION_ENV, CliOutcome, child_env, find_binary, run_jsonl
from runs.providers.errors import error_from_text, provider_error
from runs.providers.options import (
    ADAPTER_OPTS,
    adapter_opts,
    comma_list,
    env_flag,
    env_str,
    invalid,
)
from runs.providers.stream_json import (
    ToolCalls,
    UsageMeter,
    text_blocks,
    tool_result_blocks,
    usage_counts,
)
from runs.providers.workspace import (
    ROOTS_ENV,
    run_workspace,
    split_roots,
    validate_workspace_option,
)

__all__ = [
    "AmpOptions",
    "AmpProvider",
    "AmpStreamParser",
    "build_argv",
    "build_prompt",
    "is_thread_id",
    "validate_adapter_opts",
]

PROVIDER = "amp"

_THREAD_ID = re.compile(
    r"^T-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_MAX_LABELS = 20
_KEYS = ("workspace", "mode", "labels")
#: Amp keeps its settings and credentials under the worker's home: the child inherits it
#: (beyond ``cli.child_env``'s base and ``cli.SESSION_ENV``).
_HOME_ENV = (
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
)
#: Amp's own stderr lines for failures before any stream-json output (CLI 0.0.1790142911).
_STDERR_CODES: tuple[tuple[re.Pattern[str], ErrorCode], ...] = (
    (
        re.compile(r"invalid or missing api key|no api key found", re.IGNORECASE),
        ErrorCode.PROVIDER_AUTHENTICATION_FAILED,
    ),
    (
        re.compile(r"couldn't connect to the amp server|cannot reach amp servers", re.IGNORECASE),
        ErrorCode.PROVIDER_UNAVAILABLE,
    ),
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class AmpOptions:
    """Validated ``adapter_opts`` of the amp provider (see the module docstring)."""

    workspace: str | None = None
    mode: str | None = None
    labels: tuple[str, ...] = ()


def validate_adapter_opts(
    opts: Mapping[str, Any] | None, workspace_roots: Sequence[str] | None = None
) -> AmpOptions:
    """Check amp ``adapter_opts`` strictly and return them typed.

    Unknown keys or bad values -> ``AsmError("validation_error")`` with details
    ``{"field": "adapter_opts.<key>"}``. ``workspace`` must be absolute (and under one of
    ``workspace_roots`` when any are given; None: ``ASM_WORKSPACE_ROOTS``); whether it
    exists is checked when the run executes.
    """
    root = ADAPTER_OPTS
    data = adapter_opts(opts, _KEYS)

    workspace = data.get("workspace")
    if workspace is not None:
        workspace = validate_workspace_option(workspace, f"{root}.workspace", workspace_roots)

    mode = data.get("mode")
    if mode is not None and (
        not isinstance(mode, str) or not mode.strip() or mode.startswith("-") or len(mode) > 64
    ):
        invalid(f"{root}.mode", "must be a non-empty string (at most 64 chars, no leading '-')")

    labels: list[str] = []
    if "labels" in data:
        raw = data["labels"]
        if not isinstance(raw, list):
            invalid(f"{root}.labels", "must be a list of strings")
        if len(raw) > _MAX_LABELS:
            invalid(f"{root}.labels", f"must have at most {_MAX_LABELS} entries")
        for i, label in enumerate(raw):
            if not isinstance(label, str) or not _LABEL.match(label):
                invalid(
                    f"{root}.labels[{i}]",
                    "must be 1..32 chars of letters, digits and '-', starting alphanumeric",
                )
            labels.append(label)

    return AmpOptions(workspace=workspace, mode=mode, labels=tuple(labels))


def is_thread_id(value: object) -> bool:
    """True for an Amp thread id, ``T-<uuid>``."""
    return isinstance(value, str) and bool(_THREAD_ID.match(value))


# --------------------------------------------------------------------------- prompt, argv


def _transcript_text(transcript: object) -> str:
    if isinstance(transcript, str):
        return transcript.strip()
    if not isinstance(transcript, list):
        return ""
    lines: list[str] = []
    for item in transcript:
        if not isinstance(item, Mapping):
            continue
        content = item.get("content")
        if not isinstance(content, str) or not content:
            continue
        role = item.get("role")
        lines.append(f"{role if isinstance(role, str) and role else 'user'}: {content}")
    return "\n".join(lines)


def build_prompt(context: RunContext, *, resuming: bool) -> str:
    """The single prompt Amp gets (module docstring); no user message -> ``invalid_input``."""
    current = "\n".join(m["content"] for m in context.messages if m.get("role") == "user")
    if not current.strip():
        raise AsmError(
            ErrorCode.INVALID_INPUT,
            "amp: the run input has no user message (input.prompt or a user entry in "
            "input.messages)",
            {"field": "input", "provider": PROVIDER},
        )
    parts: list[str] = []
    if not resuming:
        system_prompt = context.session_context.get("system_prompt")
        if isinstance(system_prompt, str) and system_prompt.strip():
            parts.append(system_prompt.strip())
        transcript = _transcript_text(context.session_context.get("transcript"))
        if transcript:
            parts.append(transcript)
    parts.append(current)
    return "\n\n".join(parts)


def build_argv(
    binary: str,
    prompt: str,
    *,
    thread_id: str | None = None,
    dangerously_allow_all: bool = False,
    mode: str | None = None,
    settings_file: str | None = None,
    labels: Sequence[str] = (),
) -> list[str]:
    """The CLI's argv (module docstring). Never contains the API key."""
    argv = [binary]
    if thread_id is not None:
        argv += ["threads", "continue", thread_id]
    argv += [f"--execute={prompt}", "--stream-json"]
    if dangerously_allow_all:
        argv.append("--dangerously-allow-all")
    if mode:
        argv += ["--mode", mode]
    if settings_file:
        argv += ["--settings-file", settings_file]
    for label in labels:
        argv += ["--label", label]
    return argv


# --------------------------------------------------------------------------- parser


def _tool_output(content: object) -> str:
    """A ``tool_result``'s content as text: its text blocks joined with ``""``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_blocks(content))
    if content is None:
        return ""
    return str(content)


class AmpStreamParser:
    """Turns Amp stream-json lines into normalized events (module docstring).

    Pure: no I/O besides ``emit``. ``feed(line)`` returns True for the terminal ``result``
    line (the ``run_jsonl`` contract); lines after it are ignored. Afterwards ``failure`` is
    the ``AsmError`` of an error result (or None) and ``provider_result()`` builds the
    ``ProviderResult`` of a successful one. One parser per run.
    """

    def __init__(self, emit: Emit, provider: str = PROVIDER) -> None:
        self._emit = emit
        self.provider = provider
        self.thread_id: str | None = None
        self.model: str | None = None
        self.tools: list[str] = []
        self.cwd: str | None = None
        self.finished = False
        self.failure: AsmError | None = None
        self.result_text = ""
        self.stop_reason: str | None = None
        self.num_turns: int | None = None
        self.duration_ms: int | None = None
        self.permission_denials: list[Any] = []
        self._usage = UsageMeter(emit)
        self._tools = ToolCalls()

    @property
    def usage(self) -> dict[str, int]:
        """The sum of the ``token_usage_updated`` increments emitted so far."""
        return self._usage.total

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """``{"id", "name", "input"}`` per started call (and per unmatched result), in
        order; ``output`` and ``is_error`` once its result arrived."""
        records: list[dict[str, Any]] = []
        for call in self._tools.calls:
            record: dict[str, Any] = {"id": call.id, "name": call.name, "input": call.input}
            if call.is_error is not None:
                record.update(output=call.output, is_error=call.is_error)
            records.append(record)
        return records

    # ------------------------------------------------------------------ feeding
    def feed(self, line: Mapping[str, Any]) -> bool:
        """Handle one stream-json object; True when it was the terminal ``result``."""
        if self.finished:
            return False
        session_id = line.get("session_id")
        if self.thread_id is None and isinstance(session_id, str) and session_id:
            self.thread_id = session_id
        kind = line.get("type")
        if kind == "system":
            self._system(line)
        elif kind == "assistant":
            self._assistant(line)
        elif kind == "user":
            self._user(line)
        elif kind == "result":
            self._result(line)
            return True
        return False

    def _system(self, line: Mapping[str, Any]) -> None:
        if line.get("subtype") != "init":
            return
        session_id = line.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.thread_id = session_id
        tools = line.get("tools")
        if isinstance(tools, list):
            self.tools = [t for t in tools if isinstance(t, str)]
        cwd = line.get("cwd")
        self.cwd = cwd if isinstance(cwd, str) else self.cwd
        model = line.get("model")
        if isinstance(model, str) and model:
            self.model = model

    def _extras(self, line: Mapping[str, Any]) -> dict[str, Any]:
        parent = line.get("parent_tool_use_id")
        return {"parent_tool_use_id": parent} if isinstance(parent, str) and parent else {}

    def _assistant(self, line: Mapping[str, Any]) -> None:
        message = line.get("message")
        if not isinstance(message, Mapping):
            return
        model = message.get("model")
        if isinstance(model, str) and model:
            self.model = model
        stop_reason = message.get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason:
            self.stop_reason = stop_reason
        extras = self._extras(line)
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        text = "".join(text_blocks(blocks))
        if text:
            self._emit(EventType.MESSAGE_STREAMED.value, {"delta": text, "content": text, **extras})
            self._emit(
                EventType.MESSAGE_RECEIVED.value,
                {"content": text, "role": "assistant", **extras},
            )
        for block in blocks:
            if isinstance(block, Mapping) and block.get("type") == "tool_use":
                self._tool_use(block, extras)
        if "usage" in message and isinstance(message.get("usage"), Mapping):
            message_id = message.get("id")
            self._usage.message(
                message_id if isinstance(message_id, str) else None,
                usage_counts(message["usage"]),
            )

    def _tool_use(self, block: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        call_id = block.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else f"amp_tool_{uuid.uuid4()}"
        name = block.get("name")
        name = name if isinstance(name, str) and name else "unknown"
        raw_input = block.get("input")
        tool_input = raw_input if isinstance(raw_input, Mapping) else {}
        payload = self._tools.start(call_id, name, tool_input)
        self._emit(EventType.TOOL_CALL_STARTED.value, {**payload, **extras})

    def _user(self, line: Mapping[str, Any]) -> None:
        extras = self._extras(line)
        for block in tool_result_blocks(line):
            raw_id = block.get("tool_use_id")
            call_id = raw_id if isinstance(raw_id, str) and raw_id else "unknown"
            output = _tool_output(block.get("content"))
            event_type, data = self._tools.finish(
                call_id, output, is_error=block.get("is_error") is True
            )
            self._emit(event_type, {**data, "content": output, **extras})

    def _result(self, line: Mapping[str, Any]) -> None:
        self.finished = True
        session_id = line.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.thread_id = self.thread_id or session_id
        num_turns = line.get("num_turns")
        self.num_turns = num_turns if isinstance(num_turns, int) else None
        duration = line.get("duration_ms")
        self.duration_ms = duration if isinstance(duration, int) else None
        denials = line.get("permission_denials")
        self.permission_denials = list(denials) if isinstance(denials, list) else []
        if isinstance(line.get("usage"), Mapping):
            self._usage.settle(usage_counts(line["usage"]))
        stop_reason = line.get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason:
            self.stop_reason = stop_reason
        if line.get("is_error") is True:
            self.failure = self._failure(line)
            return
        result = line.get("result")
        self.result_text = result if isinstance(result, str) else ""

    def _failure(self, line: Mapping[str, Any]) -> AsmError:
        subtype = line.get("subtype")
        raw = line.get("error")
        if not isinstance(raw, str) or not raw.strip():
            fallback = line.get("result")
            raw = fallback if isinstance(fallback, str) and fallback.strip() else "Unknown error"
        details: dict[str, Any] = {
            "subtype": subtype if isinstance(subtype, str) else None,
            "num_turns": self.num_turns,
            "duration_ms": self.duration_ms,
            "thread_id": self.thread_id,
        }
        if self.permission_denials:
            details["permission_denials"] = self.permission_denials
        if subtype == "error_max_turns":
            return provider_error(
                self.provider,
                f"maximum number of turns reached: {raw}",
                code=ErrorCode.PROVIDER_ERROR,
                **details,
            )
        error = _error_from_text(self.provider, raw)
        error.details.update({k: v for k, v in details.items() if v is not None})
        return error

    # ------------------------------------------------------------------ outcome
    def provider_result(self) -> ProviderResult:
        """The ``ProviderResult`` of a successful run (call after a non-error ``result``)."""
        if self.failure is not None:
            raise self.failure
        stop_reason = self.stop_reason or "end_turn"
        output: dict[str, Any] = {
            "content": self.result_text,
            "stop_reason": stop_reason,
            "tool_calls": [dict(c) for c in self.tool_calls],
            "num_turns": self.num_turns,
            "duration_ms": self.duration_ms,
        }
        if self.permission_denials:
            output["permission_denials"] = list(self.permission_denials)
        return ProviderResult(
            output=output,
            token_usage=dict(self.usage),
            stop_reason=stop_reason,
            provider_session_id=self.thread_id,
            model=self.model,
        )


# --------------------------------------------------------------------------- provider


def _known_code(text: str) -> ErrorCode | None:
    for pattern, code in _STDERR_CODES:
        if pattern.search(text):
            return code
    return None


def _error_from_text(provider: str, text: str) -> AsmError:
    """Amp's own well-known failure lines first, then ``errors.error_from_text``."""
    code = _known_code(text)
    if code is not None:
        return provider_error(provider, text.strip()[-2000:], code=code)
    return error_from_text(provider, text)


def _raise_unfinished(outcome: CliOutcome) -> None:
    """EOF without a result: Amp's known stderr lines first, then the shared rule."""
    if outcome.finished:
        return
    text = outcome.stderr_tail.strip()
    if outcome.exit_code != 0 and text and _known_code(text) is not None:
        error = _error_from_text(outcome.provider, text)
        error.details["exit_code"] = outcome.exit_code
        raise error
    outcome.raise_unless_finished()


class AmpProvider:
    """Runs the Amp CLI per run (module docstring). Thread-safe: per-run state is local."""

    name: str = PROVIDER

    def __init__(
        self,
        *,
        binary: str | None = None,
        api_key: str | None = None,
        url: str | None = None,
        settings_file: str | None = None,
        mode: str | None = None,
        dangerously_allow_all: bool | None = None,
        workspace_roots: Sequence[str] | str | None = None,
        env_passthrough: Sequence[str] | str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary or env_str("ASM_AMP_BIN")
        self.api_key = api_key or env_str("AMP_API_KEY")
        self.url = url or env_str("AMP_URL")
        self.settings_file = settings_file or env_str("AMP_SETTINGS_FILE")
        self.mode = mode or env_str("ASM_AMP_MODE")
        self.dangerously_allow_all = (
            dangerously_allow_all
            if dangerously_allow_all is not None
            else env_flag("ASM_AMP_DANGEROUSLY_ALLOW_ALL")
        )
        roots = workspace_roots if workspace_roots is not None else env_str(ROOTS_ENV) or ""
        self.workspace_roots = split_roots(roots) if isinstance(roots, str) else tuple(roots)
        passthrough = (
            env_passthrough
            if env_passthrough is not None
            else env_str("ASM_AMP_ENV_PASSTHROUGH") or ""
        )
        self.env_passthrough = (
            tuple(comma_list(passthrough)) if isinstance(passthrough, str) else tuple(passthrough)
        )
        self.extra_env = {str(k): str(v) for k, v in (extra_env or {}).items()}

    # ------------------------------------------------------------------ protocol
    def capabilities(self) -> list[Capability]:
        tools = "one of Amp's built-in tools; the run's system/init lists the exact set"
        return [
            Capability(CapabilityType.TOOL, "Bash", description=f"Shell commands ({tools})"),
            Capability(CapabilityType.TOOL, "Read", description=f"Reads files ({tools})"),
            Capability(CapabilityType.TOOL, "edit_file", description=f"Edits files ({tools})"),
            Capability(CapabilityType.TOOL, "web_search", description=f"Web search ({tools})"),
            Capability(
                CapabilityType.CODE_EXECUTION,
                "amp_bash",
                description="Runs shell commands in the run's workspace",
            ),
            Capability(
                CapabilityType.FILE_ACCESS,
                "amp_files",
                description="Reads and edits files in the run's workspace",
            ),
            Capability(
                CapabilityType.NETWORK_ACCESS,
                "amp_web",
                description="Web search and page reads through Amp's server",
            ),
            Capability(
                CapabilityType.RESUME,
                "amp_threads",
                description="Continues the Amp thread of the session's previous amp run",
            ),
            Capability(
                CapabilityType.CANCEL,
                "cancel",
                description="Kills the CLI's process group when the run is cancelled",
            ),
        ]

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        validate_adapter_opts(opts, self.workspace_roots)

    def validate_config(self) -> None:
        """The CLI must be found and ``AMP_API_KEY`` set (``validation_error`` otherwise)."""
        self._binary_path()
        if not self.api_key:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "amp: no API key: set AMP_API_KEY (an Amp access token)",
                {"provider": PROVIDER, "setting": "AMP_API_KEY"},
            )
        if self.settings_file and not Path(self.settings_file).expanduser().is_file():
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"amp: settings file {self.settings_file!r} not found: fix AMP_SETTINGS_FILE",
                {"provider": PROVIDER, "setting": "AMP_SETTINGS_FILE"},
            )

    def cancel(self, run_id: uuid.UUID) -> None:
        """No-op (idempotent): the run's cancel token kills the CLI's process group."""

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        opts = validate_adapter_opts(context.adapter_opts, self.workspace_roots)
        self.validate_config()
        binary = self._binary_path()
        cancel_token.raise_if_cancelled()

        thread_id: str | None = None
        previous = context.provider_session_id
        if previous is not None:
            if is_thread_id(previous):
                thread_id = previous
            else:
                emit(
                    EventType.ERROR_OCCURRED.value,
                    {
                        "error_code": ErrorCode.VALIDATION_ERROR.value,
                        "error_message": (
                            f"amp: ignoring provider_session_id {previous!r}: not an Amp "
                            "thread id (T-<uuid>); starting a new thread"
                        ),
                    },
                )
        prompt = build_prompt(context, resuming=thread_id is not None)
        argv = build_argv(
            binary,
            prompt,
            thread_id=thread_id,
            dangerously_allow_all=self.dangerously_allow_all,
            mode=opts.mode or self.mode,
            settings_file=(
                str(Path(self.settings_file).expanduser()) if self.settings_file else None
            ),
            labels=opts.labels,
        )
        parser = AmpStreamParser(emit)
        with run_workspace(
            context, opts.workspace, temp_prefix="asm-amp-", roots=self.workspace_roots
        ) as cwd:
            outcome = run_jsonl(
                argv,
                provider=PROVIDER,
                on_line=parser.feed,
                cancel_token=cancel_token,
                cwd=cwd,
                env=self._env(),
            )
        if parser.failure is not None:
            raise parser.failure
        _raise_unfinished(outcome)
        return parser.provider_result()

    # ------------------------------------------------------------------ helpers
    def _binary_path(self) -> str:
        if self.binary:
            configured = os.path.expanduser(self.binary)
            try:
                return find_binary(PROVIDER, configured, "amp")
            except AsmError as exc:
                raise AsmError(
                    ErrorCode.VALIDATION_ERROR,
                    f"amp: CLI {self.binary!r} not found or not executable: fix ASM_AMP_BIN",
                    {**exc.details, "setting": "ASM_AMP_BIN"},
                ) from exc
        try:
            return find_binary(PROVIDER, None, "amp")
        except AsmError as exc:
            fallback = Path.home() / ".amp" / "bin" / "amp"
            if fallback.is_file() and os.access(fallback, os.X_OK):
                return str(fallback)
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "amp: the Amp CLI was not found (not on PATH, not ~/.amp/bin/amp): "
                "set ASM_AMP_BIN to its path (npm package @ampcode/cli)",
                {**exc.details, "setting": "ASM_AMP_BIN"},
            ) from exc

    def _env(self) -> dict[str, str]:
        env = child_env(SESSION_ENV, NODE_ENV, _HOME_ENV, self.env_passthrough)
        env.update(self.extra_env)
        if self.api_key:
            env["AMP_API_KEY"] = self.api_key
        if self.url:
            env["AMP_URL"] = self.url
        return env
