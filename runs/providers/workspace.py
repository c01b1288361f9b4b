"""The run's working directory for the CLI adapters (claude_code, codex, amp).

Plain Python (no Django); only ``asm_core`` and ``runs.providers``. One rule for every CLI
adapter, so a run lands in the same directory whichever provider executes it.

Invariants:

- The configured workspace is the first non-empty one of, in this order:
  ``adapter_opts.workspace``, ``session_context["workspace_path"]``,
  ``options["workspace"]["path"]`` (skipped when ``options.workspace.enabled`` is false).
  A later one is never looked at once an earlier one is set.
- The chosen value must be a path (``str`` or ``os.PathLike``; ``~`` is expanded) of an
  existing directory and, when workspace roots are given, lie under one of them (symlinks
  resolved on both sides). Otherwise ``validation_error`` with details ``{"field": <where
  the value came from>}``, raised before any process starts.
- ``adapter_opts.workspace`` is also checked when the run is submitted
  (``validate_workspace_option``): a non-empty string, an absolute path, under the roots;
  whether it exists is checked when the run executes.
- Nothing configured: the adapter's fallback. ``run_workspace`` makes a fresh temporary
  directory and removes it when the run ends, whatever the outcome; a configured directory
  is never removed. (Claude Code keeps a per-session directory instead: its own module.)
- Workspace roots (``ASM_WORKSPACE_ROOTS``) are comma- or ``:``-separated; none means any
  directory. Every check takes ``roots=None`` to mean "the roots of the environment", so all
  CLI adapters apply the same roots unless an adapter was configured with its own. A user
  who can submit runs can choose the agent's working directory: a shared deployment sets
  the roots.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from runs.providers.base import RunContext
from runs.providers.options import invalid, non_empty_string

__all__ = [
    "ROOTS_ENV",
    "configured_workspace",
    "default_roots",
    "run_workspace",
    "split_roots",
    "under_roots",
    "validate_workspace_option",
]

#: The environment variable listing the directories a workspace must lie under.
ROOTS_ENV = "ASM_WORKSPACE_ROOTS"

_OUTSIDE_ROOTS = "must lie under one of the workspace roots"


def split_roots(value: str) -> tuple[str, ...]:
    """Workspace roots from their comma- or ``:``-separated text (blank items dropped)."""
    return tuple(p.strip() for p in re.split(r"[,:]", value) if p.strip())


def default_roots() -> tuple[str, ...]:
    """The workspace roots of the environment (``ASM_WORKSPACE_ROOTS``)."""
    return split_roots(os.environ.get(ROOTS_ENV, ""))


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """True when ``path`` is one of ``roots`` or below one (symlinks resolved)."""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def validate_workspace_option(value: object, field: str, roots: Sequence[str] | None = None) -> str:
    """``adapter_opts.workspace`` at submit time: non-empty, absolute, under ``roots``
    (None: ``default_roots()``)."""
    roots = default_roots() if roots is None else roots
    workspace = non_empty_string(value, field)
    if not os.path.isabs(workspace):
        invalid(field, "must be an absolute path")
    if roots and not under_roots(workspace, roots):
        invalid(field, _OUTSIDE_ROOTS)
    return workspace


def _candidates(context: RunContext, option: object) -> list[tuple[str, object]]:
    candidates: list[tuple[str, object]] = [
        ("adapter_opts.workspace", option),
        ("session_context.workspace_path", context.session_context.get("workspace_path")),
    ]
    workspace = context.options.get("workspace")
    if isinstance(workspace, Mapping) and workspace.get("enabled", True) is not False:
        candidates.append(("options.workspace.path", workspace.get("path")))
    return candidates


def configured_workspace(
    context: RunContext, option: object, roots: Sequence[str] | None = None
) -> str | None:
    """The configured directory of the run (module docstring), checked; None: none is set.

    ``option`` is the run's validated ``adapter_opts.workspace`` (None when not given);
    ``roots`` None means ``default_roots()``.
    """
    roots = default_roots() if roots is None else roots
    for field, value in _candidates(context, option):
        if value is None or value == "":
            continue
        if not isinstance(value, str | os.PathLike):
            invalid(field, "must be a path")
        path = str(Path(value).expanduser())
        if not os.path.isdir(path):
            invalid(field, f"{path!r} is not an existing directory")
        if roots and not under_roots(path, roots):
            invalid(field, _OUTSIDE_ROOTS)
        return path
    return None


@contextlib.contextmanager
def run_workspace(
    context: RunContext, option: object, *, temp_prefix: str, roots: Sequence[str] | None = None
) -> Iterator[str]:
    """The run's working directory: the configured one, else a temporary directory
    (``temp_prefix``) that is removed when the ``with`` block ends."""
    chosen = configured_workspace(context, option, roots)
    if chosen is not None:
        yield chosen
        return
    temp = tempfile.mkdtemp(prefix=temp_prefix)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)
