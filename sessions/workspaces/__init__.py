"""Workspace snapshots (spec 7; issue 7 items 4, 5): git and hash backends, diff, rollback.

Plain Python (no Django, no ORM) except ``services`` (import it explicitly): the run
executor imports ``execution`` and works on the ``SessionStore`` port. See
``docs/workspaces.md``.

Modules: ``records`` (Snapshot, Diff, skip list), ``safety`` (workspace roots), ``hash``
and ``git`` (the backends), ``snapshots`` (``auto`` detection, backend-neutral calls),
``options`` (``options.workspace``), ``execution`` (the executor's steps), ``checkout``
(``workspace_checkout_at``, for fork), ``services`` (session-level snapshot and run undo).
"""

from __future__ import annotations

from sessions.workspaces.checkout import workspace_checkout_at, workspace_fork_dest
from sessions.workspaces.execution import workspace_run_finish, workspace_run_start
from sessions.workspaces.options import (
    WorkspaceOptions,
    workspace_option_validate,
    workspace_options_parse,
)
from sessions.workspaces.records import Backend, Diff, FileChange, Snapshot, SnapshotLabel
from sessions.workspaces.safety import workspace_path_check
from sessions.workspaces.snapshots import (
    backend_resolve,
    snapshot_diff,
    snapshot_rollback,
    snapshot_take,
)

__all__ = [
    "Backend",
    "Diff",
    "FileChange",
    "Snapshot",
    "SnapshotLabel",
    "WorkspaceOptions",
    "backend_resolve",
    "snapshot_diff",
    "snapshot_rollback",
    "snapshot_take",
    "workspace_checkout_at",
    "workspace_fork_dest",
    "workspace_option_validate",
    "workspace_options_parse",
    "workspace_path_check",
    "workspace_run_finish",
    "workspace_run_start",
]
