"""Workspace services outside a run: a snapshot on request, and undoing a finished run.

Uses the ORM (import this module explicitly; the rest of ``sessions.workspaces`` is plain
Python). Events go through ``events.services.event_append`` (the only event writer).

Invariants:

- ``workspace_snapshot_take`` checks the path like a run's (roots, no ``..``, symlinks
  resolved), snapshots it with the resolved backend (git: kept at
  ``refs/asm/snapshots/session-<session_id>/<uuid>``) and appends one
  ``workspace_snapshot_taken {label: "manual", backend, ref, path}`` to the session (no
  run), so a later fork at or after that sequence can start from it.
- ``workspace_run_undo`` puts a finished run's git workspace back to the run's ``before``
  snapshot. It is refused (``invalid_operation``, nothing changed) for a run that is not
  finished, has no git workspace record, was already rolled back, or while the session has
  a running run (the agent would be working in that directory); and, unless ``force``, when
  the workspace changed since the run ended (its files differ from the run's ``after``
  snapshot: undoing would also undo that later work). The state it replaces is kept (a
  ``before_undo`` snapshot and the safety ref ``refs/asm/safety/<run_id>-undo``), and one
  ``workspace_snapshot_taken {label: "before_undo", ..., undo_of_run, restored_ref}`` is
  appended to the session without a run id (nothing of a run is written after its
  terminal event).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from asm_core.errors import AsmError, ErrorCode, run_not_found, session_not_found
from asm_core.event_types import EventType
from asm_core.lifecycle import RUN_TERMINAL, RunStatus
from events.services import event_append
from runs.models import Run
from sessions.models import Session
from sessions.services import Actor, actor_metadata
from sessions.workspaces.execution import snapshot_event_data, snapshot_ref_name
from sessions.workspaces.git import git_keep, git_snapshot_load
from sessions.workspaces.records import Backend, Snapshot, SnapshotLabel
from sessions.workspaces.safety import workspace_path_check
from sessions.workspaces.snapshots import backend_resolve, snapshot_rollback, snapshot_take

__all__ = ["workspace_run_undo", "workspace_snapshot_take"]


def workspace_snapshot_take(
    *, session_id: uuid.UUID, path: str, strategy: str = "auto", actor: Actor = None
) -> Snapshot:
    """Snapshot a session's workspace now; record it in the session's log."""
    if not Session.objects.filter(id=session_id).exists():
        raise session_not_found(session_id)
    real = workspace_path_check(path, "path")
    backend = backend_resolve(real, strategy)
    ref_name = snapshot_ref_name(f"session-{session_id}", str(uuid.uuid4()))
    snapshot = snapshot_take(real, backend, SnapshotLabel.MANUAL.value, ref_name=ref_name)
    event_append(
        session_id=session_id,
        type=EventType.WORKSPACE_SNAPSHOT_TAKEN.value,
        data=snapshot_event_data(snapshot),
        metadata=actor_metadata(actor),
    )
    return snapshot


def _refused(message: str, **details: Any) -> AsmError:
    return AsmError(ErrorCode.INVALID_OPERATION, message, details)


def workspace_run_undo(
    *, run_id: uuid.UUID, force: bool = False, actor: Actor = None
) -> dict[str, Any]:
    """Restore the workspace a finished run changed to the state before that run.

    Returns ``{run_id, snapshot, restored_ref, safety_ref, restored, removed,
    head_restored, index_restored}`` (``snapshot``: the ``before_undo`` snapshot's ref).
    """
    run = Run.objects.filter(id=run_id).first()
    if run is None:
        raise run_not_found(run_id)
    if RunStatus(run.status) not in RUN_TERMINAL:
        raise _refused("only a finished run can be undone", status=run.status)
    record = run.metadata.get("workspace") if isinstance(run.metadata, Mapping) else None
    if (
        not isinstance(record, Mapping)
        or record.get("backend") != Backend.GIT
        or not isinstance(record.get("before_ref"), str)
        or not isinstance(record.get("path"), str)
    ):
        raise _refused("the run has no git workspace snapshot to go back to")
    if "rollback" in record:
        raise _refused("the run's workspace was already rolled back")
    if Run.objects.filter(session_id=run.session_id, status=RunStatus.RUNNING).exists():
        raise _refused("the session has a running run; undo after it ends")
    path = workspace_path_check(record["path"], "path")
    before = git_snapshot_load(path, record["before_ref"], SnapshotLabel.BEFORE.value)
    after_ref = record.get("after_ref")
    label = SnapshotLabel.BEFORE_UNDO.value
    current = snapshot_take(path, Backend.GIT.value, label)
    if not force and isinstance(after_ref, str):
        after = git_snapshot_load(path, after_ref)
        if after.metadata["tree"] != current.metadata["tree"]:
            raise _refused(
                "the workspace changed since the run ended; undo with force to discard that too",
                after_ref=after_ref,
            )
    git_keep(path, snapshot_ref_name(run.id, label), current.ref)  # the state being replaced
    result = snapshot_rollback(before, current, safety_ref=f"refs/asm/safety/{run.id}-undo")
    event_append(
        session_id=run.session_id,
        type=EventType.WORKSPACE_SNAPSHOT_TAKEN.value,
        data={
            **snapshot_event_data(current),
            "undo_of_run": str(run.id),
            "restored_ref": before.ref,
        },
        metadata=actor_metadata(actor),
    )
    return {"run_id": str(run.id), "snapshot": current.ref, "restored_ref": before.ref, **result}
