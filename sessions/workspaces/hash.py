"""The hash backend (spec 7.2, 7.3): content hashes of a directory's files; no rollback.

Plain Python (no Django, no git).

Invariants:

- Every regular file below the directory is hashed (sha256, lowercase hex), dot-files
  included, except: a path whose FIRST segment is in ``SKIP_FIRST_SEGMENTS`` (``.git``,
  ``deps``, ``_build``, ``node_modules``, the seed's list), and a path matched by the ignore
  list (``ASM_WORKSPACE_IGNORE`` or the ``ignore`` argument; see ``ignore_matches``).
- Symlinks are never followed (a link cannot pull files from outside the workspace into a
  snapshot); a symlink is recorded as the sha256 of ``b"symlink:" + <its target>``, so
  retargeting it is a change. Other non-regular files (sockets, fifos) are skipped.
- A file that vanishes while the walk runs is skipped; an unreadable one is skipped and named
  in ``metadata["unreadable"]``.
- ``ref`` is the sha256 of the ``"<path>:<hash>"`` lines sorted by path, joined by ``"\\n"``;
  ``metadata["file_hashes"]`` maps every relative path (``/``-separated) to its hash.
- A diff lists added, removed and modified paths with no line counts (the hash backend has no
  content to count); ``insertions == deletions == 0``; ``patch`` is None.
- Rollback is impossible (no content is kept): ``invalid_operation``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence

from asm_core.errors import AsmError, ErrorCode
from asm_core.records import utcnow
from sessions.workspaces.records import SKIP_FIRST_SEGMENTS, Backend, Diff, FileChange, Snapshot

__all__ = [
    "IGNORE_ENV",
    "hash_diff",
    "hash_rollback",
    "hash_snapshot",
    "ignore_matches",
    "ignore_patterns",
]

#: Extra paths the hash backend (and the git backend, for untracked files) never captures.
IGNORE_ENV = "ASM_WORKSPACE_IGNORE"

_MAX_UNREADABLE_LISTED = 100


def ignore_patterns(value: str | None = None) -> tuple[str, ...]:
    """The ignore list: comma-separated glob patterns (``value``, else ``ASM_WORKSPACE_IGNORE``).

    A pattern without ``/`` matches any one path segment (``*.pyc``, ``__pycache__``,
    ``.venv``); a pattern with ``/`` matches the path from the workspace root (``build/out``,
    ``docs/*.pdf``). A matched directory is skipped with everything below it.
    """
    text = os.environ.get(IGNORE_ENV, "") if value is None else value
    return tuple(p.strip().strip("/") for p in text.split(",") if p.strip().strip("/"))


def ignore_matches(relpath: str, patterns: Sequence[str]) -> bool:
    """True when ``relpath`` (``/``-separated, relative to the workspace) is ignored."""
    name = relpath.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(relpath, pattern):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _skipped(relpath: str, patterns: Sequence[str]) -> bool:
    return relpath.split("/", 1)[0] in SKIP_FIRST_SEGMENTS or ignore_matches(relpath, patterns)


def _file_hash(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _hashes(root: str, patterns: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    hashes: dict[str, str] = {}
    unreadable: list[str] = []
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, prefix) if prefix else root))
        except OSError:
            if prefix:
                unreadable.append(prefix + "/")
                continue
            raise
        for entry in entries:
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            if _skipped(rel, patterns):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append(rel)
                elif stat.S_ISLNK(mode):
                    target = os.fsencode(os.readlink(entry.path))
                    hashes[rel] = hashlib.sha256(b"symlink:" + target).hexdigest()
                elif stat.S_ISREG(mode):
                    hashes[rel] = _file_hash(entry.path)
            except FileNotFoundError:
                continue  # removed while we walked
            except OSError:
                unreadable.append(rel)
    return hashes, unreadable


def _ref(hashes: Mapping[str, str]) -> str:
    lines = "\n".join(f"{path}:{digest}" for path, digest in sorted(hashes.items()))
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()


def hash_snapshot(
    path: str, label: str | None = None, *, ignore: Sequence[str] | None = None
) -> Snapshot:
    """Hash every file of the directory ``path`` (a checked real path; module docstring)."""
    if not path or not os.path.isdir(path):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"workspace path {path!r} is not an existing directory",
            {"field": "path"},
        )
    patterns = ignore_patterns() if ignore is None else tuple(ignore)
    hashes, unreadable = _hashes(path, patterns)
    metadata: dict[str, object] = {"file_hashes": dict(sorted(hashes.items()))}
    if unreadable:
        metadata["unreadable"] = sorted(unreadable)[:_MAX_UNREADABLE_LISTED]
    return Snapshot(
        backend=Backend.HASH.value,
        path=path,
        ref=_ref(hashes),
        label=label,
        captured_at=utcnow(),
        metadata=metadata,
    )


def _file_hashes(snapshot: Snapshot) -> Mapping[str, str]:
    hashes = snapshot.metadata.get("file_hashes")
    return hashes if isinstance(hashes, Mapping) else {}


def hash_diff(before: Snapshot, after: Snapshot) -> Diff:
    """Paths added, removed or modified between two hash snapshots (spec 7.3)."""
    if before.backend != Backend.HASH or after.backend != Backend.HASH:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "cannot diff snapshots of different backends",
            {"backends": [before.backend, after.backend]},
        )
    old, new = _file_hashes(before), _file_hashes(after)
    files: list[FileChange] = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            files.append(FileChange(path, "deleted"))
        elif path not in old:
            files.append(FileChange(path, "added"))
        elif old[path] != new[path]:
            files.append(FileChange(path, "modified"))
    return Diff(
        backend=Backend.HASH.value, from_ref=before.ref, to_ref=after.ref, files=tuple(files)
    )


def hash_rollback(snapshot: Snapshot) -> None:
    """Always refused: a hash snapshot keeps no content to restore (spec 7.4)."""
    if snapshot.backend != Backend.HASH:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"not a hash snapshot: {snapshot.backend}",
            {"backend": snapshot.backend},
        )
    raise AsmError(
        ErrorCode.INVALID_OPERATION,
        "hash rollback is unsupported: the hash backend keeps no file contents",
        {"backend": snapshot.backend},
    )
