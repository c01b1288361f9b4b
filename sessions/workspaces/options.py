"""The run option ``options.workspace`` (architecture 5.1, spec 7), checked strictly.

Plain Python (no Django).

Shape: ``{"enabled": bool, "path": str, "strategy": "auto"|"git"|"hash", "capture_patch":
bool, "max_patch_bytes": int, "rollback_on_failure": bool}``; every key optional. The option
being present means enabled (``"enabled": false`` disables it, the other keys are still
checked). ``backend`` is accepted as another name for ``strategy`` (both given: they must
agree).

Invariants:

- Unknown keys, wrong types and unknown strategies are ``validation_error`` with details
  ``{"field": "options.workspace.<key>"}`` (the seed treated an unknown strategy as
  ``auto``; asm refuses it).
- Defaults: strategy ``auto``, ``capture_patch`` true, ``max_patch_bytes`` 1 048 576
  (0 .. ``MAX_PATCH_BYTES_LIMIT``), ``rollback_on_failure`` false.
- ``rollback_on_failure`` with strategy ``hash`` is refused when parsed (at submit); with
  ``auto`` resolving to hash it is refused when the run executes, before the provider is
  called (spec 7.5 step 1).
- ``workspace_option_validate`` (submit time) also checks ``path`` against the workspace
  roots (absolute, no ``..``, symlinks resolved; its existence is checked when the run
  executes) and that it names the same directory as ``adapter_opts.workspace`` when both
  are given (the agent must work where the snapshots are taken).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from sessions.workspaces.git import DEFAULT_MAX_PATCH_BYTES
from sessions.workspaces.safety import workspace_path_check

__all__ = [
    "MAX_PATCH_BYTES_LIMIT",
    "STRATEGIES",
    "WorkspaceOptions",
    "workspace_option_validate",
    "workspace_options_parse",
]

FIELD = "options.workspace"
STRATEGIES = ("auto", "git", "hash")
MAX_PATCH_BYTES_LIMIT = 16 * 1024 * 1024
_KEYS = (
    "enabled",
    "path",
    "strategy",
    "backend",
    "capture_patch",
    "max_patch_bytes",
    "rollback_on_failure",
)


@dataclass(frozen=True)
class WorkspaceOptions:
    enabled: bool = True
    path: str | None = None
    strategy: str = "auto"
    capture_patch: bool = True
    max_patch_bytes: int = DEFAULT_MAX_PATCH_BYTES
    rollback_on_failure: bool = False


def _invalid(key: str, problem: str) -> AsmError:
    field = f"{FIELD}.{key}" if key else FIELD
    return AsmError(ErrorCode.VALIDATION_ERROR, f"{field} {problem}", {"field": field})


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, "must be a boolean")
    return value


def workspace_options_parse(value: object) -> WorkspaceOptions | None:
    """``options.workspace`` as ``WorkspaceOptions`` (None when absent); module docstring."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _invalid("", "must be an object")
    unknown = sorted(str(k) for k in value if k not in _KEYS)
    if unknown:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{FIELD} has unknown key(s): {', '.join(unknown)} (allowed: {', '.join(_KEYS)})",
            {"field": f"{FIELD}.{unknown[0]}", "unsupported": unknown, "supported": list(_KEYS)},
        )
    path = value.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise _invalid("path", "must be a non-empty string")
    strategies = {k: value[k] for k in ("strategy", "backend") if value.get(k) is not None}
    for key, chosen in strategies.items():
        if chosen not in STRATEGIES:
            raise _invalid(key, f"must be one of {', '.join(STRATEGIES)}")
    if len(set(strategies.values())) > 1:
        raise _invalid("backend", "must agree with options.workspace.strategy")
    limit = value.get("max_patch_bytes", DEFAULT_MAX_PATCH_BYTES)
    if (
        not isinstance(limit, int)
        or isinstance(limit, bool)
        or not 0 <= limit <= MAX_PATCH_BYTES_LIMIT
    ):
        raise _invalid("max_patch_bytes", f"must be an integer from 0 to {MAX_PATCH_BYTES_LIMIT}")
    options = WorkspaceOptions(
        enabled=_bool(value, "enabled", True),
        path=path,
        strategy=next(iter(strategies.values()), "auto"),
        capture_patch=_bool(value, "capture_patch", True),
        max_patch_bytes=limit,
        rollback_on_failure=_bool(value, "rollback_on_failure", False),
    )
    if options.rollback_on_failure and options.strategy == "hash":
        raise _invalid(
            "rollback_on_failure", "needs the git backend (the hash backend cannot roll back)"
        )
    return options


def workspace_option_validate(
    options: Mapping[str, Any], roots: Sequence[str] | None = None
) -> WorkspaceOptions | None:
    """Submit-time check of ``options["workspace"]`` (module docstring)."""
    parsed = workspace_options_parse(options.get("workspace"))
    if parsed is None or not parsed.enabled or parsed.path is None:
        return parsed
    real = workspace_path_check(parsed.path, f"{FIELD}.path", roots, must_exist=False)
    adapter_opts = options.get("adapter_opts")
    agent_dir = adapter_opts.get("workspace") if isinstance(adapter_opts, Mapping) else None
    if isinstance(agent_dir, str) and agent_dir and os.path.realpath(agent_dir) != real:
        raise _invalid("path", "must name the same directory as adapter_opts.workspace")
    return parsed
