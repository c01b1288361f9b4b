"""The git backend (spec 7.2-7.4, with asm's fixes): snapshots as private commits.

Plain Python (no Django); runs the ``git`` executable.

Invariants:

- Only a directory that is itself the top of a git work tree (``<path>/.git`` exists, as a
  directory or a gitfile) is a git workspace; git is never allowed to discover a repository
  above it (``GIT_CEILING_DIRECTORIES``), and every later command names the repository
  explicitly (``GIT_DIR``, ``GIT_WORK_TREE``), so ``core.worktree`` in the repository's
  config cannot point it elsewhere.
- A snapshot never touches the user's index, working tree, HEAD or branches: files are read
  with ``ls-files`` (tracked, plus untracked files that ``.gitignore`` does not exclude and
  whose first segment is not in ``SKIP_FIRST_SEGMENTS`` nor matched by the ignore list),
  hashed into the object store with ``hash-object --no-filters`` (exact bytes, no clean
  filter, no eol conversion), assembled in a TEMPORARY index (``GIT_INDEX_FILE``) and written
  as a tree; the user's index is read from a copy. The snapshot is a commit (parent: HEAD,
  plus a commit of the user's index when that differs from HEAD) whose message carries
  ``asm-head``, ``asm-branch`` and ``asm-index-tree`` trailers; with ``ref_name`` it is kept
  reachable by a ref in the private namespace ``refs/asm/`` (never a branch or tag).
  Symlinks are stored as links (never followed); submodules keep their index entry; nested
  repositories that are not submodules are not captured.
- Diffs compare two snapshot commits (``git diff --raw --numstat --no-renames``): exact
  paths, per-file line counts (binary: None, counted 0). The patch (``capture_patch``) is
  kept only when its size is at most ``max_patch_bytes``; otherwise ``patch`` is None and
  ``metadata.patch_truncated`` is true (the seed's rule); ``metadata.patch_bytes`` is the
  full size either way.
- Rollback first points ``safety_ref`` at the post-run snapshot (which also keeps the run's
  commits reachable), then restores the pre-run state exactly: files the run modified or
  deleted get their snapshot bytes and executable bit back, files it created are deleted
  (and directories left empty that held nothing before), HEAD and its branch move back if
  the run moved them, and the index is reset to its snapshot only if the run changed it.
  Ignored files are outside snapshots and left alone. Writes never follow a symlink: a
  path component in the way is removed, and every write lands inside the workspace.
- Safety: every command runs with hooks off (``core.hooksPath=/dev/null``), fsmonitor off,
  no pager, no auto-gc, no signing, ``--no-ext-diff --no-textconv`` on diffs and
  ``--no-filters`` when hashing (so no clean/smudge filter runs), no system or global config
  (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``, ``HOME`` an empty directory),
  and an environment built from scratch (``PATH`` and locale only, never the worker's
  ``GIT_*``). Files are written by this module, never by ``checkout``/``reset``.
- A failing git command is ``storage_error`` ("git command failed: ..."); a path that is
  not a git workspace is ``validation_error``.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from asm_core.errors import AsmError, ErrorCode
from asm_core.records import utcnow
from sessions.workspaces.hash import ignore_matches, ignore_patterns
from sessions.workspaces.records import (
    SKIP_FIRST_SEGMENTS,
    Backend,
    Diff,
    FileChange,
    Snapshot,
)
from sessions.workspaces.safety import path_inside

__all__ = [
    "DEFAULT_MAX_PATCH_BYTES",
    "GIT_TIMEOUT_S",
    "GitRepo",
    "git_checkout_at",
    "git_diff",
    "git_keep",
    "git_repo",
    "git_rollback",
    "git_snapshot",
    "git_snapshot_load",
]

DEFAULT_MAX_PATCH_BYTES = 1_048_576
#: Upper bound for one git command (a snapshot of a very large tree still fits).
GIT_TIMEOUT_S = 300.0

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_IDENTITY = ("asm", "asm@localhost")
_SAFE_CONFIG: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.pager=cat",
    "-c", "core.untrackedCache=false",
    "-c", "core.quotePath=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "commit.gpgSign=false",
    "-c", "color.ui=false",
    "-c", "diff.noprefix=false",
    "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.relative=false",
    "-c", "log.showSignature=false",
)  # fmt: skip
_DIFF_FLAGS = ("--no-ext-diff", "--no-textconv", "--no-color", "--no-renames")
_GITLINK = b"160000"
_SYMLINK = b"120000"
_EXECUTABLE = b"100755"
_REGULAR = b"100644"
_STATUS = {"A": "added", "D": "deleted", "M": "modified", "T": "type_changed"}


@dataclass(frozen=True)
class GitRepo:
    """A work tree (real path) and its git directory (real path)."""

    worktree: str
    gitdir: str


# --------------------------------------------------------------------------- running git


@functools.cache
def _empty_home() -> str:
    home = tempfile.mkdtemp(prefix="asm-git-home-")
    atexit.register(shutil.rmtree, home, True)
    return home


def _env(repo: GitRepo | None, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "HOME": _empty_home(),
        "LC_ALL": "C",
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_AUTHOR_NAME": _IDENTITY[0],
        "GIT_AUTHOR_EMAIL": _IDENTITY[1],
        "GIT_COMMITTER_NAME": _IDENTITY[0],
        "GIT_COMMITTER_EMAIL": _IDENTITY[1],
    }
    tmpdir = os.environ.get("TMPDIR")
    if tmpdir:
        env["TMPDIR"] = tmpdir
    if repo is not None:
        env["GIT_DIR"] = repo.gitdir
        env["GIT_WORK_TREE"] = repo.worktree
    env.update(extra)
    return env


def _git_bin(env: Mapping[str, str]) -> str:
    found = shutil.which("git", path=env["PATH"])
    if found is None:
        raise AsmError(ErrorCode.STORAGE_ERROR, "git command failed: git is not installed")
    return found


def _failed(args: Sequence[str], returncode: int | None, stderr: bytes) -> AsmError:
    text = stderr.decode("utf-8", "replace").strip()[:1000]
    return AsmError(
        ErrorCode.STORAGE_ERROR,
        f"git command failed: git {args[0]}: {text or f'exit status {returncode}'}",
        {"command": args[0], "returncode": returncode},
    )


def _run(
    repo: GitRepo | None,
    args: Sequence[str],
    *,
    cwd: str,
    stdin: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    env = dict(env) if env is not None else _env(repo)
    try:
        proc = subprocess.run(  # noqa: S603 (fixed argv, no shell)
            [_git_bin(env), *_SAFE_CONFIG, *args],
            cwd=cwd,
            env=env,
            input=stdin,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AsmError(
            ErrorCode.STORAGE_ERROR,
            f"git command failed: git {args[0]}: timed out after {GIT_TIMEOUT_S:g} s",
            {"command": args[0]},
        ) from exc
    except OSError as exc:
        raise AsmError(
            ErrorCode.STORAGE_ERROR, f"git command failed: git {args[0]}: {exc}"
        ) from exc
    if check and proc.returncode != 0:
        raise _failed(args, proc.returncode, proc.stderr)
    return proc


def _git(repo: GitRepo, *args: str, stdin: bytes | None = None, **extra_env: str) -> bytes:
    env = _env(repo, **extra_env) if extra_env else None
    return _run(repo, args, cwd=repo.worktree, stdin=stdin, env=env).stdout


def _git_maybe(repo: GitRepo, *args: str, **extra_env: str) -> str | None:
    """stdout (stripped) of a command that may fail; None when it does."""
    env = _env(repo, **extra_env) if extra_env else None
    proc = _run(repo, args, cwd=repo.worktree, check=False, env=env)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("ascii", "replace").strip() or None


# --------------------------------------------------------------------------- detection


def git_repo(path: str) -> GitRepo | None:
    """The repository whose work tree is exactly ``path`` (a real path), else None."""
    if not os.path.lexists(os.path.join(path, ".git")):
        return None
    env = _env(None, GIT_CEILING_DIRECTORIES=os.path.dirname(path) or "/")
    try:
        proc = _run(None, ["rev-parse", "--absolute-git-dir"], cwd=path, check=False, env=env)
    except AsmError:
        return None  # no git executable: not a git workspace for ``auto``
    if proc.returncode != 0:
        return None
    gitdir = os.fsdecode(proc.stdout.rstrip(b"\n"))
    return GitRepo(worktree=path, gitdir=os.path.realpath(gitdir)) if gitdir else None


def _require_repo(path: str) -> GitRepo:
    repo = git_repo(path)
    if repo is None:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{path!r} is not the top of a git work tree",
            {"field": "path", "backend": Backend.GIT.value},
        )
    return repo


# --------------------------------------------------------------------------- snapshot


def _split_z(data: bytes) -> list[bytes]:
    return [item for item in data.split(b"\0") if item]


def _rev(repo: GitRepo, name: str) -> str | None:
    return _git_maybe(repo, "rev-parse", "-q", "--verify", f"{name}^{{commit}}")


def _head_branch(repo: GitRepo) -> str | None:
    return _git_maybe(repo, "symbolic-ref", "-q", "HEAD")


def _index_tree(repo: GitRepo) -> str | None:
    """The tree of the user's index, written from a COPY of it (None if it cannot be)."""
    with tempfile.TemporaryDirectory(prefix="asm-index-") as tmp:
        copy = os.path.join(tmp, "index")
        real = os.path.join(repo.gitdir, "index")
        if os.path.exists(real):
            shutil.copyfile(real, copy)
        return _git_maybe(repo, "write-tree", GIT_INDEX_FILE=copy)


