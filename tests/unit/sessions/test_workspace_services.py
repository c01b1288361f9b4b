"""`sessions.workspaces.services` on SQLite with real git repositories: a snapshot on
request, and undoing a finished run's changes (with its refusals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from events.models import Event
from events.selectors import latest_sequence
from runs.bootstrap import build_executor
from runs.models import Run
from runs.services import run_submit
from runs.store import DjangoSessionStore
from sessions.services import session_create
from sessions.workspaces import snapshot_diff, snapshot_take
from sessions.workspaces.execution import diff_metadata, snapshot_ref_name
from sessions.workspaces.services import workspace_run_undo, workspace_snapshot_take
from tests.unit.sessions.gitrepo import Repo, make_repo

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    monkeypatch.setenv("ASM_WORKSPACE_ROOTS", str(tmp_path / "roots"))
    return make_repo(tmp_path / "roots" / "project", {"file.txt": "one\n", "gone.txt": "g\n"})


def finished_run(repo: Repo, status: str = "completed", **extra: Any) -> Run:
    """A run whose agent changed the workspace, recorded as the executor records it."""
    session = session_create(agent_id="undo")
    run = Run.objects.create(session=session, status="pending", provider="echo")
    label = "before"
    before = snapshot_take(repo.root, "git", label, ref_name=snapshot_ref_name(run.id, label))
    repo.write("file.txt", "agent\n")
    repo.write("new.txt", "new\n")
    (repo.path / "gone.txt").unlink()
    after = snapshot_take(repo.root, "git", "after", ref_name=snapshot_ref_name(run.id, "after"))
    run.status = status
    run.metadata = {
        "workspace": {
            "backend": "git",
            "path": repo.root,
            "before_ref": before.ref,
            "after_ref": after.ref,
            "diff": diff_metadata(snapshot_diff(before, after)),
            **extra,
        }
    }
    run.save()
    return run


def test_snapshot_on_request_is_recorded_in_the_session(repo: Repo) -> None:
    session = session_create(agent_id="snap")
    snap = workspace_snapshot_take(session_id=session.id, path=repo.root, actor="system")
    event = Event.objects.get(session=session, type="workspace_snapshot_taken")
    assert event.data == {"label": "manual", "backend": "git", "ref": snap.ref, "path": repo.root}
    assert event.run_id is None
    [ref] = repo.asm_refs()
    assert ref.startswith(f"refs/asm/snapshots/session-{session.id}/")
    with pytest.raises(AsmError) as info:
        workspace_snapshot_take(session_id=session.id, path="/etc")
    assert info.value.code == "validation_error"
    assert latest_sequence(session_id=session.id) == 2


def test_undo_restores_the_state_before_the_run(repo: Repo) -> None:
    run = finished_run(repo)
    seq = latest_sequence(session_id=run.session_id)
    result = workspace_run_undo(run_id=run.id)
    assert repo.read("file.txt") == "one\n"
    assert repo.read("gone.txt") == "g\n"
    assert not (repo.path / "new.txt").exists()
    assert (result["restored"], result["removed"]) == (2, 1)
    assert result["restored_ref"] == run.metadata["workspace"]["before_ref"]
    assert repo.git("show", f"{result['safety_ref']}:file.txt") == "agent\n"
    event = Event.objects.get(session_id=run.session_id, sequence_number=seq + 1)
    assert event.type == "workspace_snapshot_taken"
    assert event.run_id is None
    assert event.data["label"] == "before_undo"
    assert event.data["undo_of_run"] == str(run.id)


def test_undo_refuses_when_the_workspace_moved_on_unless_forced(repo: Repo) -> None:
    run = finished_run(repo)
    repo.write("later.txt", "work done after the run\n")
    with pytest.raises(AsmError) as info:
        workspace_run_undo(run_id=run.id)
    assert info.value.code == "invalid_operation"
    assert repo.read("file.txt") == "agent\n"  # nothing changed
    workspace_run_undo(run_id=run.id, force=True)
    assert repo.read("file.txt") == "one\n"
    assert not (repo.path / "later.txt").exists()


@pytest.mark.parametrize("case", ["pending", "rolled back", "no workspace", "running sibling"])
def test_undo_refusals_change_nothing(repo: Repo, case: str) -> None:
    run = finished_run(
        repo,
        status="pending" if case == "pending" else "failed",
        **({"rollback": {"restored": 1}} if case == "rolled back" else {}),
    )
    if case == "no workspace":
        run.metadata = {}
        run.save()
    if case == "running sibling":
        Run.objects.create(session_id=run.session_id, status="running", provider="echo")
    seq = latest_sequence(session_id=run.session_id)
    with pytest.raises(AsmError) as info:
        workspace_run_undo(run_id=run.id)
    assert info.value.code == "invalid_operation"
    assert repo.read("file.txt") == "agent\n"
    assert latest_sequence(session_id=run.session_id) == seq


def test_undo_of_an_unknown_run() -> None:
    import uuid

    with pytest.raises(AsmError) as info:
        workspace_run_undo(run_id=uuid.uuid4())
    assert info.value.code == "run_not_found"


def test_a_submitted_workspace_run_through_the_service_store(repo: Repo) -> None:
    """run_submit stores the option; the ORM store's executor writes the workspace events
    (their payloads pass the event schemas) and the run's metadata."""
    session = session_create(agent_id="ws-service")
    created = run_submit(
        session_id=session.id,
        input={"prompt": "hello"},
        provider="echo",
        options={"workspace": {"path": repo.root, "strategy": "git"}},
    )
    store = DjangoSessionStore()
    claimed = store.run_claim_next(session.id, owner="w-ws", lease_ms=15_000)
    assert claimed is not None
    assert claimed.id == created.run.id
    finished = build_executor("w-ws").execute(claimed, claimed=True)
    assert finished is not None
    assert finished.status == "completed"
    run = Run.objects.get(id=claimed.id)
    assert run.metadata["workspace"]["diff"]["files_changed"] == 0
    types = list(
        Event.objects.filter(run=run).order_by("sequence_number").values_list("type", flat=True)
    )
    assert types.count("workspace_snapshot_taken") == 2
    assert types[-2:] == ["workspace_diff_computed", "run_completed"]
