"""Plain records of workspace snapshots and diffs (spec 7.2, 7.3), and the shared skip list.

Plain Python (no Django). Records are immutable and JSON-ready through ``to_dict``.

Invariants:

- ``Snapshot.path`` is the real (symlink-resolved, absolute) directory that was captured.
- ``Snapshot.ref`` identifies the captured content: for ``git`` the snapshot commit's id
  (its tree is the whole work tree: tracked and untracked, not ignored, files), for ``hash``
  the sha256 over the sorted ``"<path>:<sha256>"`` lines (spec 7.2).
- ``Diff.changed_paths`` is sorted and unique; ``files_changed == len(changed_paths)``;
  ``insertions``/``deletions`` are sums over ``files`` (binary files count 0); ``patch`` is
  None unless it was captured and fits ``max_patch_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "SKIP_FIRST_SEGMENTS",
    "Backend",
    "Diff",
    "FileChange",
    "Snapshot",
    "SnapshotLabel",
]

#: A path whose FIRST segment is one of these is never captured (the seed's hash skip list;
#: the git backend applies it to untracked files).
SKIP_FIRST_SEGMENTS = frozenset({".git", "deps", "_build", "node_modules"})


class Backend(StrEnum):
    GIT = "git"
    HASH = "hash"


class SnapshotLabel(StrEnum):
    BEFORE = "before"
    AFTER = "after"
    AFTER_FAILURE = "after_failure"
    #: asm addition: the state just before a manual rollback (``workspace_run_undo``).
    BEFORE_UNDO = "before_undo"
    #: asm addition: a snapshot taken on request (``workspace_snapshot_take``).
    MANUAL = "manual"


@dataclass(frozen=True)
class Snapshot:
    backend: str
    path: str
    ref: str
    label: str | None
    captured_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "path": self.path,
            "ref": self.ref,
            "label": self.label,
            "captured_at": self.captured_at.isoformat(),
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class FileChange:
    """One changed path: ``status`` is ``added``, ``deleted``, ``modified`` or
    ``type_changed``; line counts are None for binary files and for the hash backend."""

    path: str
    status: str
    insertions: int | None = None
    deletions: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "insertions": self.insertions,
            "deletions": self.deletions,
        }


@dataclass(frozen=True)
class Diff:
    backend: str
    from_ref: str
    to_ref: str
    files: tuple[FileChange, ...] = ()
    patch: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def changed_paths(self) -> list[str]:
        return sorted({f.path for f in self.files})

    @property
    def files_changed(self) -> int:
        return len(self.changed_paths)

    @property
    def insertions(self) -> int:
        return sum(f.insertions or 0 for f in self.files)

    @property
    def deletions(self) -> int:
        return sum(f.deletions or 0 for f in self.files)

    def summary(self) -> dict[str, Any]:
        """The seed's ``summary(diff)``."""
        return {
            "files_changed": self.files_changed,
            "insertions": self.insertions,
            "deletions": self.deletions,
            "changed_paths": self.changed_paths,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "from_ref": self.from_ref,
            "to_ref": self.to_ref,
            **self.summary(),
            "files": [f.to_dict() for f in self.files],
            "patch": self.patch,
            "metadata": dict(self.metadata),
        }