def _hash_objects(repo: GitRepo, files: Sequence[str]) -> list[str]:
    """Blob ids of ``files`` (absolute paths), written to the object store, no filters."""
    shas: dict[int, str] = {}
    batch = [(i, f) for i, f in enumerate(files) if "\n" not in f]
    if batch:
        out = _git(
            repo,
            "hash-object",
            "-w",
            "--no-filters",
            "--stdin-paths",
            stdin=b"".join(os.fsencode(f) + b"\n" for _, f in batch),
        )
        lines = out.decode("ascii").split()
        if len(lines) != len(batch):
            raise AsmError(ErrorCode.STORAGE_ERROR, "git command failed: git hash-object")
        shas.update((i, sha) for (i, _), sha in zip(batch, lines, strict=True))
    for i, f in enumerate(files):
        if "\n" in f:  # --stdin-paths is line-based
            shas[i] = _git(repo, "hash-object", "-w", "--no-filters", "--", f).decode().strip()
    return [shas[i] for i in range(len(files))]


def _worktree_tree(repo: GitRepo, patterns: Sequence[str]) -> str:
    """The tree of the work tree's current files (module docstring), via a temporary index."""
    gitlinks: dict[bytes, bytes] = {}
    paths: set[bytes] = set()
    for record in _split_z(_git(repo, "ls-files", "-z", "--stage", "--cached")):
        meta, _, path = record.partition(b"\t")
        mode, sha, _stage = meta.split(b" ")
        if mode == _GITLINK:
            gitlinks[path] = sha
        else:
            paths.add(path)
    # The --exclude patterns only spare git the walk into skipped directories; the checks
    # below decide (with the hash backend's pattern semantics).
    excludes = [f"--exclude=/{name}/" for name in sorted(SKIP_FIRST_SEGMENTS)]
    excludes += [f"--exclude={p}" for p in patterns if not p.startswith(("!", "#"))]
    others = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", *excludes)
    for path in _split_z(others):
        rel = os.fsdecode(path)
        if path.endswith(b"/") or rel.split("/", 1)[0] in SKIP_FIRST_SEGMENTS:
            continue  # a nested repository, or the seed's skip list
        if not ignore_matches(rel, patterns):
            paths.add(path)
    entries: list[tuple[bytes, str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="asm-snapshot-") as tmp:
        to_hash: list[tuple[bytes, bytes, str]] = []  # (mode, path, file to hash)
        for path in sorted(paths):
            full = os.path.join(repo.worktree, os.fsdecode(path))
            try:
                st_mode = os.lstat(full).st_mode
                if stat.S_ISREG(st_mode):
                    executable = st_mode & stat.S_IXUSR
                    to_hash.append((_EXECUTABLE if executable else _REGULAR, path, full))
                elif stat.S_ISLNK(st_mode):
                    holder = os.path.join(tmp, str(len(to_hash)))
                    with open(holder, "wb") as handle:
                        handle.write(os.fsencode(os.readlink(full)))
                    to_hash.append((_SYMLINK, path, holder))
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted (or its directory replaced by a file)
        shas = _hash_objects(repo, [f for _, _, f in to_hash])
        entries.extend((m, sha, p) for (m, p, _), sha in zip(to_hash, shas, strict=True))
        for path, sha in gitlinks.items():
            if os.path.isdir(os.path.join(repo.worktree, os.fsdecode(path))):
                entries.append((_GITLINK, sha.decode("ascii"), path))
        index = os.path.join(tmp, "index")
        info = b"".join(b"%s %s\t%s\0" % (m, s.encode("ascii"), p) for m, s, p in entries)
        _git(repo, "update-index", "-z", "--index-info", stdin=info, GIT_INDEX_FILE=index)
        return _git(repo, "write-tree", GIT_INDEX_FILE=index).decode("ascii").strip()


def _trailers(head: str | None, branch: str | None, index_tree: str | None) -> str:
    return (
        f"asm-head: {head or 'none'}\n"
        f"asm-branch: {branch or 'none'}\n"
        f"asm-index-tree: {index_tree or 'none'}\n"
    )


def _commit(repo: GitRepo, tree: str, parents: Iterable[str], message: str) -> str:
    args = ["commit-tree", "--no-gpg-sign"]
    for parent in parents:
        args += ["-p", parent]
    return _git(repo, *args, tree, stdin=message.encode()).decode("ascii").strip()


def git_snapshot(
    path: str,
    label: str | None = None,
    *,
    ref_name: str | None = None,
    ignore: Sequence[str] | None = None,
) -> Snapshot:
    """Capture the work tree at ``path`` as a snapshot commit (module docstring)."""
    repo = _require_repo(path)
    patterns = ignore_patterns() if ignore is None else tuple(ignore)
    head = _rev(repo, "HEAD")
    branch = _head_branch(repo)
    index_tree = _index_tree(repo)
    tree = _worktree_tree(repo, patterns)
    head_tree = _git_maybe(repo, "rev-parse", f"{head}^{{tree}}") if head else None
    parents = [head] if head else []
    if index_tree is not None and index_tree != head_tree:
        parents.append(_commit(repo, index_tree, [], "asm snapshot: index\n"))
    message = f"asm snapshot: {label or 'snapshot'}\n\n" + _trailers(head, branch, index_tree)
    commit = _commit(repo, tree, parents, message)
    if ref_name is not None:
        _git(repo, "update-ref", "-m", f"asm snapshot {label or ''}".strip(), ref_name, commit)
    return Snapshot(
        backend=Backend.GIT.value,
        path=path,
        ref=commit,
        label=label,
        captured_at=utcnow(),
        metadata={
            "head_ref": head,
            "branch": branch,
            "tree": tree,
            "index_tree": index_tree,
            "dirty": tree != head_tree,
            "ref_name": ref_name,
        },
    )


def git_keep(path: str, ref_name: str, commit: str) -> None:
    """Point ``ref_name`` (under ``refs/asm/``) at a snapshot commit, keeping it reachable."""
    if not ref_name.startswith("refs/asm/"):
        raise AsmError(ErrorCode.VALIDATION_ERROR, "snapshot refs live under refs/asm/")
    _git(_require_repo(path), "update-ref", "-m", "asm snapshot", ref_name, commit)


def _parse_trailers(raw: bytes) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("asm-head", "asm-branch", "asm-index-tree"):
            found[key] = None if value.strip() == "none" else value.strip()
    return found


def git_snapshot_load(path: str, ref: str, label: str | None = None) -> Snapshot:
    """A snapshot record rebuilt from its commit (``ref``: commit id or ref name)."""
    repo = _require_repo(path)
    commit = _rev(repo, ref)
    if commit is None:
        raise AsmError(
            ErrorCode.NOT_FOUND, f"no snapshot {ref!r} in {path!r}", {"ref": ref, "path": path}
        )
    trailers = _parse_trailers(_git(repo, "cat-file", "commit", commit))
    if "asm-head" not in trailers:
        raise AsmError(ErrorCode.VALIDATION_ERROR, f"{ref!r} is not an asm snapshot", {"ref": ref})
    head = trailers.get("asm-head")
    tree = _git(repo, "rev-parse", f"{commit}^{{tree}}").decode("ascii").strip()
    head_tree = _git_maybe(repo, "rev-parse", f"{head}^{{tree}}") if head else None
    return Snapshot(
        backend=Backend.GIT.value,
        path=path,
        ref=commit,
        label=label,
        captured_at=utcnow(),
        metadata={
            "head_ref": head,
            "branch": trailers.get("asm-branch"),
            "tree": tree,
            "index_tree": trailers.get("asm-index-tree"),
            "dirty": tree != head_tree,
            "ref_name": ref if ref != commit else None,
        },
    )


# --------------------------------------------------------------------------- diff


def _check_pair(before: Snapshot, after: Snapshot) -> None:
    if before.backend != Backend.GIT or after.backend != Backend.GIT:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "cannot diff snapshots of different backends",
            {"backends": [before.backend, after.backend]},
        )
    if before.path != after.path:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            "cannot diff git snapshots of different paths",
            {"paths": [before.path, after.path]},
        )


