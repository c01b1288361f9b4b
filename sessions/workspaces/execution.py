"""The executor's workspace steps for a run with ``options.workspace`` (spec 7.5, asm order).

Plain Python (no Django): the executor calls these on the ``SessionStore`` port.

Invariants:

- ``workspace_run_start`` runs after ``run_started`` and BEFORE the provider is called. It
  resolves the directory (the CLI adapters' order: ``adapter_opts.workspace``, the
  session's ``workspace_path``, ``options.workspace.path``; ``options.workspace.path``
  naming another directory than the one the agent will use is refused), checks it against
  the workspace roots (``safety``), resolves the backend, refuses ``rollback_on_failure``
  on the hash backend, takes the ``before`` snapshot (git: kept at
  ``refs/asm/snapshots/<run_id>/before``) and appends ``workspace_snapshot_taken``. Any
  problem raises ``AsmError`` (``validation_error`` for bad input) and the executor fails
  the run without calling the provider.
- ``workspace_run_finish`` runs after the provider returned (whatever the outcome, except a
  lost lease): snapshot ``after`` (completed run) or ``after_failure`` (failed, cancelled,
  timed out), then diff (patch per ``capture_patch``/``max_patch_bytes``), then, for a run
  that did not complete with ``rollback_on_failure``, the rollback to ``before`` (safety
  ref ``refs/asm/safety/<run_id>``). It returns the events to append (in the run's last
  batch, before the terminal event), the run metadata ``workspace`` and, when a step
  failed, the error that replaces the run's outcome (spec 7.5: "any error in these steps
  replaces the original error"; a successful run then fails).
- Stored order of a workspace run: ``message_sent*, run_started,
  workspace_snapshot_taken(before), <provider events>, workspace_snapshot_taken(after),
  workspace_diff_computed, <terminal event>``.
- Run metadata ``workspace``: ``{backend, path, before_ref, after_ref, diff:
  {files_changed, insertions, deletions, changed_paths, files, patch?, patch_truncated,
  patch_bytes?}, rollback?}``; ``patch`` only when captured and within the cap;
  ``changed_paths`` and ``files`` list at most ``MAX_LISTED_PATHS`` entries
  (``paths_truncated`` says when more changed).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from asm_core.records import NewEvent
from asm_core.store import SessionStore
from runs.providers.base import RunContext
from sessions.workspaces.options import FIELD, WorkspaceOptions, workspace_options_parse
from sessions.workspaces.records import Backend, Diff, Snapshot, SnapshotLabel
from sessions.workspaces.safety import workspace_path_check
from sessions.workspaces.snapshots import (
    backend_resolve,
    snapshot_diff,
    snapshot_rollback,
    snapshot_take,
)

__all__ = [
    "MAX_LISTED_PATHS",
    "RunWorkspace",
    "WorkspaceRunEnd",
    "diff_event_data",
    "diff_metadata",
    "snapshot_event_data",
    "snapshot_ref_name",
    "workspace_run_finish",
    "workspace_run_start",
]

MAX_LISTED_PATHS = 1000


@dataclass(frozen=True)
class RunWorkspace:
    """What the executor carries from the start of a run to its end."""

    run_id: uuid.UUID
    provider: str
    options: WorkspaceOptions
    path: str
    backend: str
    before: Snapshot


@dataclass
class WorkspaceRunEnd:
    events: list[NewEvent] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: AsmError | None = None


def snapshot_ref_name(run_id: uuid.UUID | str, label: str) -> str:
    """Where a run's git snapshot is kept (private namespace, never a branch or tag)."""
    return f"refs/asm/snapshots/{run_id}/{label}"


def snapshot_event_data(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "label": snapshot.label or "",
        "backend": snapshot.backend,
        "ref": snapshot.ref,
        "path": snapshot.path,
    }


def diff_event_data(diff: Diff) -> dict[str, Any]:
    data: dict[str, Any] = {
        "files_changed": diff.files_changed,
        "insertions": diff.insertions,
        "deletions": diff.deletions,
        "has_patch": isinstance(diff.patch, str),
    }
    if diff.metadata.get("patch_truncated"):
        data["patch_truncated"] = True
    return data


def diff_metadata(diff: Diff) -> dict[str, Any]:
    summary = diff.summary()
    paths = summary["changed_paths"]
    data: dict[str, Any] = {
        **summary,
        "changed_paths": paths[:MAX_LISTED_PATHS],
        "files": [f.to_dict() for f in diff.files[:MAX_LISTED_PATHS]],
        **dict(diff.metadata),
    }
    if len(paths) > MAX_LISTED_PATHS:
        data["paths_truncated"] = True
    if diff.patch is not None:
        data["patch"] = diff.patch
    return data


