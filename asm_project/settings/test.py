"""Test settings: `base` plus speed-ups only (fast password hashing)."""

from asm_project.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
