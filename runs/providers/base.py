"""The provider port: capabilities, negotiation, the run context, cancel token and protocol.

Plain Python: no Django, no ORM (adapters never touch the database); only ``asm_core``
and ``runs.telemetry`` (the OpenTelemetry API: ``RunContext.trace``).

Invariants:

- A ``Capability`` is valid on construction: a non-empty ``name`` and a ``type`` from
  ``CapabilityType`` (empty name or missing type -> ``validation_error``; unknown type ->
  ``invalid_capability_type``).
- ``negotiate`` follows spec section 10.2: only **enabled** capabilities count, matching is
  by type (a requirement given as ``{"type", "name"}`` additionally needs that name), a
  missing required capability fails fast with ``missing_required_capability``, a missing
  optional one makes the result ``degraded`` with one warning each.
- ``input_messages`` is the one implementation of the input-message rules (spec 5.5 step 6):
  the executor writes ``message_sent`` events from it and adapters read the same list from
  ``RunContext.messages``.
- A provider's ``execute`` emits normalized events only (``message_streamed``,
  ``message_received``, ``tool_call_*``, ``token_usage_updated``, ``error_occurred``); the
  executor writes ``run_started`` and the terminal run events. Failure is an ``AsmError``
  carrying a taxonomy code; stopping because of the cancel token is
  ``AsmError("cancelled")``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, Self, runtime_checkable

from asm_core.errors import AsmError, ErrorCode
from runs.telemetry import NO_TRACE, RunTrace

__all__ = [
    "CancelToken",
    "Capability",
    "CapabilityType",
    "Emit",
    "Negotiation",
    "Provider",
    "ProviderResult",
    "RunContext",
    "ToolGuard",
    "capabilities_of_type",
    "has_capability",
    "input_messages",
    "negotiate",
    "parse_requirement",
    "provider_session_id_for",
]


# --------------------------------------------------------------------------- capabilities


class CapabilityType(StrEnum):
    """Capability types: the seed's seven (spec 10.1) plus four asm additions.

    asm additions (what a provider can do for the run itself, used by routing and the API):

    - ``streaming``: emits ``message_streamed`` deltas while the reply is produced.
    - ``cancel``: stops a run in flight when its cancel token is set (not only between turns).
    - ``resume``: continues a provider-side conversation given ``provider_session_id``.
    - ``thinking``: can expose extended reasoning / thinking output.
    """

    TOOL = "tool"
    RESOURCE = "resource"
    PROMPT = "prompt"
    SAMPLING = "sampling"
    FILE_ACCESS = "file_access"
    NETWORK_ACCESS = "network_access"
    CODE_EXECUTION = "code_execution"
    # asm additions
    STREAMING = "streaming"
    CANCEL = "cancel"
    RESUME = "resume"
    THINKING = "thinking"


_CAPABILITY_TYPES: frozenset[str] = frozenset(str(t) for t in CapabilityType)


def _capability_type(value: object) -> CapabilityType:
    """``value`` as a ``CapabilityType``; missing -> validation_error, unknown -> invalid."""
    if value is None or value == "":
        raise AsmError(ErrorCode.VALIDATION_ERROR, "Capability type is required", {"field": "type"})
    if not isinstance(value, str) or value not in _CAPABILITY_TYPES:
        raise AsmError(
            ErrorCode.INVALID_CAPABILITY_TYPE,
            f"Invalid capability type: {value!r}",
            {"type": value if isinstance(value, str) else repr(value)},
        )
    return CapabilityType(value)


@dataclass(frozen=True)
class Capability:
    """One thing a provider can do (spec 10.1). ``type`` is stored as a ``CapabilityType``."""

    type: str
    name: str
    enabled: bool = True
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "Capability name must be a non-empty string",
                {"field": "name"},
            )
        object.__setattr__(self, "type", _capability_type(self.type))
        if not isinstance(self.enabled, bool):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "Capability enabled must be a bool",
                {"field": "enabled"},
            )
        if self.description is not None and not isinstance(self.description, str):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "Capability description must be a string or null",
                {"field": "description"},
            )

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "name", "enabled", "description"}`` with ``type`` as a plain string."""
        return {
            "type": str(self.type),
            "name": self.name,
            "enabled": self.enabled,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from ``to_dict()`` output; ``enabled`` defaults to true."""
        if not isinstance(data, Mapping):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR, "Invalid capability", {"field": "capability"}
            )
        return cls(
            type=data.get("type"),  # type: ignore[arg-type]  # validated in __post_init__
            name=data.get("name"),  # type: ignore[arg-type]  # validated in __post_init__
            enabled=data.get("enabled", True),
            description=data.get("description"),
        )


def parse_requirement(entry: object) -> tuple[str, str | None]:
    """A capability requirement as ``(type, name | None)``.

    ``entry`` is a type string (or ``CapabilityType``), a ``Capability``, or a mapping
    ``{"type": ..., "name"?: ...}``. Unknown type -> ``invalid_capability_type``; a mapping
    without a type, a non-string name or any other shape -> ``validation_error``.
    """
    if isinstance(entry, Capability):
        return str(entry.type), entry.name
    if isinstance(entry, str):
        return str(_capability_type(entry)), None
    if isinstance(entry, Mapping):
        type_ = str(_capability_type(entry.get("type")))
        name = entry.get("name")
        if name is None:
            return type_, None
        if not isinstance(name, str) or not name:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "Capability requirement name must be a non-empty string",
                {"field": "name"},
            )
        return type_, name
    raise AsmError(
        ErrorCode.VALIDATION_ERROR,
        f"Invalid capability requirement: {entry!r}",
        {"requirement": repr(entry)},
    )


def _label(requirement: tuple[str, str | None]) -> str:
    type_, name = requirement
    return type_ if name is None else f"{type_}:{name}"


def capabilities_of_type(capabilities: Iterable[Capability], type_: str) -> list[Capability]:
    """The **enabled** capabilities of ``type_``, in order."""
    return [c for c in capabilities if c.enabled and c.type == type_]


def has_capability(capabilities: Iterable[Capability], type_: str, name: str | None = None) -> bool:
    """True when an enabled capability has ``type_`` (and ``name``, when one is given)."""
    return any(
        c.enabled and c.type == type_ and (name is None or c.name == name) for c in capabilities
    )


@dataclass(frozen=True)
class Negotiation:
    """The result of ``negotiate``: ``status`` is ``"full"`` or ``"degraded"``.

    Set members are requirement labels: the type (``"tool"``) or, for a name-qualified
    requirement, ``"<type>:<name>"`` (``"tool:bash"``).
    """

    status: str
    supported: frozenset[str]
    unsupported: frozenset[str]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "supported": sorted(self.supported),
            "unsupported": sorted(self.unsupported),
            "warnings": list(self.warnings),
        }


def _requirements(entries: Iterable[object] | str) -> set[tuple[str, str | None]]:
    if isinstance(entries, str | Mapping | Capability):
        entries = [entries]
    return {parse_requirement(e) for e in entries}


def negotiate(
    capabilities: Iterable[Capability],
    required: Iterable[object] = (),
    optional: Iterable[object] = (),
) -> Negotiation:
    """Negotiate ``required`` and ``optional`` capabilities against a provider's (spec 10.2).

    Every requirement is parsed first (unknown type -> ``invalid_capability_type``). Disabled
    capabilities are ignored. A missing required capability raises
    ``AsmError("missing_required_capability")`` whose message lists the missing labels,
    comma-separated and sorted, with details ``{"missing": [...]}``.
    """
    required_set = _requirements(required)
    optional_set = _requirements(optional)
    enabled = [c for c in capabilities if c.enabled]
    enabled_types = {str(c.type) for c in enabled}
    enabled_pairs = {(str(c.type), c.name) for c in enabled}

    def met(requirement: tuple[str, str | None]) -> bool:
        type_, name = requirement
        return type_ in enabled_types if name is None else (type_, name) in enabled_pairs

    missing = sorted(_label(r) for r in required_set if not met(r))
    if missing:
        raise AsmError(
            ErrorCode.MISSING_REQUIRED_CAPABILITY,
            f"Missing required capabilities: {', '.join(missing)}",
            {"missing": missing},
        )
    supported = frozenset(_label(r) for r in required_set | optional_set if met(r))
    unsupported = frozenset(_label(r) for r in optional_set if not met(r))
    warnings = tuple(
        f"Optional capability '{label}' is not supported by the provider"
        for label in sorted(unsupported)
    )
    return Negotiation(
        status="degraded" if unsupported else "full",
        supported=supported,
        unsupported=unsupported,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- cancel token


class CancelToken:
    """A thread-safe, one-way cancellation flag (wraps ``threading.Event``).

    The executor sets it (on a cancel request, a policy cancel or a timeout); the adapter
    checks it between provider events and uses ``wait`` for every pause, so a pause ends
    as soon as the token is set.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Set the token (idempotent)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds (``None``: forever); True if cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        """Raise ``AsmError("cancelled", "Run was cancelled")`` once the token is set."""
        if self._event.is_set():
            raise AsmError(ErrorCode.CANCELLED, "Run was cancelled")

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"


# --------------------------------------------------------------------------- run context


def _message_content(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def input_messages(input: Mapping[str, Any]) -> list[dict[str, str]]:
    """The run input as ``[{"role", "content"}]`` (spec 5.5, input-message persistence rules).

    - ``input["messages"]`` is a list: one message per element that is a mapping, in order.
      ``role``: a non-blank string, stripped and lowercased; otherwise ``"user"``.
      ``content``: a string as-is; ``None`` -> skipped; a dict or list -> ``json.dumps``;
      anything else -> ``str()``. Empty content (``""``) -> skipped.
    - else ``input["prompt"]`` is a non-empty string: one ``user`` message.
    - else no messages.
    """
    messages = input.get("messages")
    if isinstance(messages, list):
        out: list[dict[str, str]] = []
        for item in messages:
            if not isinstance(item, Mapping):
                continue
            raw = item.get("content")
            if raw is None:
                continue
            content = _message_content(raw)
            if content == "":
                continue
            role = item.get("role")
            role_text = role.strip().lower() if isinstance(role, str) else ""
            out.append({"role": role_text or "user", "content": content})
        return out
    prompt = input.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}]
    return []


