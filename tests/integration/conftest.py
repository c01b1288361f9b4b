"""Integration-tier helpers: run code in separate OS processes against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """A DATABASE_URL naming the test database pytest-django created (for child processes)."""
    s = connection.settings_dict
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["DJANGO_SETTINGS_MODULE"] = "asm_project.settings.test"
    env["PYTHONPATH"] = str(ROOT)
    return env


class Workers:
    """Start N worker processes, release them together, collect their JSON answers."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, module: str, argv_list: Sequence[Sequence[str]]) -> None:
        for argv in argv_list:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *argv],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
        for proc in self.procs:  # every process is set up before any starts
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"worker did not start: {line!r}"

    def go_and_collect(self, timeout: float = 120) -> list[object]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker failed with {proc.returncode}"
            answers.append(json.loads(out.strip().splitlines()[-1]))
        return answers

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill_all()
