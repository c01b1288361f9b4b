"""Test settings: `base` plus test speed-ups and isolation only."""

import os
import tempfile

from asm_project.settings.base import *  # noqa: F403
from asm_project.settings.base import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# SQLite tests use a throwaway FILE (not Django's shared in-memory database): the embedded
# worker's threads then see committed rows through their own connections, with WAL and the
# busy timeout behaving as in the embedded deployment.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"asm-test-{os.getpid()}.sqlite3")
    }
