"""Shared set-up of the examples: embedded asm in this process, a provider choice, checks.

Invariants:
- With neither `DATABASE_URL` nor `ASM_SQLITE_PATH` set, each example uses a fresh SQLite
  file in a temporary directory (your `var/asm.sqlite3` is never touched); the schema is
  migrated before the example runs.
- With `REDIS_URL` unset (embedded mode) runs execute on an in-process worker started here,
  exactly as `make run` serves them; with it set, a `celery worker` must be running.
- The provider is `--provider NAME`, else `ASM_EXAMPLE_PROVIDER`, else `echo` (offline).
  Scripted `echo` options (`adapter_opts`) are sent only to `echo`.
- A failed check prints `FAILED: ...` and exits 1; success ends with `OK: <example>`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent


def fail(message: str) -> NoReturn:
    print(f"FAILED: {message}", flush=True)
    raise SystemExit(1)


def check(condition: object, message: str) -> None:
    """Exit 1 with `message` unless `condition` holds."""
    if not condition:
        fail(message)


def say(message: str) -> None:
    print(message, flush=True)


def setup(description: str) -> argparse.Namespace:
    """Parse `--provider`, configure Django, migrate, start the embedded worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--provider",
        default=os.environ.get("ASM_EXAMPLE_PROVIDER", "echo"),
        help="provider to run against (default echo; live ones need their keys)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per run")
    args = parser.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")
    os.environ.setdefault("ASM_LOG_LEVEL", "WARNING")
    if not os.environ.get("DATABASE_URL") and not os.environ.get("ASM_SQLITE_PATH"):
        tmp = tempfile.TemporaryDirectory(prefix="asm-example-")
        atexit.register(tmp.cleanup)
        os.environ["ASM_SQLITE_PATH"] = str(Path(tmp.name) / "asm.sqlite3")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not settings.REDIS_URL:
        from workers.embedded import EmbeddedWorker

        worker = EmbeddedWorker(threads=2, reaper_interval_s=0.5).start()
        atexit.register(_stop, worker)
    _require_provider(args.provider)
    say(f"-- provider {args.provider}, database {settings.DATABASES['default']['NAME']}")
    return args


def _stop(worker: Any) -> None:
    """Signal the embedded worker to stop; its threads are daemons, so exit need not wait."""
    from django.db import connections

    worker._stop.set()
    connections.close_all()


def _require_provider(name: str) -> None:
    from asm_core.errors import AsmError
    from runs.bootstrap import provider_registry

    try:
        provider_registry().get(name).validate_config()
    except AsmError as exc:
        fail(f"provider {name!r} cannot run here: {exc.message}")


def echo_opts(provider: str, **opts: Any) -> dict[str, Any]:
    """`{"adapter_opts": opts}` for echo, `{}` for any other provider."""
    return {"adapter_opts": opts} if provider == "echo" else {}
