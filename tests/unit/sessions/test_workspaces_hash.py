"""The hash backend (`sessions.workspaces.hash`) on real directories.

Pinned from the seed (spec 7.2-7.4): the file walk (dot-files included, first-segment skip
list), the ref formula, the diff (added/removed/modified, no line counts, no patch, empty
metadata), hash rollback -> `invalid_operation`. asm additions: the ignore list
(`ASM_WORKSPACE_IGNORE`), symlinks recorded but never followed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from asm_core.errors import AsmError
from sessions.workspaces import snapshot_diff, snapshot_rollback, snapshot_take
from sessions.workspaces.hash import (
    IGNORE_ENV,
    hash_snapshot,
    ignore_matches,
    ignore_patterns,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str, data: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(data)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "a.txt", "alpha\n")
    write(root, ".env", "dot file\n")
    write(root, "src/main.py", "print(1)\n")
    write(root, ".git/config", "skipped\n")
    write(root, "node_modules/x/index.js", "skipped\n")
    write(root, "deps/lib.ex", "skipped\n")
    write(root, "_build/out", "skipped\n")
    write(root, "src/node_modules/kept.js", "only the FIRST segment is skipped\n")
    return root


def test_pinned_walk_and_ref_formula(ws: Path) -> None:
    snap = hash_snapshot(str(ws), "before", ignore=())
    hashes = snap.metadata["file_hashes"]
    assert hashes == {
        ".env": sha(b"dot file\n"),
        "a.txt": sha(b"alpha\n"),
        "src/main.py": sha(b"print(1)\n"),
        "src/node_modules/kept.js": sha(b"only the FIRST segment is skipped\n"),
    }
    lines = "\n".join(f"{p}:{h}" for p, h in sorted(hashes.items()))
    assert snap.ref == sha(lines.encode())
    assert (snap.backend, snap.label, snap.path) == ("hash", "before", str(ws))
    assert hash_snapshot(str(ws), ignore=()).ref == snap.ref  # deterministic


def test_pinned_diff_added_removed_modified(ws: Path) -> None:
    before = snapshot_take(str(ws), "hash", "before", ignore=())
    write(ws, "a.txt", "ALPHA\n")
    write(ws, "new/file.txt", "n\n")
    os.remove(ws / ".env")
    write(ws, "node_modules/x/index.js", "changed but skipped\n")
    after = snapshot_take(str(ws), "hash", "after", ignore=())
    diff = snapshot_diff(before, after, capture_patch=True)
    assert diff.changed_paths == [".env", "a.txt", "new/file.txt"]
    assert {f.path: f.status for f in diff.files} == {
        ".env": "deleted",
        "a.txt": "modified",
        "new/file.txt": "added",
    }
    assert (diff.files_changed, diff.insertions, diff.deletions) == (3, 0, 0)
    assert diff.patch is None
    assert diff.metadata == {}
    assert (diff.from_ref, diff.to_ref) == (before.ref, after.ref)
    unchanged = snapshot_diff(after, snapshot_take(str(ws), "hash", ignore=()))
    assert unchanged.files_changed == 0


def test_pinned_hash_rollback_is_invalid_operation(ws: Path) -> None:
    snap = hash_snapshot(str(ws))
    with pytest.raises(AsmError) as info:
        snapshot_rollback(snap, snap, safety_ref="refs/asm/safety/x")
    assert info.value.code == "invalid_operation"


def test_ignore_list_from_the_environment_and_argument(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(ws, "src/cache.pyc", "bytecode")
    write(ws, "src/__pycache__/m.cpython.pyc", "bytecode")
    write(ws, "docs/big.pdf", "pdf")
    write(ws, "docs/sub/keep.pdf", "pdf")
    monkeypatch.setenv(IGNORE_ENV, "*.pyc, __pycache__ ,docs/*.pdf,")
    assert ignore_patterns() == ("*.pyc", "__pycache__", "docs/*.pdf")
    paths = set(hash_snapshot(str(ws)).metadata["file_hashes"])
    assert "src/cache.pyc" not in paths
    assert "src/__pycache__/m.cpython.pyc" not in paths
    assert "docs/big.pdf" not in paths
    assert "docs/sub/keep.pdf" not in paths  # fnmatch: `*` crosses `/` in path patterns
    assert "a.txt" in paths
    assert "src/cache.pyc" in hash_snapshot(str(ws), ignore=()).metadata["file_hashes"]
    assert ignore_matches("a/b/c.log", ["*.log"])
    assert not ignore_matches("a/b/c.txt", ["*.log", "b/c.txt"])
    assert ignore_matches("b/c.txt", ["b/c.txt"])


def test_symlinks_are_recorded_never_followed(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.txt", "secret\n")
    os.symlink(outside, ws / "out-dir")
    os.symlink(outside / "secret.txt", ws / "out-file")
    snap = hash_snapshot(str(ws), ignore=())
    hashes = snap.metadata["file_hashes"]
    assert hashes["out-file"] == sha(b"symlink:" + os.fsencode(outside / "secret.txt"))
    assert hashes["out-dir"] == sha(b"symlink:" + os.fsencode(outside))
    assert not any(p.startswith("out-dir/") for p in hashes)
    assert sha(b"secret\n") not in hashes.values()


def test_a_missing_directory_is_a_validation_error(tmp_path: Path) -> None:
    for path in (str(tmp_path / "missing"), ""):
        with pytest.raises(AsmError) as info:
            hash_snapshot(path)
        assert info.value.code == "validation_error"