def _directory(context: RunContext, options: WorkspaceOptions) -> tuple[str, str]:
    """The (field, value) naming the directory the agent works in (module docstring)."""
    candidates = (
        ("adapter_opts.workspace", context.adapter_opts.get("workspace")),
        ("session_context.workspace_path", context.session_context.get("workspace_path")),
        (f"{FIELD}.path", options.path),
    )
    for name, value in candidates:
        if value is not None and value != "":
            return name, value
    raise AsmError(
        ErrorCode.VALIDATION_ERROR,
        f"{FIELD}.path is required (or a session workspace_path)",
        {"field": f"{FIELD}.path"},
    )


def workspace_run_start(
    store: SessionStore,
    context: RunContext,
    *,
    provider: str,
    roots: Sequence[str] | None = None,
) -> RunWorkspace | None:
    """Check the workspace and take the ``before`` snapshot (None: no workspace option)."""
    options = workspace_options_parse(context.options.get("workspace"))
    if options is None or not options.enabled:
        return None
    name, value = _directory(context, options)
    path = workspace_path_check(value, name, roots)
    if options.path is not None and os.path.realpath(options.path) != path:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{FIELD}.path must name the directory the agent works in ({name})",
            {"field": f"{FIELD}.path"},
        )
    backend = backend_resolve(path, options.strategy, roots)
    if options.rollback_on_failure and backend == Backend.HASH:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "rollback_on_failure needs the git backend; this workspace is not a git work tree",
            {"field": f"{FIELD}.rollback_on_failure", "backend": backend},
        )
    label = SnapshotLabel.BEFORE.value
    try:
        before = snapshot_take(
            path, backend, label, ref_name=snapshot_ref_name(context.run_id, label)
        )
    except OSError as exc:  # an unreadable workspace directory
        raise AsmError(ErrorCode.STORAGE_ERROR, f"workspace snapshot failed: {exc}") from exc
    store.event_append_many(
        context.session_id,
        [
            NewEvent(
                type=EventType.WORKSPACE_SNAPSHOT_TAKEN,
                data=snapshot_event_data(before),
                run_id=context.run_id,
                provider=provider,
            )
        ],
    )
    return RunWorkspace(
        run_id=context.run_id,
        provider=provider,
        options=options,
        path=path,
        backend=backend,
        before=before,
    )


def workspace_run_finish(workspace: RunWorkspace, *, failed: bool) -> WorkspaceRunEnd:
    """Snapshot after the provider returned, diff, and roll back (module docstring)."""
    end = WorkspaceRunEnd(
        metadata={
            "backend": workspace.backend,
            "path": workspace.path,
            "before_ref": workspace.before.ref,
        }
    )
    options = workspace.options
    label = (SnapshotLabel.AFTER_FAILURE if failed else SnapshotLabel.AFTER).value
    try:
        after = snapshot_take(
            workspace.path,
            workspace.backend,
            label,
            ref_name=snapshot_ref_name(workspace.run_id, label),
        )
        end.events.append(_event(workspace, EventType.WORKSPACE_SNAPSHOT_TAKEN, after))
        end.metadata["after_ref"] = after.ref
        diff = snapshot_diff(
            workspace.before,
            after,
            capture_patch=options.capture_patch,
            max_patch_bytes=options.max_patch_bytes,
        )
        end.events.append(_event(workspace, EventType.WORKSPACE_DIFF_COMPUTED, diff))
        end.metadata["diff"] = diff_metadata(diff)
        if failed and options.rollback_on_failure:
            end.metadata["rollback"] = snapshot_rollback(
                workspace.before, after, safety_ref=f"refs/asm/safety/{workspace.run_id}"
            )
    except AsmError as exc:
        end.error = exc
    except OSError as exc:  # a file write during rollback, a vanished directory
        end.error = AsmError(ErrorCode.STORAGE_ERROR, f"workspace step failed: {exc}")
    if end.error is not None:
        end.metadata["error"] = {"code": end.error.code, "message": end.error.message}
    return end


def _event(workspace: RunWorkspace, type_: EventType, record: Snapshot | Diff) -> NewEvent:
    data: Mapping[str, Any] = (
        snapshot_event_data(record) if isinstance(record, Snapshot) else diff_event_data(record)
    )
    return NewEvent(type=type_, data=data, run_id=workspace.run_id, provider=workspace.provider)
