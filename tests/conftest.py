"""Shared test fixtures.

Tiers: the unit tier runs on SQLite with no services; `integration` tests need real
PostgreSQL and Redis (DATABASE_URL / REDIS_URL). They skip with a reason when those are not
configured, except when ASM_REQUIRE_SERVICES=1 (set by scripts/run_tests.py and CI), where a
missing service is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from asm_core.memory_store import InMemorySessionStore
from asm_core.store import SessionStore


def _services_problem() -> str | None:
    if connection.vendor != "postgresql":
        return "integration tests need PostgreSQL: set DATABASE_URL=postgres://..."
    if not settings.REDIS_URL:
        return "integration tests need Redis: set REDIS_URL=redis://..."
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _services_problem()
    if problem is None:
        return
    if os.environ.get("ASM_REQUIRE_SERVICES") == "1":
        return  # `_fail_missing_services` fails each integration test instead
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(autouse=True)
def _fail_missing_services(request: pytest.FixtureRequest) -> None:
    if "integration" in request.keywords and os.environ.get("ASM_REQUIRE_SERVICES") == "1":
        problem = _services_problem()
        if problem:
            pytest.fail(problem)


# The mark on the Django param tells pytest-django at collection that these tests need the
# test database (it creates databases only for tests that declare it): without it a
# `[django]` test selected alone ran against an unmigrated file.
@pytest.fixture(params=["memory", pytest.param("django", marks=pytest.mark.django_db)])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    """Each SessionStore implementation; the contract suite runs against all of them."""
    if request.param == "memory":
        yield InMemorySessionStore()
    else:
        request.getfixturevalue("db")
        from runs.store import DjangoSessionStore

        yield DjangoSessionStore()
