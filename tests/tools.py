"""External tools the provider tests run (the codex and Claude Code CLIs).

Locally a missing CLI skips its tests with a reason; in CI (`CI=true`, set by `.ci/run`,
which installs both) a missing CLI fails them instead, like a missing PostgreSQL or Redis.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def tools_required() -> bool:
    """True where the CLIs must be present (CI)."""
    return os.environ.get("CI", "").lower() == "true"


def tool_missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI) a test whose CLI is missing."""
    if tools_required():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)
