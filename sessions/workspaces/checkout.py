"""A new workspace directory checked out at a snapshot (for session fork, issue 7 item 6).

Plain Python (no Django).

Invariants:

- ``source_workspace`` and ``dest`` pass ``workspace_path_check`` (absolute, no ``..``,
  under the workspace roots, symlinks resolved); ``dest`` must not exist or be an empty
  directory, and its parent must exist. Otherwise ``validation_error`` and nothing is
  created.
- Only git snapshots can be checked out (a hash snapshot keeps no content):
  ``invalid_operation`` for a source that is not a git work tree; an unknown ref is
  ``not_found``; a commit that is not an asm snapshot is ``validation_error``.
- The source is never modified (it is cloned, read-only); on any failure ``dest`` is
  removed again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from sessions.workspaces.git import git_checkout_at, git_repo
from sessions.workspaces.safety import workspace_path_check

__all__ = ["FORK_DIR_ENV", "workspace_checkout_at", "workspace_fork_dest"]

#: Where forks' workspaces are created (default: next to the source workspace).
FORK_DIR_ENV = "ASM_WORKSPACE_FORK_DIR"


def workspace_fork_dest(
    source_workspace: str, session_id: uuid.UUID | str, *, roots: Sequence[str] | None = None
) -> str:
    """The directory a fork's workspace goes to: ``<dir>/<source name>-fork-<session_id>``,
    ``<dir>`` being ``ASM_WORKSPACE_FORK_DIR`` when set, else the source's parent directory.
    Checked like any workspace path (``validation_error`` outside the roots); not created.
    """
    source = workspace_path_check(source_workspace, "source_workspace", roots)
    base = os.environ.get(FORK_DIR_ENV) or os.path.dirname(source)
    dest = os.path.join(base, f"{os.path.basename(source)}-fork-{session_id}")
    return workspace_path_check(dest, "dest", roots, must_exist=False)


def workspace_checkout_at(
    source_workspace: str,
    snapshot_ref: str,
    dest: str,
    *,
    roots: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create ``dest`` as a git work tree holding snapshot ``snapshot_ref`` of
    ``source_workspace`` (the ``ref`` of a ``workspace_snapshot_taken`` event, or a ref name
    such as ``refs/asm/snapshots/<run_id>/after``).

    The new work tree is a clone of the source: its files are exactly the snapshot's
    (tracked and untracked ones), HEAD and its branch are where they were at the snapshot,
    its index is the snapshot's index, and ``refs/asm/forked-from`` names the snapshot.
    Returns ``{"path": <real dest>, "ref": <snapshot commit>, "head": <commit or None>,
    "branch": <"refs/heads/..." or None>, "tree": <tree id>}``.
    """
    source = workspace_path_check(source_workspace, "source_workspace", roots)
    if not isinstance(snapshot_ref, str) or not snapshot_ref.strip():
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "snapshot_ref must be a non-empty string",
            {"field": "snapshot_ref"},
        )
    if snapshot_ref.startswith("-"):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR, "snapshot_ref must not start with '-'", {"field": "ref"}
        )
    target = workspace_path_check(dest, "dest", roots, must_exist=False)
    if not os.path.isdir(os.path.dirname(target)):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"the parent directory of {dest!r} does not exist",
            {"field": "dest"},
        )
    if git_repo(source) is None:
        raise AsmError(
            ErrorCode.INVALID_OPERATION,
            "only git workspaces can be checked out at a snapshot",
            {"field": "source_workspace"},
        )
    return git_checkout_at(source, snapshot_ref, target)
