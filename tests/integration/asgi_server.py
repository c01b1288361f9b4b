"""One real `uvicorn asm_project.asgi:application` process on a free loopback port.

Shared by the streaming tests, the schema fuzzing test and `bench/stream_latency.py`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AsgiServer:
    """Started at construction (its own process group, output to `log_path`)."""

    name = "the server"

    def __init__(
        self, env: Mapping[str, str], log_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "asm_project.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    # An SSE response lasts until its client leaves: on shutdown, open
                    # streams are cut after this (their clients resume with Last-Event-ID).
                    "--timeout-graceful-shutdown",
                    "5",
                    "--no-access-log",
                    *extra_args,
                ],
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    url = http

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited at start\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.http}/healthz", timeout=1).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} is not ready after {timeout}s\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it has not gone after 15 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