def _parse_raw_numstat(out: bytes) -> list[FileChange]:
    """``git diff --raw --numstat -z``: the raw records, then the numstat records."""
    tokens = out.split(b"\0")
    statuses: dict[bytes, str] = {}
    i = 0
    while i < len(tokens) and tokens[i].startswith(b":"):
        status = tokens[i].split(b" ")[-1].decode("ascii")[:1]
        statuses[tokens[i + 1]] = _STATUS.get(status, "modified")
        i += 2
    counts: dict[bytes, tuple[int | None, int | None]] = {}
    for token in tokens[i:]:
        if not token:
            continue
        added, removed, path = token.split(b"\t", 2)
        counts[path] = (
            None if added == b"-" else int(added),
            None if removed == b"-" else int(removed),
        )
    return [
        FileChange(
            path=path.decode("utf-8", "replace"),
            status=status,
            insertions=counts.get(path, (None, None))[0],
            deletions=counts.get(path, (None, None))[1],
        )
        for path, status in sorted(statuses.items())
    ]


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:  # pragma: no cover (always a pipe here)
        raise AsmError(ErrorCode.STORAGE_ERROR, "git command failed: no pipe")
    return stream


def _read_capped(stream: IO[bytes], cap: int) -> tuple[bytes | None, int]:
    """Read all of ``stream``; keep it only if it has at most ``cap`` bytes."""
    kept = bytearray()
    total = 0
    while chunk := stream.read(65536):
        total += len(chunk)
        if total <= cap:
            kept += chunk
        else:
            kept.clear()
    return (bytes(kept) if total <= cap else None), total


