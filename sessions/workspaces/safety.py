"""Which directories a run may snapshot, diff and roll back (issue 7, item 5).

Plain Python (no Django). The roots are the CLI adapters' (``runs.providers.workspace``:
``ASM_WORKSPACE_ROOTS``, comma- or ``:``-separated), checked with the same ``under_roots``,
so a run's agent and its snapshots are confined to the same directories.

Invariants:

- ``workspace_path_check`` accepts only a non-empty string naming an ABSOLUTE path with no
  ``..`` segment and no NUL byte, whose real path (every symlink resolved) is one of the
  roots or lies below one; with ``must_exist`` it must also be an existing directory. It
  returns that real path, and callers work on the real path only (a symlink swapped later
  cannot redirect them). Anything else is ``validation_error`` with details
  ``{"field": field}``, raised before anything touches the directory.
- No roots configured means any directory (the single-user default of
  ``runs.providers.workspace``); ``..`` segments, relative paths and non-directories are
  refused either way.
- ``path_inside`` is the check file writers inside a workspace use (rollback, checkout):
  the parent directory of what they write must resolve inside the workspace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from asm_core.errors import AsmError, ErrorCode
from runs.providers.workspace import default_roots, under_roots

__all__ = ["path_inside", "workspace_path_check", "workspace_roots"]


def workspace_roots(roots: Sequence[str] | None = None) -> tuple[str, ...]:
    """``roots``, or the environment's (``ASM_WORKSPACE_ROOTS``) when None."""
    return default_roots() if roots is None else tuple(roots)


def _invalid(field: str, problem: str) -> AsmError:
    return AsmError(ErrorCode.VALIDATION_ERROR, f"{field} {problem}", {"field": field})


def workspace_path_check(
    value: object,
    field: str,
    roots: Sequence[str] | None = None,
    *,
    must_exist: bool = True,
) -> str:
    """The real path of a workspace directory a run names (module docstring)."""
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field, "must be a non-empty string")
    if "\x00" in value:
        raise _invalid(field, "must not contain a NUL byte")
    if not os.path.isabs(value):
        raise _invalid(field, "must be an absolute path")
    if ".." in value.replace(os.sep, "/").split("/"):
        raise _invalid(field, "must not contain '..'")
    chosen = workspace_roots(roots)
    real = os.path.realpath(value)
    if chosen and not under_roots(real, chosen):
        raise _invalid(field, "must lie under one of the workspace roots (ASM_WORKSPACE_ROOTS)")
    if must_exist and not os.path.isdir(real):
        raise _invalid(field, f"{value!r} is not an existing directory")
    return real


def path_inside(root: str, path: str) -> bool:
    """True when ``path`` (symlinks resolved) is ``root`` or below it; ``root`` is real."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
