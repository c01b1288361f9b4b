"""Workspace runs through the real `RunExecutor` (in-memory store, real git repositories).

The provider is `FileAgent`, a small class implementing the Provider protocol that edits
files in the run's workspace the way a coding agent would, then succeeds or fails.

Pinned from the seed (spec 7.5): a successful git run that edits `file.txt` gives two
`workspace_snapshot_taken` events and one `workspace_diff_computed`, `file.txt` among the
changed paths and the diff in the stored run metadata; hash + rollback is `validation_error`
and the provider is never invoked; a failing provider with git rollback ends with the
provider's `provider_error` and the file content restored.

Acceptance (issue 7): exact changed paths and line counts for a run that modifies, adds and
deletes files; patch truncation at a tiny cap; rollback on failure restores content, removes
added files and restores deleted ones; a path outside the roots, a `..` path and an escaping
symlink are each rejected and nothing runs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import EventRecord, RunRecord, SessionRecord
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers.base import CancelToken, Capability, Emit, ProviderResult, RunContext
from runs.providers.echo import EchoProvider
from runs.providers.registry import ProviderRegistry
from tests.unit.sessions.gitrepo import Repo, make_repo

FAST = ExecutorConfig(flush_interval_s=0.01, tick_s=0.01, cancel_grace_s=1.0)
WS_EVENTS = ("workspace_snapshot_taken", "workspace_diff_computed")


class FileAgent:
    """A Provider that runs `action(workspace)` and then succeeds, or raises `fail`."""

    name = "file-agent"

    def __init__(
        self, action: Callable[[Path], None] | None = None, fail: AsmError | None = None
    ) -> None:
        self.action = action or (lambda _ws: None)
        self.fail = fail
        self.calls: list[RunContext] = []

    def capabilities(self) -> list[Capability]:
        return []

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        self.calls.append(context)
        workspace = context.options["workspace"].get("path") or context.session_context.get(
            "workspace_path"
        )
        self.action(Path(str(workspace)))
        emit("message_received", {"role": "assistant", "content": "edited"})
        if self.fail is not None:
            raise self.fail
        return ProviderResult(output={"content": "edited"}, token_usage={})

    def cancel(self, run_id: uuid.UUID) -> None:
        return None

    def validate_config(self) -> None:
        return None

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        return None


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "roots"
    root.mkdir()
    monkeypatch.setenv("ASM_WORKSPACE_ROOTS", str(root))
    monkeypatch.delenv("ASM_WORKSPACE_IGNORE", raising=False)
    return root


@pytest.fixture
def repo(roots: Path) -> Repo:
    return make_repo(
        roots / "project",
        {
            "file.txt": "one\ntwo\nthree\n",
            "gone.txt": "first\nsecond\n",
            "src/app.py": "print('hi')\n",
        },
    )


class Harness:
    def __init__(self) -> None:
        self.store = InMemorySessionStore()

    def run(
        self,
        agent: FileAgent,
        options: Mapping[str, Any],
        *,
        session_context: Mapping[str, Any] | None = None,
    ) -> tuple[RunRecord, list[EventRecord]]:
        session = self.store.session_save(
            SessionRecord(agent_id="coder", context=dict(session_context or {}))
        )
        self.store.run_save(
            RunRecord(
                session_id=session.id,
                provider=agent.name,
                input={"prompt": "edit the files"},
                options=dict(options),
            )
        )
        claimed = self.store.run_claim_next(session.id, owner="w1", lease_ms=15_000)
        assert claimed is not None
        executor = RunExecutor(
            self.store, ProviderRegistry([EchoProvider(), agent]), owner="w1", config=FAST
        )
        finished = executor.execute(claimed)
        assert finished is not None
        return finished, self.store.event_list(session.id)


@pytest.fixture
def h() -> Harness:
    return Harness()


def ws_events(events: list[EventRecord]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, dict(e.data)) for e in events if e.type in WS_EVENTS]


def edit_file(ws: Path) -> None:
    (ws / "file.txt").write_text("one\ntwo\nthree\nfour\n")


def modify_add_delete(ws: Path) -> None:
    (ws / "file.txt").write_text("one\nTWO\nthree\nfour\nfive\n")  # +3 -1
    (ws / "docs").mkdir()
    (ws / "docs" / "new.md").write_text("# New\n\ntext\n")  # added: 3 lines
    (ws / "gone.txt").unlink()  # deleted: 2 lines


# --------------------------------------------------------------------------- pinned (spec 7.5)
def test_pinned_successful_git_run_records_snapshots_and_diff(h: Harness, repo: Repo) -> None:
    agent = FileAgent(edit_file)
    run, events = h.run(agent, {"workspace": {"path": repo.root}})
    assert run.status == "completed"
    types = [e.type for e in events]
    assert types.count("workspace_snapshot_taken") == 2
    assert types.count("workspace_diff_computed") == 1
    diff = run.metadata["workspace"]["diff"]
    assert diff["files_changed"] >= 1
    assert "file.txt" in diff["changed_paths"]
    stored = h.store.run_get(run.id)
    assert stored.metadata["workspace"]["diff"] == diff


def test_pinned_hash_with_rollback_is_refused_before_the_provider(h: Harness, roots: Path) -> None:
    plain = roots / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a\n")
    for strategy in ("auto", "hash"):
        agent = FileAgent(edit_file)
        run, events = h.run(
            agent,
            {"workspace": {"path": str(plain), "strategy": strategy, "rollback_on_failure": True}},
        )
        assert run.status == "failed"
        assert run.error["code"] == "validation_error"
        assert agent.calls == []
        assert ws_events(events) == []
        assert [e.type for e in events][-1] == "run_failed"


def test_pinned_failing_provider_with_git_rollback_restores_the_file(
    h: Harness, repo: Repo
) -> None:
    agent = FileAgent(edit_file, fail=AsmError("provider_error", "the model gave up"))
    run, events = h.run(agent, {"workspace": {"path": repo.root, "rollback_on_failure": True}})
    assert run.status == "failed"
    assert run.error["code"] == "provider_error"
    assert repo.read("file.txt") == "one\ntwo\nthree\n"
    labels = [d["label"] for t, d in ws_events(events) if t == "workspace_snapshot_taken"]
    assert labels == ["before", "after_failure"]


# --------------------------------------------------------------------------- acceptance
def test_event_order_and_metadata_of_a_workspace_run(h: Harness, repo: Repo) -> None:
    run, events = h.run(FileAgent(modify_add_delete), {"workspace": {"path": repo.root}})
    assert [e.type for e in events] == [
        "message_sent",
        "run_started",
        "workspace_snapshot_taken",
        "message_received",
        "workspace_snapshot_taken",
        "workspace_diff_computed",
        "run_completed",
    ]
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    assert all(e.run_id == run.id for e in events)
    before, after, diff_event = (e.data for e in events if e.type in WS_EVENTS)
    meta = run.metadata["workspace"]
    assert before == {"label": "before", "backend": "git", "ref": meta["before_ref"],
                      "path": repo.root}  # fmt: skip
    assert after == {"label": "after", "backend": "git", "ref": meta["after_ref"],
                     "path": repo.root}  # fmt: skip
    assert diff_event == {"files_changed": 3, "insertions": 6, "deletions": 3, "has_patch": True}
    assert (meta["backend"], meta["path"]) == ("git", repo.root)
    assert "rollback" not in meta
    # The snapshots are kept under the run's private refs.
    assert repo.git("rev-parse", f"refs/asm/snapshots/{run.id}/before").strip() == before["ref"]
    assert repo.git("rev-parse", f"refs/asm/snapshots/{run.id}/after").strip() == after["ref"]


def test_modify_add_delete_gives_exact_paths_and_line_counts(h: Harness, repo: Repo) -> None:
    refs, index = repo.refs(), repo.index_bytes()
    run, _ = h.run(FileAgent(modify_add_delete), {"workspace": {"path": repo.root}})
    diff = run.metadata["workspace"]["diff"]
    assert diff["changed_paths"] == ["docs/new.md", "file.txt", "gone.txt"]
    assert diff["files"] == [
        {"path": "docs/new.md", "status": "added", "insertions": 3, "deletions": 0},
        {"path": "file.txt", "status": "modified", "insertions": 3, "deletions": 1},
        {"path": "gone.txt", "status": "deleted", "insertions": 0, "deletions": 2},
    ]
    assert (diff["files_changed"], diff["insertions"], diff["deletions"]) == (3, 6, 3)
    assert diff["patch_truncated"] is False
    assert diff["patch_bytes"] == len(diff["patch"].encode())
    assert "+five" in diff["patch"]
    assert "deleted file mode" in diff["patch"]
    # Nothing was rolled back; the user's branches and index were not touched.
    assert repo.read("file.txt").endswith("five\n")
    assert (repo.refs(), repo.index_bytes()) == (refs, index)


def test_patch_truncation_at_a_tiny_cap(h: Harness, repo: Repo) -> None:
    run, events = h.run(
        FileAgent(modify_add_delete), {"workspace": {"path": repo.root, "max_patch_bytes": 16}}
    )
    diff = run.metadata["workspace"]["diff"]
    assert "patch" not in diff
    assert diff["patch_truncated"] is True
    assert diff["patch_bytes"] > 16
    assert diff["changed_paths"] == ["docs/new.md", "file.txt", "gone.txt"]
    (diff_data,) = (d for t, d in ws_events(events) if t == "workspace_diff_computed")
    assert diff_data["has_patch"] is False
    assert diff_data["patch_truncated"] is True
    no_patch, _ = h.run(FileAgent(), {"workspace": {"path": repo.root, "capture_patch": False}})
    assert no_patch.metadata["workspace"]["diff"]["patch_truncated"] is False
    assert "patch" not in no_patch.metadata["workspace"]["diff"]


def test_rollback_on_failure_restores_removes_and_recreates(h: Harness, repo: Repo) -> None:
    repo.write("scratch.txt", "untracked before the run\n")
    pre = repo.user_state()

    def agent_work(ws: Path) -> None:
        modify_add_delete(ws)
        (ws / "scratch.txt").unlink()
        (ws / "src" / "app.py").write_text("broken(\n")

    agent = FileAgent(agent_work, fail=AsmError("provider_error", "crashed mid-edit"))
    run, events = h.run(agent, {"workspace": {"path": repo.root, "rollback_on_failure": True}})
    assert run.status == "failed"
    assert run.error["code"] == "provider_error"
    assert repo.user_state() == pre  # content, added files gone, deleted ones back
    assert not (repo.path / "docs").exists()
    meta = run.metadata["workspace"]
    assert meta["rollback"] == {
        "safety_ref": f"refs/asm/safety/{run.id}",
        "restored": 4,  # file.txt, gone.txt, scratch.txt, src/app.py
        "removed": 1,  # docs/new.md
        "head_restored": False,
        "index_restored": False,
    }
    assert meta["diff"]["changed_paths"] == [
        "docs/new.md",
        "file.txt",
        "gone.txt",
        "scratch.txt",
        "src/app.py",
    ]
    # The failed run's work is kept at the safety ref.
    assert repo.git("show", f"refs/asm/safety/{run.id}:src/app.py") == "broken(\n"
    assert [e.type for e in events][-3:] == [
        "workspace_snapshot_taken",
        "workspace_diff_computed",
        "run_failed",
    ]


def test_a_cancelled_run_is_rolled_back_too(h: Harness, repo: Repo) -> None:
    agent = FileAgent(edit_file, fail=AsmError("cancelled", "stopped by the user"))
    run, _ = h.run(agent, {"workspace": {"path": repo.root, "rollback_on_failure": True}})
    assert run.status == "cancelled"
    assert repo.read("file.txt") == "one\ntwo\nthree\n"


def test_without_rollback_a_failed_run_keeps_its_changes(h: Harness, repo: Repo) -> None:
    agent = FileAgent(edit_file, fail=AsmError("provider_error", "oops"))
    run, _ = h.run(agent, {"workspace": {"path": repo.root}})
    assert run.status == "failed"
    assert repo.read("file.txt").endswith("four\n")
    assert run.metadata["workspace"]["diff"]["changed_paths"] == ["file.txt"]
    assert "rollback" not in run.metadata["workspace"]


@pytest.mark.parametrize(
    "case", ["outside the roots", "a .. path", "an escaping symlink", "missing"]
)
def test_a_workspace_escaping_the_roots_is_rejected_and_nothing_runs(
    h: Harness, tmp_path: Path, roots: Path, repo: Repo, case: str
) -> None:
    outside = make_repo(tmp_path / "outside")
    os.symlink(outside.path, roots / "link")
    paths = {
        "outside the roots": str(outside.path),
        "a .. path": str(roots / "project" / ".." / ".." / "outside"),
        "an escaping symlink": str(roots / "link"),
        "missing": str(roots / "missing"),
    }
    before_outside = outside.user_state()
    agent = FileAgent(edit_file)
    run, events = h.run(agent, {"workspace": {"path": paths[case], "rollback_on_failure": True}})
    assert run.status == "failed"
    assert run.error["code"] == "validation_error"
    assert agent.calls == []
    assert ws_events(events) == []
    assert outside.user_state() == before_outside
    assert outside.asm_refs() == []


def test_a_relative_or_dot_dot_path_inside_the_roots_is_refused_too(
    h: Harness, roots: Path, repo: Repo
) -> None:
    for path in (str(roots / "project" / ".." / "project"), "project"):
        agent = FileAgent(edit_file)
        run, _ = h.run(agent, {"workspace": {"path": path}})
        assert run.error["code"] == "validation_error"
        assert agent.calls == []
    assert repo.asm_refs() == []


# --------------------------------------------------------------------------- other paths
def test_hash_backend_run(h: Harness, roots: Path) -> None:
    plain = roots / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("one\n")
    (plain / "gone.txt").write_text("x\n")
    run, events = h.run(FileAgent(modify_add_delete), {"workspace": {"path": str(plain)}})
    assert run.status == "completed"
    meta = run.metadata["workspace"]
    assert meta["backend"] == "hash"
    assert meta["diff"]["changed_paths"] == ["docs/new.md", "file.txt", "gone.txt"]
    assert (meta["diff"]["insertions"], meta["diff"]["deletions"]) == (0, 0)
    assert "patch" not in meta["diff"]
    (diff_data,) = (d for t, d in ws_events(events) if t == "workspace_diff_computed")
    assert diff_data == {"files_changed": 3, "insertions": 0, "deletions": 0, "has_patch": False}


def test_disabled_workspace_records_nothing(h: Harness, repo: Repo) -> None:
    run, events = h.run(FileAgent(edit_file), {"workspace": {"enabled": False, "path": repo.root}})
    assert run.status == "completed"
    assert ws_events(events) == []
    assert "workspace" not in run.metadata
    assert repo.asm_refs() == []


def test_the_session_workspace_path_is_used_and_must_agree(
    h: Harness, roots: Path, repo: Repo
) -> None:
    run, _ = h.run(FileAgent(edit_file), {"workspace": {}}, session_context={
        "workspace_path": repo.root})  # fmt: skip
    assert run.metadata["workspace"]["diff"]["changed_paths"] == ["file.txt"]
    other = roots / "other"
    other.mkdir()
    agent = FileAgent(edit_file)
    run, _ = h.run(
        agent,
        {"workspace": {"path": str(other)}},
        session_context={"workspace_path": repo.root},
    )
    assert run.error["code"] == "validation_error"
    assert agent.calls == []
    agent = FileAgent()
    run, _ = h.run(agent, {"workspace": {}})  # no directory named anywhere
    assert run.error["code"] == "validation_error"
    assert run.error["details"] == {"field": "options.workspace.path"}


def test_a_workspace_step_error_fails_a_successful_run(h: Harness, repo: Repo) -> None:
    def destroy(ws: Path) -> None:
        shutil.rmtree(ws / ".git")

    run, events = h.run(FileAgent(destroy), {"workspace": {"path": repo.root}})
    assert run.status == "failed"
    assert run.error["code"] == "validation_error"  # no longer a git work tree
    assert run.metadata["workspace"]["error"]["code"] == "validation_error"
    assert [e.type for e in events][-1] == "run_failed"