#: ``tool_guard(tool_name, tool_input)`` -> None (allowed) or the refusal reason.
ToolGuard = Callable[[str, Mapping[str, Any]], "str | None"]


def provider_session_id_for(session_metadata: Mapping[str, Any], provider: str) -> str | None:
    """The provider-side session (thread) id a run of ``provider`` may resume: the one an
    earlier run of the SAME provider left in the session's metadata (``provider_session_ids``
    by provider; the plain ``provider_session_id`` counts only when that provider wrote it)."""
    ids = session_metadata.get("provider_session_ids")
    if isinstance(ids, Mapping) and isinstance(ids.get(provider), str):
        return str(ids[provider])
    if session_metadata.get("provider") == provider:
        value = session_metadata.get("provider_session_id")
        return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True)
class RunContext:
    """Everything an adapter needs to execute one run attempt (no ORM objects).

    ``input`` is the normalized run input; ``messages`` is ``input_messages(input)``;
    ``options`` are the run options; ``adapter_opts`` is ``options["adapter_opts"]``;
    ``session_context`` may carry ``transcript`` when continuation is on.
    """

    run_id: uuid.UUID
    session_id: uuid.UUID
    attempt: int
    input: dict[str, Any]
    messages: tuple[dict[str, str], ...]
    options: dict[str, Any] = field(default_factory=dict)
    adapter_opts: dict[str, Any] = field(default_factory=dict)
    session_context: dict[str, Any] = field(default_factory=dict)
    session_metadata: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None
    provider_session_id: str | None = None
    #: Asked before an adapter runs a tool itself (the ``claude`` tool loop): returns None to
    #: allow, or the reason the tool is refused (``tool_permission_denied``). Set by the
    #: executor from the run's policies; None allows everything.
    tool_guard: ToolGuard | None = None
    #: The run's spans (``runs.telemetry``; ``NO_TRACE`` when nothing records). The executor
    #: opens the one provider attempt of a plain provider; a provider that tries others
    #: (the router, ``traces_attempts = True``) opens one ``trace.attempt_start`` per try.
    trace: RunTrace = NO_TRACE

    @classmethod
    def build(
        cls,
        *,
        run_id: uuid.UUID,
        session_id: uuid.UUID,
        input: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        attempt: int = 1,
        session_context: Mapping[str, Any] | None = None,
        session_metadata: Mapping[str, Any] | None = None,
        provider_session_id: str | None = None,
    ) -> Self:
        """Build a context from a run's stored fields.

        ``messages`` comes from ``input_messages``; ``adapter_opts`` and ``timeout_ms`` are
        read from ``options``. ``adapter_opts`` that is not an object, or a ``timeout_ms``
        that is not a non-negative int, is a ``validation_error``.
        """
        opts = dict(options or {})
        adapter_opts = opts.get("adapter_opts")
        if adapter_opts is None:
            adapter_opts = {}
        if not isinstance(adapter_opts, Mapping):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "options.adapter_opts must be an object",
                {"field": "options.adapter_opts"},
            )
        timeout_ms = opts.get("timeout_ms")
        if timeout_ms is not None and (
            not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms < 0
        ):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                "options.timeout_ms must be a non-negative integer",
                {"field": "options.timeout_ms"},
            )
        run_input = dict(input)
        return cls(
            run_id=run_id,
            session_id=session_id,
            attempt=attempt,
            input=run_input,
            messages=tuple(input_messages(run_input)),
            options=opts,
            adapter_opts=dict(adapter_opts),
            session_context=dict(session_context or {}),
            session_metadata=dict(session_metadata or {}),
            timeout_ms=timeout_ms,
            provider_session_id=provider_session_id,
        )


