"""Shared set-up for the benchmarks: required services and a throwaway database.

Each benchmark measures against a database of its own (`asm_bench_<pid>`, created with
Django's test-database machinery and migrated, then dropped), never a test run's
`test_<name>`, so benchmarks and tests can run side by side.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the benchmarks import the project and its test helpers


def setup(script: str, *, redis: bool = False) -> bool:
    """Check the services a benchmark needs and set Django up; False (and a message) if not."""
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        print(f"{script} needs DATABASE_URL=postgres://...", file=sys.stderr)
        return False
    if redis and not os.environ.get("REDIS_URL", "").startswith("redis://"):
        print(f"{script} needs REDIS_URL=redis://...", file=sys.stderr)
        return False
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.test")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False  # no query log: measure what production runs
    return True


@contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database of the benchmark's own for the `with` block; its name."""
    from django.db import connection, connections

    connection.settings_dict["TEST"]["NAME"] = f"asm_bench_{os.getpid()}"
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield name
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(name, verbosity=0)
