"""Real git repositories for the workspace tests (the `git` executable, no mocks).

`Repo` drives a repository the way a user (or an agent) would: it runs plain `git` with a
fixed identity and no global/system config. `files_of` captures a directory's complete
state (every file's bytes, executable bit and symlink target, `.git` excluded) so a test can
assert that something was restored EXACTLY or left untouched.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "User",
    "GIT_AUTHOR_EMAIL": "user@example.com",
    "GIT_COMMITTER_NAME": "User",
    "GIT_COMMITTER_EMAIL": "user@example.com",
    "LC_ALL": "C",
}


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def root(self) -> str:
        return os.path.realpath(self.path)

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=GIT_ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {args}: {proc.stderr}")
        return proc.stdout

    def write(self, rel: str, text: str | bytes, *, executable: bool = False) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        data = text.encode() if isinstance(text, str) else text
        target.write_bytes(data)
        if executable:
            target.chmod(0o755)

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def commit(self, message: str = "commit") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def refs(self) -> dict[str, str]:
        """Every ref outside the private `refs/asm/` namespace, with HEAD's target."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)")
        refs = dict(line.split(" ", 1) for line in out.splitlines())
        refs = {k: v for k, v in refs.items() if not k.startswith("refs/asm/")}
        refs["HEAD"] = self.git("rev-parse", "-q", "--verify", "HEAD", check=False).strip()
        refs["HEAD->"] = self.git("symbolic-ref", "-q", "HEAD", check=False).strip()
        return refs

    def asm_refs(self) -> list[str]:
        return self.git("for-each-ref", "--format=%(refname)", "refs/asm/").split()

    def index_bytes(self) -> bytes:
        index = self.path / ".git" / "index"
        return index.read_bytes() if index.exists() else b""

    def user_state(self) -> dict[str, Any]:
        """Everything a snapshot must leave untouched."""
        return {
            "files": files_of(self.path),
            "index": self.index_bytes(),
            "refs": self.refs(),
            "stash": self.git("stash", "list"),
            "status": self.git("status", "--porcelain", "--untracked-files=all"),
        }


def make_repo(path: Path, files: dict[str, str] | None = None) -> Repo:
    """A repository at `path` on branch `main` with `files` committed."""
    path.mkdir(parents=True, exist_ok=True)
    repo = Repo(path)
    repo.git("init", "-q", "-b", "main")
    for rel, text in (files or {"file.txt": "one\ntwo\nthree\n"}).items():
        repo.write(rel, text)
    repo.commit("initial")
    return repo


def files_of(root: Path | str, *, skip_git: bool = True) -> dict[str, Any]:
    """`{relative path: ("file", bytes, executable) | ("link", target) | ("dir",)}`."""
    found: dict[str, Any] = {}
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        if skip_git and rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(mode):
                found[rel] = ("dir",)
            else:
                with open(full, "rb") as handle:
                    found[rel] = ("file", handle.read(), bool(mode & stat.S_IXUSR))
    return found