# --------------------------------------------------------------------------- protocol

#: How an adapter reports one normalized event: ``emit(event_type, data)``.
Emit = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class ProviderResult:
    """What a successful ``execute`` returns (the run's output and usage)."""

    output: dict[str, Any]
    token_usage: dict[str, Any]
    stop_reason: str | None = None
    provider_session_id: str | None = None
    model: str | None = None
    #: Keys merged into the session's metadata after the run (top-level merge), for state
    #: an adapter needs on the session's next run (e.g. codex's thread-cumulative usage).
    session_metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Keys merged into the RUN's metadata (top-level merge), e.g. the router's ``routing``
    #: decision; ``routing.routed_provider`` also sets the run's ``routed_provider``.
    run_metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """A provider adapter. Implementations must be safe to share between threads:
    one instance executes many runs concurrently (per-run state lives in locals).
    """

    name: str

    def capabilities(self) -> list[Capability]:
        """What this provider can do (used by negotiation, routing and the API)."""
        ...

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        """Run one attempt, reporting normalized events through ``emit`` as they happen.

        Emits ``message_streamed``, ``message_received``, ``tool_call_*``,
        ``token_usage_updated`` and ``error_occurred`` only: never ``run_started`` or a
        terminal run event (the executor writes those). Raises ``AsmError`` with a taxonomy
        code on failure, and ``AsmError("cancelled")`` when it stopped because
        ``cancel_token`` was set.
        """
        ...

    def cancel(self, run_id: uuid.UUID) -> None:
        """Best-effort, idempotent stop of ``run_id`` (the executor also sets the token)."""
        ...

    def validate_config(self) -> None:
        """Raise ``AsmError("validation_error")`` naming what is missing; else return."""
        ...

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        """Raise ``AsmError("validation_error")`` for bad ``options.adapter_opts``.

        Called when a run is submitted, so bad options are refused before anything is
        stored (and checked again when the run executes).
        """
        ...
