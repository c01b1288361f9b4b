"""`asm run` driven in a pseudo-terminal against the embedded default (docs/cli.md).

Each test starts the real `asm` console script (no ASM_URL: Django, a fresh SQLite file in a
temp dir via ASM_SQLITE_PATH, the in-process worker, the echo provider) on a pty and
checks what the screen shows, ANSI escapes stripped. The last test runs the same command
against `asm serve` through ASM_URL + ASM_TOKEN (the HTTP backend).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")
ASM = shutil.which("asm", path=str(Path(sys.executable).parent)) or ""


class Screen:
    """A child process on a pty; `expect` reads until a pattern appears in the text."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.execve(argv[0], argv, env)  # noqa: S606 (our own console script)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the child closed the pty
            return False
        if not chunk:
            return False
        self.raw += chunk
        return True

    def expect(self, pattern: str, timeout_s: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if not self._read(0.1):
                break
        found = re.search(pattern, self.text)
        assert found, f"{pattern!r} not on screen:\n{self.text}"
        return found

    def wait(self, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05) and select.select([self.fd], [], [], 0)[0]:
                    pass
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"asm did not exit:\n{self.text}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def asm(tmp_path):
    assert ASM, "the asm console script is not installed (pip install -e .)"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"ASM_URL", "ASM_TOKEN", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(ASM_SQLITE_PATH=str(tmp_path / "asm.sqlite3"), TERM="xterm-256color", COLUMNS="200")
    screens: list[Screen] = []

    def start(*args: str, **extra_env: str) -> Screen:
        screen = Screen([ASM, *args], {**env, **extra_env})
        screens.append(screen)
        return screen

    yield start
    for screen in screens:
        screen.close()


def test_run_hello_streams_the_echo_reply_and_the_summary(asm):
    screen = asm("run", "hello")
    assert screen.wait() == 0
    text = screen.text
    assert re.search(r"^hello$", text, re.MULTILINE), text
    assert re.search(
        r"completed · tokens 1 in / 1 out · cost \S+ · [\d.]+s · run [0-9a-f-]{36}", text
    ), text


def test_run_json_prints_event_lines_then_the_run(asm):
    screen = asm("run", "hello json", "--json")
    assert screen.wait() == 0
    lines = [json.loads(line) for line in screen.text.splitlines() if line.strip()]
    *events, run = lines
    assert [e["sequence_number"] for e in events] == sorted(e["sequence_number"] for e in events)
    assert "".join(e["data"]["delta"] for e in events if e["type"] == "message_streamed") == (
        "hello json"
    )
    assert events[-1]["type"] == "run_completed"
    assert run["status"] == "completed"
    assert run["output"]["content"] == "hello json"


def test_ctrl_c_cancels_a_hanging_run_and_says_so(asm):
    screen = asm("run", "wait for me", "--adapter-opts", '{"hang": true}')
    run_id = screen.expect(r"run ([0-9a-f-]{36})").group(1)
    screen.expect(r"usage: 3 in / 3 out")  # the reply is out; the run now hangs
    os.write(screen.fd, b"\x03")  # Ctrl-C through the terminal: SIGINT to asm
    assert screen.wait() == 130
    assert f"Run {run_id} cancelled (Ctrl-C)." in screen.text, screen.text


def test_run_against_a_server_by_asm_url(asm, tmp_path):
    """The same command through the HTTP API: `asm serve` plus ASM_URL and ASM_TOKEN."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in {"ASM_URL", "DATABASE_URL"}}
    env.update(ASM_SQLITE_PATH=str(tmp_path / "server.sqlite3"), REDIS_URL="")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = subprocess.Popen(
        [ASM, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None, "asm serve exited"
                assert time.monotonic() < deadline, "asm serve did not start"
                time.sleep(0.1)
        token = subprocess.run(
            [sys.executable, "manage.py", "asm_token", "cli-test", "--create-user"],
            env=env,
            cwd=Path(__file__).resolve().parents[3],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        screen = asm("run", "hello", ASM_URL=f"http://127.0.0.1:{port}", ASM_TOKEN=token)
        assert screen.wait() == 0
        assert re.search(r"^hello$", screen.text, re.MULTILINE), screen.text
        assert "completed · tokens 1 in / 1 out" in screen.text, screen.text
    finally:
        server.terminate()
        server.wait(timeout=15)
