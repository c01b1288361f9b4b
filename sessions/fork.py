"""Session fork (`POST /api/v1/sessions/{id}/fork {at_sequence}`): a new session whose history
is the source's up to a point.

Invariants:
- The fork's events 1..k are copies of the source's events 1..k (k = ``at_sequence``): same
  type, data, provider and sequence number, new ids, no run (the source's runs stay the
  source's; each copy's metadata names its original under ``forked_from``: event id, run
  id, timestamp). Event k+1 is ``session_forked {source_session_id, at_sequence}``. So the
  fork's transcript up to k is the source's.
- The fork is a new ``pending`` session of the same owner and agent, with the source as its
  ``parent_session``, the source's context and tags, and its metadata minus the provider
  thread state (``PROVIDER_STATE_KEYS``): a provider thread holds history past k, so the
  fork's first continuation run replays the transcript instead of resuming that thread.
- The source is only read: nothing of it changes.
- All of it is one transaction: the fork exists with its whole history or not at all.
- ``at_sequence`` must be an int from 0 to the source's last sequence, else
  ``validation_error`` (nothing written).
- Workspace: when the source has a ``workspace_snapshot_taken`` event at or before k, the
  fork gets a new workspace directory checked out at the nearest such snapshot
  (``fork_workspace``, through `sessions.workspaces`): its ``context.workspace_path``, and
  ``forked_from.workspace`` in its metadata and in the ``session_forked`` data say what
  was done. The source's workspace is only read. A fork that fails removes the directory
  it checked out.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from asm_core.errors import AsmError, ErrorCode, session_not_found
from asm_core.event_types import EventType
from asm_core.records import NewEvent
from events.models import Event
from events.selectors import event_list
from events.services import event_append_many
from runs.models import Run
from sessions.models import Session
from sessions.services import Actor, actor_metadata

#: Session metadata a provider adapter keeps for resuming its own thread; a fork drops them.
PROVIDER_STATE_KEYS = frozenset(
    {"provider_session_id", "provider_session_ids", "codex_thread_usage", "claude_code"}
)
_PAGE = 1000


def _validate_at(at_sequence: object, last_sequence: int) -> int:
    if (
        not isinstance(at_sequence, int)
        or isinstance(at_sequence, bool)
        or not 0 <= at_sequence <= last_sequence
    ):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"at_sequence must be an integer from 0 to {last_sequence} (the session's last "
            "sequence number)",
            {"field": "at_sequence", "last_sequence": last_sequence},
        )
    return at_sequence


def _copy(event: Event) -> NewEvent:
    origin = {
        "event_id": str(event.id),
        "run_id": str(event.run_id) if event.run_id else None,
        "timestamp": event.timestamp.isoformat(),
    }
    return NewEvent(
        type=event.type,
        data=event.data,
        metadata={**event.metadata, "forked_from": origin},
        provider=event.provider,
    )


def session_fork(*, session_id: uuid.UUID, at_sequence: int, actor: Actor = None) -> Session:
    """Fork the session at ``at_sequence``; return the new session."""
    checked_out: list[str] = []
    try:
        return _fork(session_id, at_sequence, actor, checked_out)
    except BaseException:
        for path in checked_out:  # the fork was not stored: neither is its workspace
            shutil.rmtree(path, ignore_errors=True)
        raise


def _fork(session_id: uuid.UUID, at_sequence: int, actor: Actor, checked_out: list[str]) -> Session:
    with transaction.atomic():
        source = Session.objects.filter(id=session_id).first()
        if source is None:
            raise session_not_found(session_id)
        k = _validate_at(at_sequence, source.last_sequence)
        now = timezone.now()
        metadata = {k_: v for k_, v in source.metadata.items() if k_ not in PROVIDER_STATE_KEYS}
        fork = Session.objects.create(
            agent_id=source.agent_id,
            owner_id=source.owner_id,
            context=dict(source.context),
            metadata=metadata,
            tags=list(source.tags),
            parent_session=source,
            created_at=now,
            updated_at=now,
        )
        cursor = 0
        while cursor < k:
            page = event_list(session_id=source.id, after=cursor, before=k + 1, limit=_PAGE)
            if not page:
                break
            event_append_many(session_id=fork.id, events=[_copy(e) for e in page])
            cursor = page[-1].sequence_number
        workspace = fork_workspace(source=source, fork=fork, at_sequence=k)
        origin: dict[str, Any] = {"session_id": str(source.id), "at_sequence": k}
        if workspace is not None:
            origin["workspace"] = workspace
            path = workspace.get("path")
            if isinstance(path, str) and path:
                checked_out.append(path)
                fork.context = {**fork.context, "workspace_path": path}
        fork.metadata = {**fork.metadata, "forked_from": origin}
        fork.save(update_fields=["context", "metadata"])
        data: dict[str, Any] = {"source_session_id": str(source.id), "at_sequence": k}
        if workspace is not None:
            data["workspace"] = workspace
        [forked] = event_append_many(
            session_id=fork.id,
            events=[
                NewEvent(type=EventType.SESSION_FORKED, data=data, metadata=actor_metadata(actor))
            ],
        )
    fork.last_sequence = forked.sequence_number
    return fork


# --------------------------------------------------------------------------- workspace


def _snapshot_path(source: Session, snapshot: Event) -> str | None:
    """Where the snapshotted workspace lives: the snapshot's own ``path``, else its run's
    ``metadata.workspace.path`` or ``options.workspace.path``, else the session's
    ``context.workspace_path``."""
    path = snapshot.data.get("path")
    if isinstance(path, str) and path:
        return path
    if snapshot.run_id is not None:
        run: Mapping[str, Any] = (
            Run.objects.filter(id=snapshot.run_id).values("metadata", "options").first() or {}
        )
        for field in ("metadata", "options"):
            value = run.get(field)
            workspace = value.get("workspace") if isinstance(value, Mapping) else None
            path = workspace.get("path") if isinstance(workspace, Mapping) else None
            if isinstance(path, str) and path:
                return path
    path = source.context.get("workspace_path")
    return path if isinstance(path, str) and path else None


def fork_workspace(*, source: Session, fork: Session, at_sequence: int) -> dict[str, Any] | None:
    """The fork's workspace step: None when the source has no workspace snapshot at or before
    ``at_sequence``; else what was done, ``{"snapshot": {sequence_number, event_id, label,
    backend, ref}, "source_path", "status", ...}``.

    ``status`` is ``checked_out`` with ``path`` (the fork's new directory,
    `sessions.workspaces.workspace_fork_dest`), ``ref``, ``head`` and ``branch`` when the
    snapshot was checked out there (`sessions.workspaces.workspace_checkout_at`: git
    snapshots only); ``not_checked_out`` with a ``reason`` for a hash snapshot (it keeps no
    content) or a snapshot that names no directory. A failing checkout (a path outside the
    workspace roots, a ref that is gone) fails the fork; the checkout leaves nothing behind.
    """
    snapshots = event_list(
        session_id=source.id,
        before=at_sequence + 1,
        types=EventType.WORKSPACE_SNAPSHOT_TAKEN.value,
    )
    if not snapshots:
        return None
    snapshot = snapshots[-1]  # the nearest at or before the fork point
    source_path = _snapshot_path(source, snapshot)
    out: dict[str, Any] = {
        "snapshot": {
            "sequence_number": snapshot.sequence_number,
            "event_id": str(snapshot.id),
            **{k: snapshot.data.get(k) for k in ("label", "backend", "ref")},
        },
        "source_path": source_path,
    }
    ref = snapshot.data.get("ref")
    if snapshot.data.get("backend") != "git":
        out["status"] = "not_checked_out"
        out["reason"] = "only git snapshots can be checked out (a hash snapshot keeps no content)"
        return out
    if source_path is None or not isinstance(ref, str):
        out["status"] = "not_checked_out"
        out["reason"] = "the snapshot names no workspace directory or ref"
        return out
    from sessions.workspaces.checkout import workspace_checkout_at, workspace_fork_dest

    dest = workspace_fork_dest(source_path, fork.id)
    done = workspace_checkout_at(source_path, ref, dest)
    out["status"] = "checked_out"
    out.update({k: done.get(k) for k in ("path", "ref", "head", "branch")})
    return out
