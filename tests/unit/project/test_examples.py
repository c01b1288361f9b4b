"""Every script in examples/ runs green against the embedded default (echo, SQLite).

Invariant: each example (`examples/run_all.example_scripts()`) exits 0 when run as its own
process with no provider keys, no Redis and a throwaway SQLite database; this is how CI
proves "every example runs green" (it runs the unit tier). The scripts share one database,
migrated by the first, so the whole module stays well under a minute.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def _scripts() -> list[Path]:
    spec = importlib.util.spec_from_file_location("examples_run_all", EXAMPLES / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.example_scripts())


SCRIPTS = _scripts()


@pytest.fixture(scope="module")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "ASM_EXAMPLE_PROVIDER", "DJANGO_SETTINGS_MODULE"}
    }
    env["ASM_SQLITE_PATH"] = str(tmp_path_factory.mktemp("examples") / "asm.sqlite3")
    return env


def test_the_examples_cover_the_seed_examples():
    names = {p.stem for p in SCRIPTS}
    assert names >= {
        "one_shot",
        "full_lifecycle",
        "cursor_pagination",
        "follow_stream",
        "continuity",
        "workspace_snapshot",
        "routing",
        "policy",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs_green(script: Path, example_env: dict[str, str]):
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=example_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    assert f"OK: {script.stem}" in done.stdout
