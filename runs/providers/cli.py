"""The one way CLI adapters (claude_code, codex, amp) run their binary.

Plain Python (no Django). Invariants:

- The child starts with stdin closed (``/dev/null``: CLIs that read a piped stdin would
  hang), in its own session and process group, so cancel and clean-up reach every process
  it started (a shell a tool runs, that shell's children).
- stdout is read as JSON lines, one at a time, each line capped at ``max_line_bytes``
  (a longer line fails the run with ``provider_error``, it is never half-parsed). Lines that
  are not JSON objects are skipped (logged at debug): CLIs print banners.
- stderr is drained on a thread of its own (a full pipe would block the child) and its last
  ``stderr_tail_bytes`` are kept for error messages.
- Cancel: when the token is set the group gets SIGTERM, then SIGKILL after
  ``kill_grace_s``; the call then raises ``AsmError("cancelled")``.
- On the way out (success, failure or cancel) whatever is left of the group is killed: no
  orphan outlives its run.
- ``CliOutcome.raise_unless_finished``: EOF without the provider's terminal line is a failure:
  a non-zero exit -> the error the stderr text maps to (``errors.error_from_text``), a zero
  exit -> ``provider_error`` "interrupted".
- ``child_env`` builds the child's environment from scratch, never the worker's whole one
  (the agent runs shell commands; the service's secrets must not reach them): ``PATH`` (the
  worker's, else ``DEFAULT_PATH``), the proxy and CA-bundle variables (``NETWORK_ENV``) and
  the names the adapter lists, each only when the worker has it set to a non-empty value.
  The adapter then adds its own (home, key, base URL).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from runs.providers.base import CancelToken
from runs.providers.errors import error_from_text, provider_error

__all__ = [
    "DEFAULT_PATH",
    "NETWORK_ENV",
    "NODE_ENV",
    "SESSION_ENV",
    "CliOutcome",
    "child_env",
    "find_binary",
    "run_jsonl",
]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024 * 1024
STDERR_TAIL_BYTES = 4096

#: The child's ``PATH`` when the worker has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: How the child reaches the network: proxies and CA bundles. Every CLI child gets them.
NETWORK_ENV: tuple[str, ...] = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
#: Node's own CA-bundle variable, for the CLIs that run on Node (claude_code, amp; codex is
#: a native binary).
NODE_ENV: tuple[str, ...] = ("NODE_EXTRA_CA_CERTS",)
#: Locale, time zone, temp dir and login identity, for CLIs whose agent shell should see
#: the worker's (claude_code, amp).
SESSION_ENV: tuple[str, ...] = (
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
)

#: Called with each JSON object the CLI prints; returns True once that line was the
#: provider's terminal one (the run's result is known).
OnLine = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class CliOutcome:
    """How the process ended."""

    provider: str
    exit_code: int
    finished: bool  # a terminal line was seen
    stderr_tail: str

    def raise_unless_finished(self) -> None:
        """EOF without a terminal line: the stderr-mapped error, or "interrupted"."""
        if self.finished:
            return
        if self.exit_code != 0:
            text = self.stderr_tail.strip() or f"exited with code {self.exit_code}"
            error = error_from_text(self.provider, text)
            error.details.setdefault("exit_code", self.exit_code)
            raise error
        raise provider_error(
            self.provider,
            "interrupted: the CLI exited without a final result",
            code=ErrorCode.PROVIDER_ERROR,
            exit_code=self.exit_code,
            stderr=self.stderr_tail[-500:] or None,
        )


def find_binary(provider: str, configured: str | None, default: str) -> str:
    """The CLI to run: ``configured`` (a path or a name on PATH) or ``default`` on PATH.

    Missing -> ``validation_error`` naming the setting to fix.
    """
    candidate = configured or default
    found = shutil.which(candidate) if os.sep not in candidate else candidate
    if not found or not Path(found).is_file() or not os.access(found, os.X_OK):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{provider}: CLI {candidate!r} not found or not executable",
            {"provider": provider, "binary": candidate},
        )
    return found


def child_env(*names: Iterable[str]) -> dict[str, str]:
    """A CLI child's base environment (module docstring): ``PATH``, ``NETWORK_ENV`` and the
    variables in ``names`` that the worker has set to a non-empty value."""
    env: dict[str, str] = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    for group in (NETWORK_ENV, *names):
        for name in group:
            value = os.environ.get(name)
            if value:
                env[name] = value
    return env


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _drain(stream: Any, tail: deque[bytes]) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):
        tail.append(chunk)


def run_jsonl(
    argv: Sequence[str],
    *,
    provider: str,
    on_line: OnLine,
    cancel_token: CancelToken,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    kill_grace_s: float = 2.0,
) -> CliOutcome:
    """Run ``argv``, feed each stdout JSON object to ``on_line``, and return how it ended.

    Raises ``AsmError("cancelled")`` when the token was set, ``provider_error`` for an
    overlong line, ``provider_unavailable`` when the binary cannot be started. Exceptions
    from ``on_line`` propagate (after the process group is killed).
    """
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the adapter, never a shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        raise provider_error(
            provider,
            f"cannot start {argv[0]}: {exc}",
            code=ErrorCode.PROVIDER_UNAVAILABLE,
        ) from exc
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE was given
        raise RuntimeError("subprocess pipes missing")
    pgid = proc.pid  # start_new_session: the child leads its own group
    tail: deque[bytes] = deque(maxlen=max(1, STDERR_TAIL_BYTES // 512))
    stderr_thread = threading.Thread(
        target=_drain, args=(proc.stderr, tail), name=f"{provider}-stderr", daemon=True
    )
    stderr_thread.start()
    done = threading.Event()
    cancelled = threading.Event()

    def watch_cancel() -> None:
        while not done.is_set():
            if cancel_token.wait(0.05):
                cancelled.set()
                _kill_group(pgid, signal.SIGTERM)
                deadline = time.monotonic() + kill_grace_s
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                _kill_group(pgid, signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch_cancel, name=f"{provider}-cancel", daemon=True)
    watcher.start()
    finished = False
    try:
        while True:
            line = proc.stdout.readline(max_line_bytes + 1)
            if not line:
                break
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                raise provider_error(
                    provider,
                    f"output line longer than {max_line_bytes} bytes",
                    code=ErrorCode.PROVIDER_ERROR,
                )
            text = line.strip()
            if not text:
                continue
            try:
                item = json.loads(text)
            except ValueError:
                logger.debug("%s: skipping non-JSON output line %r", provider, text[:200])
                continue
            if not isinstance(item, dict):
                continue
            if cancelled.is_set():
                continue  # being killed: nothing more is reported
            if on_line(item):
                finished = True
        exit_code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            _kill_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(kill_grace_s)
        _kill_group(pgid, signal.SIGKILL)  # leftovers (a tool's shell, its children)
        if proc.poll() is None:
            proc.wait()
        stderr_thread.join(1.0)
        watcher.join(1.0)
        proc.stdout.close()
        proc.stderr.close()
    if cancelled.is_set() or (cancel_token.cancelled and not finished):
        raise AsmError(ErrorCode.CANCELLED, "Run was cancelled")
    return CliOutcome(
        provider=provider,
        exit_code=exit_code,
        finished=finished,
        stderr_tail=b"".join(tail).decode("utf-8", "replace"),
    )