def _patch(repo: GitRepo, before: str, after: str, cap: int) -> tuple[bytes | None, int]:
    env = _env(repo)
    args = ["diff", "--patch", "--src-prefix=a/", "--dst-prefix=b/", *_DIFF_FLAGS, before, after]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
            [_git_bin(env), *_SAFE_CONFIG, *args],
            cwd=repo.worktree,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as proc,
    ):
        patch, total = _read_capped(_pipe(proc.stdout), cap)
        returncode = proc.wait(timeout=GIT_TIMEOUT_S)
        if returncode != 0:
            errors.seek(0)
            raise _failed(args, returncode, errors.read())
    return patch, total


def git_diff(
    before: Snapshot,
    after: Snapshot,
    *,
    capture_patch: bool = False,
    max_patch_bytes: int = DEFAULT_MAX_PATCH_BYTES,
) -> Diff:
    """What changed from ``before`` to ``after`` (module docstring; spec 7.3)."""
    _check_pair(before, after)
    repo = _require_repo(before.path)
    out = _git(repo, "diff", "--raw", "--numstat", "-z", *_DIFF_FLAGS, before.ref, after.ref)
    files = tuple(_parse_raw_numstat(out))
    metadata: dict[str, Any] = {"patch_truncated": False}
    patch: str | None = None
    if capture_patch:
        raw, size = _patch(repo, before.ref, after.ref, max_patch_bytes)
        metadata = {"patch_truncated": raw is None, "patch_bytes": size}
        patch = None if raw is None else raw.decode("utf-8", "replace")
    return Diff(
        backend=Backend.GIT.value,
        from_ref=before.ref,
        to_ref=after.ref,
        files=files,
        patch=patch,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- writing files


def _blobs(repo: GitRepo, shas: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """``(sha, content)`` for each blob, streamed through one ``cat-file --batch``."""
    if not shas:
        return
    env = _env(repo)
    with subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
        [_git_bin(env), *_SAFE_CONFIG, "cat-file", "--batch"],
        cwd=repo.worktree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        stdin, stdout = _pipe(proc.stdin), _pipe(proc.stdout)
        try:
            for sha in shas:
                stdin.write(sha.encode("ascii") + b"\n")
                stdin.flush()
                header = stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise AsmError(
                        ErrorCode.STORAGE_ERROR, f"git command failed: git cat-file: {sha} missing"
                    )
                content = stdout.read(int(header[2]))
                stdout.read(1)  # the newline after each object
                yield sha, content
        finally:
            stdin.close()
            proc.wait(timeout=GIT_TIMEOUT_S)


def _make_parents(root: str, rel: str) -> str:
    """Create the directories of ``rel`` below ``root``; anything else in the way (a file, a
    symlink) is removed, so nothing is ever written through a link. Returns the full path."""
    current = root
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            os.mkdir(current)
            continue
        if not stat.S_ISDIR(mode):
            os.unlink(current)
            os.mkdir(current)
    full = os.path.join(root, rel)
    if not path_inside(root, os.path.dirname(full)):
        raise AsmError(ErrorCode.STORAGE_ERROR, f"refusing to write outside the workspace: {rel}")
    return full


def _write_entry(root: str, rel: str, mode: bytes, content: bytes) -> None:
    """Put one snapshot entry back at ``rel`` exactly (content, executable bit, link)."""
    full = _make_parents(root, rel)
    try:
        found = os.lstat(full)
    except FileNotFoundError:
        current, links = None, 0
    else:
        current, links = found.st_mode, found.st_nlink
    if current is not None and stat.S_ISDIR(current):
        try:
            os.rmdir(full)
        except OSError as exc:
            raise AsmError(
                ErrorCode.STORAGE_ERROR,
                f"cannot restore {rel!r}: a non-empty directory is in the way",
                {"path": rel},
            ) from exc
        current = None
    if mode == _SYMLINK:
        if current is not None:
            os.unlink(full)
        os.symlink(content, os.fsencode(full))
        return
    executable = mode == _EXECUTABLE
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if current is not None and stat.S_ISREG(current) and links == 1:
        # In place (keeps owner and permissions); a file with other hard links is replaced
        # instead, so a link planted by the run cannot carry the write out of the workspace.
        fd = os.open(full, os.O_WRONLY | os.O_TRUNC | nofollow)
        perms = stat.S_IMODE(current)
        perms = perms | ((perms & 0o444) >> 2) if executable else perms & ~0o111
        os.fchmod(fd, perms)
    else:
        if current is not None:
            os.unlink(full)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow
        fd = os.open(full, flags, 0o777 if executable else 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def _remove_entry(root: str, rel: str, keep_dirs: set[str]) -> None:
    """Delete a file (or link) the run created, then its directories left empty that held
    nothing before (``keep_dirs``: the directories of the snapshot being restored)."""
    full = os.path.join(root, rel)
    if not path_inside(root, os.path.dirname(full)):
        return  # its directory was swapped for a link leading out: never delete there
    try:
        if not stat.S_ISDIR(os.lstat(full).st_mode):
            os.unlink(full)
    except FileNotFoundError:
        pass
    parent = rel.rpartition("/")[0]
    while parent and parent not in keep_dirs:
        try:
            os.rmdir(os.path.join(root, parent))
        except OSError:
            break
        parent = parent.rpartition("/")[0]


def _tree_dirs(repo: GitRepo, commit: str) -> set[str]:
    out = _git(repo, "ls-tree", "-r", "-d", "-z", "--name-only", commit)
    return {os.fsdecode(p) for p in _split_z(out)}


def _restore_files(repo: GitRepo, changes: Sequence[tuple[bytes, bytes, str]]) -> int:
    """Write ``(mode, path, sha)`` snapshot entries into the work tree; gitlinks are skipped."""
    wanted = [(mode, path, sha) for mode, path, sha in changes if mode != _GITLINK]
    by_sha: dict[str, list[tuple[bytes, bytes]]] = {}
    for mode, path, sha in wanted:
        by_sha.setdefault(sha, []).append((mode, path))
    for sha, content in _blobs(repo, list(by_sha)):
        for mode, path in by_sha[sha]:
            _write_entry(repo.worktree, os.fsdecode(path), mode, content)
    return len(wanted)


def _tree_changes(
    repo: GitRepo, current: str, target: str
) -> tuple[list[str], list[tuple[bytes, bytes, str]]]:
    """What turns ``current``'s tree into ``target``'s: paths to remove, entries to write."""
    out = _git(repo, "diff-tree", "-r", "-z", "--no-renames", current, target)
    tokens = out.split(b"\0")
    removals: list[str] = []
    writes: list[tuple[bytes, bytes, str]] = []
    i = 0
    while i + 1 < len(tokens) and tokens[i].startswith(b":"):
        _old_mode, new_mode, _old, new_sha, status = tokens[i][1:].split(b" ")
        path = tokens[i + 1]
        if status == b"D":
            removals.append(os.fsdecode(path))
        else:
            writes.append((new_mode, path, new_sha.decode("ascii")))
        i += 2
    removals.sort(key=lambda p: (-p.count("/"), p))  # deepest first
    return removals, writes


def _restore_head(repo: GitRepo, head: str | None, branch: str | None) -> bool:
    """Put HEAD (and its branch) back where the snapshot saw them; True when moved."""
    moved = False
    if branch is not None:
        if _head_branch(repo) != branch:
            _git(repo, "symbolic-ref", "-m", "asm rollback", "HEAD", branch)
            moved = True
        now = _rev(repo, branch)
        if now != head:
            if head is None:
                _git(repo, "update-ref", "-m", "asm rollback", "-d", branch)
            else:
                _git(repo, "update-ref", "-m", "asm rollback", branch, head)
            moved = True
    elif head is not None and (_head_branch(repo) is not None or _rev(repo, "HEAD") != head):
        _git(repo, "update-ref", "-m", "asm rollback", "--no-deref", "HEAD", head)
        moved = True
    return moved


def git_rollback(before: Snapshot, after: Snapshot, *, safety_ref: str) -> dict[str, Any]:
    """Restore the work tree to ``before``; ``after`` is the current state (module docstring).

    Returns ``{safety_ref, restored, removed, head_restored, index_restored}``.
    """
    _check_pair(before, after)
    repo = _require_repo(before.path)
    _git(repo, "update-ref", "-m", "asm safety ref before rollback", safety_ref, after.ref)
    removals, writes = _tree_changes(repo, after.ref, before.ref)
    if removals:
        keep = _tree_dirs(repo, before.ref)
        for rel in removals:
            _remove_entry(repo.worktree, rel, keep)
    restored = _restore_files(repo, writes)
    head_restored = _restore_head(
        repo, before.metadata.get("head_ref"), before.metadata.get("branch")
    )
    index_restored = False
    wanted_index = before.metadata.get("index_tree")
    if isinstance(wanted_index, str) and _index_tree(repo) != wanted_index:
        _git(repo, "read-tree", wanted_index)
        index_restored = True
    return {
        "safety_ref": safety_ref,
        "restored": restored,
        "removed": len(removals),
        "head_restored": head_restored,
        "index_restored": index_restored,
    }


# --------------------------------------------------------------------------- checkout


def git_checkout_at(source: str, ref: str, dest: str) -> dict[str, Any]:
    """A new work tree at ``dest`` holding snapshot ``ref`` of the git workspace ``source``.

    ``source`` and ``dest`` are checked real paths (``dest`` absent or an empty directory).
    ``dest`` becomes a clone of ``source`` (its history, its branches as ``origin/*``) whose
    files are exactly the snapshot's, whose HEAD/branch is the snapshot's HEAD/branch, whose
    index is the snapshot's index and which keeps the snapshot at ``refs/asm/forked-from``.
    Returns ``{path, ref, head, branch, tree}``.
    """
    snapshot = git_snapshot_load(source, ref)
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest):
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"{dest!r} exists and is not an empty directory",
                {"field": "dest"},
            )
        os.rmdir(dest)
    parent = os.path.dirname(dest)
    _run(
        None,
        ["clone", "--quiet", "--no-checkout", "--", snapshot.path, dest],
        cwd=parent,
        env=_env(None, GIT_CEILING_DIRECTORIES=parent),
    )
    repo = _require_repo(dest)
    try:
        if _rev(repo, snapshot.ref) is None:
            raise AsmError(ErrorCode.STORAGE_ERROR, f"snapshot {snapshot.ref} was not copied")
        _git(repo, "update-ref", "refs/asm/forked-from", snapshot.ref)
        entries: list[tuple[bytes, bytes, str]] = []
        for record in _split_z(_git(repo, "ls-tree", "-r", "-z", "--full-tree", snapshot.ref)):
            meta, _, path = record.partition(b"\t")
            mode, _type, sha = meta.split(b" ")
            entries.append((mode, path, sha.decode("ascii")))
        _restore_files(repo, entries)
        head, branch = snapshot.metadata.get("head_ref"), snapshot.metadata.get("branch")
        _restore_head(repo, head, branch)
        index = snapshot.metadata.get("index_tree") or head
        if index:
            _git(repo, "read-tree", str(index))
        else:
            _git(repo, "read-tree", "--empty")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return {
        "path": dest,
        "ref": snapshot.ref,
        "head": head,
        "branch": branch,
        "tree": snapshot.metadata.get("tree"),
    }
