"""Backend selection and the backend-neutral snapshot, diff and rollback calls (spec 7.1-7.4).

Plain Python (no Django).

Invariants:

- ``backend_resolve``: ``auto`` is ``git`` when the directory is the top of a git work tree
  and ``hash`` otherwise (any failure: ``hash``); ``git`` on anything else is
  ``validation_error``; a git directory (``.git`` or where its gitfile points) outside the
  workspace roots is ``validation_error`` (a run must not write into a repository outside
  them).
- Diffing snapshots of different backends, or git snapshots of different paths, is
  ``validation_error``. Rolling back a hash snapshot is ``invalid_operation``; a snapshot
  pair of the wrong backend is ``validation_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from runs.providers.workspace import under_roots
from sessions.workspaces.git import (
    DEFAULT_MAX_PATCH_BYTES,
    git_diff,
    git_repo,
    git_rollback,
    git_snapshot,
)
from sessions.workspaces.hash import hash_diff, hash_rollback, hash_snapshot
from sessions.workspaces.records import Backend, Diff, Snapshot
from sessions.workspaces.safety import workspace_roots

__all__ = ["backend_resolve", "snapshot_diff", "snapshot_rollback", "snapshot_take"]


def backend_resolve(path: str, strategy: str = "auto", roots: Sequence[str] | None = None) -> str:
    """The backend (``git`` or ``hash``) for the checked real directory ``path``."""
    if strategy == Backend.HASH:
        return Backend.HASH.value
    if strategy not in ("auto", Backend.GIT):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"unknown workspace strategy {strategy!r}",
            {"field": "options.workspace.strategy"},
        )
    repo = git_repo(path)
    if repo is None:
        if strategy == Backend.GIT:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{path!r} is not the top of a git work tree (strategy git)",
                {"field": "options.workspace.strategy"},
            )
        return Backend.HASH.value
    chosen = workspace_roots(roots)
    if chosen and not under_roots(repo.gitdir, chosen):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "the workspace's git directory lies outside the workspace roots",
            {"field": "options.workspace.path"},
        )
    return Backend.GIT.value


def snapshot_take(
    path: str,
    backend: str,
    label: str | None = None,
    *,
    ref_name: str | None = None,
    ignore: Sequence[str] | None = None,
) -> Snapshot:
    """A snapshot of ``path`` with ``backend`` (git: kept at ``ref_name`` when given)."""
    if backend == Backend.GIT:
        return git_snapshot(path, label, ref_name=ref_name, ignore=ignore)
    return hash_snapshot(path, label, ignore=ignore)


def snapshot_diff(
    before: Snapshot,
    after: Snapshot,
    *,
    capture_patch: bool = False,
    max_patch_bytes: int = DEFAULT_MAX_PATCH_BYTES,
) -> Diff:
    if before.backend != after.backend:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "cannot diff snapshots of different backends",
            {"backends": [before.backend, after.backend]},
        )
    if before.backend == Backend.GIT:
        return git_diff(before, after, capture_patch=capture_patch, max_patch_bytes=max_patch_bytes)
    return hash_diff(before, after)


def snapshot_rollback(before: Snapshot, after: Snapshot, *, safety_ref: str) -> dict[str, Any]:
    """Restore ``before`` (``after``: the current state, kept at ``safety_ref``)."""
    if before.backend == Backend.HASH:
        hash_rollback(before)
    if before.backend != Backend.GIT or after.backend != Backend.GIT:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "rollback needs two git snapshots",
            {"backends": [before.backend, after.backend]},
        )
    return git_rollback(before, after, safety_ref=safety_ref)
