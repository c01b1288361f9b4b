"""Env-driven settings, checked in fresh interpreters (settings are read once at start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PRINT = (
    "import json, django; django.setup(); from django.conf import settings as s;"
    "d = s.DATABASES['default'];"
    "print(json.dumps({'engine': d['ENGINE'], 'options': d.get('OPTIONS', {}),"
    " 'cache': s.CACHES['default']['BACKEND'], 'layer': s.CHANNEL_LAYERS['default']['BACKEND'],"
    " 'broker': s.CELERY_BROKER_URL, 'name': str(d['NAME'])}))"
)


def _run(env_overrides: dict[str, str], code: str = PRINT) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG", "DJANGO_SECRET_KEY"}
        and not k.startswith("DJANGO_ALLOWED")
    }
    env["DJANGO_SETTINGS_MODULE"] = "asm_project.settings.base"
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_no_database_url_means_sqlite_with_immediate_transactions(tmp_path):
    out = _run({"ASM_SQLITE_PATH": str(tmp_path / "x.sqlite3")})
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["engine"] == "django.db.backends.sqlite3"
    assert cfg["name"] == str(tmp_path / "x.sqlite3")
    assert cfg["options"]["transaction_mode"] == "IMMEDIATE"
    assert cfg["options"]["timeout"] >= 1
    assert cfg["cache"].endswith("LocMemCache")
    assert cfg["layer"] == "events.layers.LocalChannelLayer"
    assert cfg["broker"].startswith("memory://")


def test_urls_select_postgres_and_redis():
    out = _run(
        {
            "DATABASE_URL": "postgres://u:p@db.example:5432/asm",
            "REDIS_URL": "redis://cache.example:6379/0",
        }
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["engine"] == "django.db.backends.postgresql"
    assert cfg["name"] == "asm"
    assert cfg["cache"].endswith("RedisCache")
    assert cfg["layer"] == "channels_redis.core.RedisChannelLayer"
    assert cfg["broker"] == "redis://cache.example:6379/0"
    # only the event append statement is prepared (Django's cursors bind client-side)
    assert cfg["options"]["prepare_threshold"] == 5


def test_prepared_statements_can_be_turned_off_for_poolers():
    out = _run(
        {"DATABASE_URL": "postgres://u:p@db.example:5432/asm", "ASM_DB_PREPARED_STATEMENTS": "0"}
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["options"]["prepare_threshold"] is None


def test_production_mode_without_required_settings_fails_with_a_clear_message():
    out = _run({"DJANGO_DEBUG": "False"}, code="import django; django.setup()")
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr
    for name in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"):
        assert name in out.stderr


def test_production_mode_names_only_what_is_missing():
    out = _run(
        {
            "DJANGO_DEBUG": "False",
            "DJANGO_SECRET_KEY": "k" * 50,
            "DJANGO_ALLOWED_HOSTS": "asm.example",
            "DATABASE_URL": "postgres://u:p@db.example:5432/asm",
        },
        code="import django; django.setup()",
    )
    assert out.returncode != 0
    assert "REDIS_URL" in out.stderr
    assert "DATABASE_URL," not in out.stderr


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("from-a-file-" + "x" * 40 + "\n")
    out = _run(
        {"DJANGO_SECRET_KEY_FILE": str(secret)},
        code="import django; django.setup(); from django.conf import settings;"
        "print(settings.SECRET_KEY)",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from-a-file-" + "x" * 40
