"""Workspace snapshots (spec 9): a run snapshots its directory before and after, and diffs.

Creates a throwaway git repository, allows it in `ASM_WORKSPACE_ROOTS`, runs a prompt with
`options.workspace`, then edits a file and takes a manual snapshot: a new ref, and the
user's branch, index and work tree are untouched by either.
    python examples/workspace_snapshot.py [--provider claude_code]
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from _asm_example import check, fail, say, setup


def _git(repo: Path, *argv: str) -> str:
    return subprocess.run(  # noqa: S603
        ["git", "-C", str(repo), *argv],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _make_repo() -> Path:
    if shutil.which("git") is None:
        fail("git is not installed")
    repo = Path(tempfile.mkdtemp(prefix="asm-example-repo-")).resolve()
    atexit.register(shutil.rmtree, repo, True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "example@asm.invalid")
    _git(repo, "config", "user.name", "asm example")
    (repo / "README.md").write_text("hello\n", encoding="utf-8")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "initial")
    return repo


def main() -> None:
    repo = _make_repo()
    os.environ["ASM_WORKSPACE_ROOTS"] = str(repo)
    args = setup(__doc__ or "")
    from events.selectors import event_list
    from runs.services import run_submit, run_wait
    from sessions.services import session_create
    from sessions.workspaces.services import workspace_snapshot_take

    head = _git(repo, "rev-parse", "HEAD")
    session = session_create(agent_id="example-workspace", context={"workspace_path": str(repo)})
    run = run_submit(
        session_id=session.id,
        input={"prompt": "Look at README.md."},
        provider=args.provider,
        options={"workspace": {"path": str(repo), "strategy": "git"}},
    ).run
    run = run_wait(run_id=run.id, timeout_s=args.timeout)
    say(f"run {run.id}: {run.status}")
    check(run.status == "completed", f"the run ended {run.status}: {run.error}")
    workspace = run.metadata.get("workspace") or {}
    diff = workspace.get("diff") or {}
    say(
        f"workspace: backend={workspace.get('backend')} before={workspace.get('before_ref')} "
        f"after={workspace.get('after_ref')} diff={diff.get('files_changed')}"
    )
    check(workspace.get("before_ref") and workspace.get("after_ref"), "both snapshots taken")
    types = [e.type for e in event_list(session_id=session.id, run_id=run.id)]
    check(types.count("workspace_snapshot_taken") == 2, f"two snapshot events in {types}")
    check("workspace_diff_computed" in types, "a diff event")

    (repo / "notes.txt").write_text("written after the run\n", encoding="utf-8")
    snapshot = workspace_snapshot_take(session_id=session.id, path=str(repo))
    say(f"manual snapshot after editing notes.txt: {snapshot.ref}")
    check(snapshot.ref != workspace.get("after_ref"), "the edit gives a new snapshot")
    check(_git(repo, "rev-parse", "HEAD") == head, "HEAD is untouched")
    check("?? notes.txt" in _git(repo, "status", "--porcelain"), "the work tree is untouched")
    say("OK: workspace_snapshot")


if __name__ == "__main__":
    main()
