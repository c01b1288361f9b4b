"""Run every example in this directory, one subprocess each; exit 1 if any fails.

All examples share one temporary SQLite database (unless `DATABASE_URL` or
`ASM_SQLITE_PATH` is set), so the schema is migrated once. Extra arguments (for example
`--provider claude`) are passed to every example. `make examples` runs this.
    python examples/run_all.py [--provider NAME]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def example_scripts() -> list[Path]:
    """Every runnable example: the `*.py` files here except `_`-prefixed helpers and this."""
    return sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
    )


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="asm-examples-") as tmp:
        if not env.get("DATABASE_URL") and not env.get("ASM_SQLITE_PATH"):
            env["ASM_SQLITE_PATH"] = str(Path(tmp) / "asm.sqlite3")
        failed: list[str] = []
        for script in example_scripts():
            print(f"== {script.name}", flush=True)
            started = time.monotonic()
            code = subprocess.call([sys.executable, str(script), *argv], env=env)  # noqa: S603
            took = time.monotonic() - started
            print(f"== {script.name}: {'ok' if code == 0 else f'FAILED ({code})'} in {took:.1f}s\n")
            if code != 0:
                failed.append(script.name)
    if failed:
        print(f"{len(failed)} example(s) failed: {', '.join(failed)}")
        return 1
    print(f"all {len(example_scripts())} examples passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
