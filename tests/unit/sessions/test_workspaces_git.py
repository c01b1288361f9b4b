"""The git backend on real repositories (`sessions.workspaces.git`), no mocks.

Pinned from the seed (spec 7.5, workspace unit tests): git/hash detection, git diff with
patch, the patch omitted with `patch_truncated: true` over a 64-byte cap, git rollback
restores content. asm's fixes: untracked files are captured, a snapshot leaves the user's
index, work tree, HEAD, branches and stash untouched, rollback removes files the run created
and restores deleted ones (and HEAD, the branch and the index), never writes through a
symlink, and no hook, filter, fsmonitor, external diff, textconv or signing program ever runs.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from asm_core.errors import AsmError
from sessions.workspaces import (
    Snapshot,
    backend_resolve,
    snapshot_diff,
    snapshot_rollback,
    snapshot_take,
    workspace_checkout_at,
    workspace_fork_dest,
)
from sessions.workspaces.checkout import FORK_DIR_ENV
from sessions.workspaces.git import git_snapshot_load
from tests.unit.sessions.gitrepo import Repo, files_of, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(
        tmp_path / "repo",
        {
            "file.txt": "one\ntwo\nthree\n",
            "gone.txt": "delete me\nplease\n",
            "src/app.py": "print('hi')\n",
            ".gitignore": "*.log\nbuild/\n",
        },
    )


def take(
    repo: Repo, label: str, *, ref_name: str | None = None, ignore: list[str] | None = None
) -> Snapshot:
    return snapshot_take(repo.root, "git", label, ref_name=ref_name, ignore=ignore)


# --------------------------------------------------------------------------- detection
def test_auto_detection_git_and_hash(tmp_path: Path, repo: Repo) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a")
    assert backend_resolve(repo.root, "auto") == "git"
    assert backend_resolve(str(plain), "auto") == "hash"
    assert backend_resolve(repo.root, "hash") == "hash"
    # A subdirectory of a repository is not a git workspace (git never looks above it).
    sub = os.path.join(repo.root, "src")
    assert backend_resolve(sub, "auto") == "hash"
    with pytest.raises(AsmError) as info:
        backend_resolve(sub, "git")
    assert info.value.code == "validation_error"
    with pytest.raises(AsmError) as info:
        backend_resolve(str(plain), "git")
    assert info.value.code == "validation_error"


def test_git_directory_outside_the_roots_is_refused(tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    main = make_repo(tmp_path / "outside" / "main")
    worktree = roots / "wt"
    roots.mkdir()
    main.git("worktree", "add", "-q", "-b", "side", str(worktree))
    with pytest.raises(AsmError) as info:
        backend_resolve(os.path.realpath(worktree), "auto", roots=[str(roots)])
    assert info.value.code == "validation_error"
    assert backend_resolve(os.path.realpath(worktree), "auto", roots=[str(tmp_path)]) == "git"


# --------------------------------------------------------------------------- snapshot
def test_snapshot_leaves_index_worktree_head_branches_and_stash_untouched(repo: Repo) -> None:
    repo.write("file.txt", "one\nTWO\nthree\n")
    repo.git("add", "file.txt")  # a staged change
    repo.write("src/app.py", "print('changed')\n")  # an unstaged change
    repo.write("notes.md", "untracked\n")
    before = repo.user_state()
    snap = take(repo, "before", ref_name="refs/asm/snapshots/r1/before")
    assert repo.user_state() == before
    assert repo.asm_refs() == ["refs/asm/snapshots/r1/before"]
    assert snap.backend == "git"
    assert snap.path == repo.root
    assert snap.metadata["dirty"] is True
    assert snap.metadata["branch"] == "refs/heads/main"
    assert snap.metadata["head_ref"] == repo.git("rev-parse", "HEAD").strip()
    # The snapshot commit holds the work tree, untracked file included; ignored files not.
    listed = repo.git("ls-tree", "-r", "--name-only", snap.ref).split()
    assert "notes.md" in listed
    assert repo.git("show", f"{snap.ref}:src/app.py") == "print('changed')\n"
    # ...and the user's index (staged file.txt, unstaged app.py) through its trailer.
    index_tree = snap.metadata["index_tree"]
    assert repo.git("show", f"{index_tree}:file.txt") == "one\nTWO\nthree\n"
    assert repo.git("show", f"{index_tree}:src/app.py") == "print('hi')\n"
    loaded = git_snapshot_load(repo.root, "refs/asm/snapshots/r1/before")
    assert (loaded.ref, loaded.metadata["index_tree"]) == (snap.ref, index_tree)


def test_a_clean_tree_snapshots_to_the_head_tree(repo: Repo) -> None:
    snap = take(repo, "before")
    assert snap.metadata["dirty"] is False
    assert snap.metadata["tree"] == repo.git("rev-parse", "HEAD^{tree}").strip()
    assert repo.git("rev-parse", f"{snap.ref}^").strip() == repo.git("rev-parse", "HEAD").strip()


def test_unborn_head_and_missing_index(tmp_path: Path) -> None:
    fresh = Repo(tmp_path / "fresh")
    fresh.path.mkdir()
    fresh.git("init", "-q", "-b", "main")
    fresh.write("a.txt", "a\n")
    before = take(fresh, "before")
    assert before.metadata["head_ref"] is None
    fresh.write("b.txt", "b\n")
    after = take(fresh, "after")
    diff = snapshot_diff(before, after)
    assert diff.changed_paths == ["b.txt"]
    snapshot_rollback(before, after, safety_ref="refs/asm/safety/fresh")
    assert sorted(files_of(fresh.path)) == ["a.txt"]


def test_skip_list_gitignore_and_ignore_list_for_untracked_files(repo: Repo) -> None:
    repo.write("debug.log", "ignored by .gitignore\n")
    repo.write("build/out.bin", "ignored directory\n")
    repo.write("node_modules/pkg/index.js", "skip list\n")
    repo.write("cache/tmp.txt", "ignore list\n")
    repo.write("keep/node_modules/x.js", "not the first segment\n")
    repo.write("keep/me.txt", "kept\n")
    snap = take(repo, "s", ignore=["cache"])
    listed = set(repo.git("ls-tree", "-r", "--name-only", snap.ref).split())
    assert {"keep/me.txt", "keep/node_modules/x.js"} <= listed
    assert not {"debug.log", "build/out.bin", "node_modules/pkg/index.js", "cache/tmp.txt"} & listed


# --------------------------------------------------------------------------- diff
def test_pinned_git_diff_with_patch(repo: Repo) -> None:
    before = take(repo, "before")
    repo.write("file.txt", "one\ntwo\nthree\nfour\n")
    after = take(repo, "after")
    diff = snapshot_diff(before, after, capture_patch=True)
    assert diff.backend == "git"
    assert (diff.from_ref, diff.to_ref) == (before.ref, after.ref)
    assert diff.files_changed == 1
    assert diff.changed_paths == ["file.txt"]
    assert (diff.insertions, diff.deletions) == (1, 0)
    assert diff.patch is not None
    assert "+four" in diff.patch
    assert "diff --git a/file.txt b/file.txt" in diff.patch
    assert diff.metadata == {"patch_truncated": False, "patch_bytes": len(diff.patch.encode())}
    assert diff.summary() == {
        "files_changed": 1,
        "insertions": 1,
        "deletions": 0,
        "changed_paths": ["file.txt"],
    }


def test_pinned_patch_omitted_over_a_64_byte_cap(repo: Repo) -> None:
    before = take(repo, "before")
    repo.write("file.txt", "one\ntwo\nthree\n" + "more text on a long line\n" * 10)
    after = take(repo, "after")
    diff = snapshot_diff(before, after, capture_patch=True, max_patch_bytes=64)
    assert diff.patch is None
    assert diff.metadata["patch_truncated"] is True
    assert diff.metadata["patch_bytes"] > 64
    assert (diff.files_changed, diff.insertions) == (1, 10)  # the summary is still exact
    full = snapshot_diff(before, after, capture_patch=True)
    assert full.metadata["patch_bytes"] == diff.metadata["patch_bytes"]
    assert snapshot_diff(before, after).metadata == {"patch_truncated": False}
    assert snapshot_diff(before, after).patch is None


def test_modify_add_delete_gives_exact_paths_and_line_counts(repo: Repo) -> None:
    repo.write("untracked-before.txt", "u1\nu2\n")
    before = take(repo, "before")
    repo.write("file.txt", "one\nTWO\nthree\nfour\n")  # 1 line changed, 1 added
    repo.write("new/added.txt", "a\nb\nc\n")  # untracked, new
    os.remove(repo.path / "gone.txt")  # tracked, deleted
    os.remove(repo.path / "untracked-before.txt")  # untracked, deleted
    repo.write("data.bin", b"\x00\x01\x02binary")
    after = take(repo, "after")
    diff = snapshot_diff(before, after, capture_patch=True)
    by_path = {f.path: f for f in diff.files}
    assert diff.changed_paths == [
        "data.bin",
        "file.txt",
        "gone.txt",
        "new/added.txt",
        "untracked-before.txt",
    ]
    assert {p: (f.status, f.insertions, f.deletions) for p, f in by_path.items()} == {
        "file.txt": ("modified", 2, 1),
        "new/added.txt": ("added", 3, 0),
        "gone.txt": ("deleted", 0, 2),
        "untracked-before.txt": ("deleted", 0, 2),
        "data.bin": ("added", None, None),  # binary: no line counts
    }
    assert (diff.files_changed, diff.insertions, diff.deletions) == (5, 5, 5)


def test_diff_of_different_backends_or_paths_is_refused(tmp_path: Path, repo: Repo) -> None:
    other = make_repo(tmp_path / "other")
    git_snap = take(repo, "a")
    with pytest.raises(AsmError) as info:
        snapshot_diff(git_snap, take(other, "b"))
    assert info.value.code == "validation_error"
    hashed = snapshot_take(repo.root, "hash", "h")
    with pytest.raises(AsmError) as info:
        snapshot_diff(git_snap, hashed)
    assert info.value.code == "validation_error"


# --------------------------------------------------------------------------- rollback
def test_pinned_git_rollback_restores_content(repo: Repo) -> None:
    before = take(repo, "before")
    repo.write("file.txt", "changed\n")
    after = take(repo, "after_failure")
    snapshot_rollback(before, after, safety_ref="refs/asm/safety/pinned")
    assert repo.read("file.txt") == "one\ntwo\nthree\n"


def test_rollback_restores_the_exact_pre_run_state(repo: Repo) -> None:
    repo.write("file.txt", "dirty but not staged\n")
    repo.write("notes/todo.md", "untracked\n")
    repo.write("run.sh", "#!/bin/sh\necho hi\n", executable=True)
    os.symlink("file.txt", repo.path / "alias")
    repo.write("debug.log", "ignored, before\n")
    repo.git("add", "run.sh")
    pre = repo.user_state()
    before = take(repo, "before")

    # The "agent": modifies, deletes tracked and untracked files, creates files in new
    # directories, flips modes, retargets a link, stages and commits.
    head = repo.git("rev-parse", "HEAD").strip()
    repo.write("file.txt", "agent was here\n")
    os.remove(repo.path / "gone.txt")
    os.remove(repo.path / "notes" / "todo.md")
    repo.write("deep/new/dir/created.py", "x = 1\n")
    repo.write("src/extra.py", "y = 2\n")
    (repo.path / "run.sh").chmod(0o644)
    os.remove(repo.path / "alias")
    os.symlink("gone.txt", repo.path / "alias")
    repo.write("debug.log", "ignored, after\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "agent commit")
    agent_head = repo.git("rev-parse", "HEAD").strip()
    repo.git("checkout", "-q", "-b", "agent-branch")
    after = take(repo, "after_failure")

    result = snapshot_rollback(before, after, safety_ref="refs/asm/safety/run-1")
    assert result["head_restored"] is True
    assert result["index_restored"] is True
    state = repo.user_state()
    # Ignored files are outside snapshots: left as the run left them.
    assert state["files"].pop("debug.log") == ("file", b"ignored, after\n", False)
    pre["files"].pop("debug.log")
    assert state["files"] == pre["files"]
    assert state["index"] != b""
    assert state["status"] == pre["status"]
    assert state["refs"]["HEAD"] == head
    assert state["refs"]["HEAD->"] == "refs/heads/main"
    assert state["refs"]["refs/heads/main"] == head
    # The post-run state stays reachable: safety ref -> after snapshot -> the agent's commit.
    assert repo.git("rev-parse", "refs/asm/safety/run-1").strip() == after.ref
    assert repo.git("rev-parse", "refs/asm/safety/run-1^").strip() == agent_head
    assert repo.git("show", "refs/asm/safety/run-1:file.txt") == "agent was here\n"


def test_rollback_never_writes_through_a_symlink_or_hard_link(tmp_path: Path, repo: Repo) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.py").write_text("outside, must stay\n")
    before = take(repo, "before")
    # The run swaps the `src` directory for a link leading out of the workspace.
    (repo.path / "src" / "app.py").unlink()
    (repo.path / "src").rmdir()
    os.symlink(outside, repo.path / "src")
    # ...and file.txt for a hard link to a file outside.
    (outside / "target.txt").write_text("outside target\n")
    (repo.path / "file.txt").unlink()
    os.link(outside / "target.txt", repo.path / "file.txt")
    after = take(repo, "after_failure")
    snapshot_rollback(before, after, safety_ref="refs/asm/safety/link")
    assert (outside / "app.py").read_text() == "outside, must stay\n"
    assert (outside / "target.txt").read_text() == "outside target\n"
    assert repo.read("file.txt") == "one\ntwo\nthree\n"
    assert not (repo.path / "src").is_symlink()
    assert repo.read("src/app.py") == "print('hi')\n"


def test_rollback_of_a_hash_snapshot_is_invalid_operation(repo: Repo) -> None:
    before = snapshot_take(repo.root, "hash", "before")
    with pytest.raises(AsmError) as info:
        snapshot_rollback(before, before, safety_ref="refs/asm/safety/x")
    assert info.value.code == "invalid_operation"


# --------------------------------------------------------------------------- safety
def _plant_programs(repo: Repo, marker: Path) -> None:
    """Repository config and attributes that would run programs if git honoured them."""
    script = repo.path.parent / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\ncat\n')
    script.chmod(0o755)
    hooks = repo.path / ".git" / "hooks"
    for hook in ("reference-transaction", "post-index-change", "post-checkout", "pre-commit"):
        (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        (hooks / hook).chmod(0o755)
    for key, value in (
        ("core.fsmonitor", str(script)),
        ("core.pager", str(script)),
        ("diff.external", str(script)),
        ("diff.evil.textconv", str(script)),
        ("diff.evil.command", str(script)),
        ("filter.evil.clean", str(script)),
        ("filter.evil.smudge", str(script)),
        ("filter.evil.process", str(script)),
        ("gpg.program", str(script)),
        ("commit.gpgSign", "true"),
        ("core.hooksPath", str(hooks)),
    ):
        repo.git("config", key, value)
    repo.write(".gitattributes", "* filter=evil diff=evil\n")


def test_no_hook_filter_or_configured_program_ever_runs(tmp_path: Path, repo: Repo) -> None:
    marker = tmp_path / "ran.txt"
    _plant_programs(repo, marker)
    before = take(repo, "before", ref_name="refs/asm/snapshots/evil/before")
    repo.write("file.txt", "one\nchanged\n")
    repo.write("added.txt", "new\n")
    after = take(repo, "after_failure", ref_name="refs/asm/snapshots/evil/after")
    diff = snapshot_diff(before, after, capture_patch=True)
    assert diff.patch is not None
    assert "+changed" in diff.patch  # the real content, not a filtered or converted one
    snapshot_rollback(before, after, safety_ref="refs/asm/safety/evil")
    workspace_checkout_at(repo.root, before.ref, str(tmp_path / "fork"))
    assert repo.read("file.txt") == "one\ntwo\nthree\n"
    assert not marker.exists(), marker.read_text()


# --------------------------------------------------------------------------- checkout (fork)
def test_checkout_at_a_snapshot_builds_an_equal_work_tree(tmp_path: Path, repo: Repo) -> None:
    repo.write("file.txt", "edited\n")
    repo.git("add", "file.txt")
    repo.write("untracked.txt", "u\n")
    repo.write("tool.sh", "#!/bin/sh\n", executable=True)
    snap = take(repo, "before", ref_name="refs/asm/snapshots/r/before")
    expected_files = files_of(repo.path)
    expected_status = repo.git("status", "--porcelain", "--untracked-files=all")
    head = repo.git("rev-parse", "HEAD").strip()
    repo.write("file.txt", "later change\n")  # the source moves on
    source_state = repo.user_state()

    dest = tmp_path / "fork"
    result = workspace_checkout_at(repo.root, "refs/asm/snapshots/r/before", str(dest))
    assert result == {
        "path": os.path.realpath(dest),
        "ref": snap.ref,
        "head": head,
        "branch": "refs/heads/main",
        "tree": snap.metadata["tree"],
    }
    fork = Repo(dest)
    assert files_of(dest) == expected_files
    assert fork.git("status", "--porcelain", "--untracked-files=all") == expected_status
    assert fork.git("rev-parse", "HEAD").strip() == head
    assert fork.git("symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert fork.git("rev-parse", "refs/asm/forked-from").strip() == snap.ref
    assert stat.S_IMODE(os.stat(dest / "tool.sh").st_mode) & 0o100
    assert repo.user_state() == source_state  # the source is untouched


def test_checkout_at_refuses_bad_input(tmp_path: Path, repo: Repo) -> None:
    snap = take(repo, "before")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    plain = tmp_path / "plain"
    plain.mkdir()
    cases = [
        ((repo.root, snap.ref, str(busy)), "validation_error"),
        ((repo.root, snap.ref, str(tmp_path / "no" / "parent")), "validation_error"),
        ((repo.root, snap.ref, "relative/dest"), "validation_error"),
        ((repo.root, snap.ref, str(tmp_path / ".." / "escape")), "validation_error"),
        ((repo.root, "-p", str(tmp_path / "d1")), "validation_error"),
        ((repo.root, "refs/asm/nothing", str(tmp_path / "d2")), "not_found"),
        ((repo.root, "HEAD", str(tmp_path / "d3")), "validation_error"),  # not a snapshot
        ((str(plain), snap.ref, str(tmp_path / "d4")), "invalid_operation"),
    ]
    for args, code in cases:
        with pytest.raises(AsmError) as info:
            workspace_checkout_at(*args)
        assert info.value.code == code, args
    assert not any((tmp_path / d).exists() for d in ("d1", "d2", "d3", "d4", "escape"))
    with pytest.raises(AsmError) as info:
        workspace_checkout_at(repo.root, snap.ref, str(tmp_path / "d5"), roots=[repo.root])
    assert info.value.code == "validation_error"


def test_fork_dest_is_next_to_the_source_or_in_the_fork_dir(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = uuid.uuid4()
    monkeypatch.delenv(FORK_DIR_ENV, raising=False)
    parent = os.path.dirname(repo.root)
    dest = workspace_fork_dest(repo.root, session_id)
    assert dest == os.path.join(parent, f"repo-fork-{session_id}")
    workspace_checkout_at(repo.root, take(repo, "s").ref, dest)
    assert Repo(Path(dest)).read("file.txt") == repo.read("file.txt")
    monkeypatch.setenv(FORK_DIR_ENV, str(tmp_path / "forks"))
    assert workspace_fork_dest(repo.root, "x") == os.path.join(
        os.path.realpath(tmp_path), "forks", "repo-fork-x"
    )
    with pytest.raises(AsmError) as info:  # the fork dir lies outside the roots
        workspace_fork_dest(repo.root, "x", roots=[repo.root])
    assert info.value.code == "validation_error"
