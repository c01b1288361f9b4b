"""Structured logging: JSON lines with the run context bound, and secrets redacted.

Invariants:
- `log_context(session_id=..., run_id=..., task_id=..., provider=...)` binds values in
  contextvars for the block (thread- and task-local); `ContextFilter` copies them onto every
  record, so log calls never pass them by hand.
- `RedactFilter` masks secrets (asm_core.redaction: built-in key shapes, the configured
  provider keys' exact values, `ASM_REDACT_PATTERNS`) in the message, its arguments and the
  exception text before any handler formats the record; no secret reaches a log line.
- `JsonFormatter` writes one JSON object per record, on one line.
- `ASM_LOG_FORMAT` picks `json` or `text`; the default is json when DEBUG is off.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from asm_core.redaction import Redactor, redactor_for

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "RedactFilter",
    "log_context",
    "settings_redactor",
]

CONTEXT_FIELDS = ("session_id", "run_id", "task_id", "provider")
_VARS: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"asm_log_{name}", default=None) for name in CONTEXT_FIELDS
}
_SECRET_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY", "AMP_API_KEY")


@contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Bind log context (session_id, run_id, task_id, provider) for the block."""
    tokens = []
    for name, value in values.items():
        var = _VARS.get(name)
        if var is None:
            raise TypeError(f"unknown log context field: {name}")
        tokens.append((var, var.set(None if value is None else str(value))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def log_context_values() -> dict[str, str]:
    """The bound context fields (unbound ones left out)."""
    out = {}
    for name, var in _VARS.items():
        value = var.get()
        if value is not None:
            out[name] = value
    return out


def _secret_values(config: Mapping[str, Any]) -> Iterator[str]:
    for value in config.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from _secret_values(value)


_CACHED: tuple[tuple[object, ...], Redactor] | None = None


def settings_redactor() -> Redactor:
    """The redactor for the current settings and environment (cached per configuration:
    it is asked for on every event append, so the common case is one tuple comparison)."""
    global _CACHED
    from django.conf import settings

    config = getattr(settings, "ASM_PROVIDER_CONFIG", None)
    key = (
        *(os.environ.get(name) for name in _SECRET_ENV),
        getattr(settings, "ASM_METRICS_TOKEN", None),
        id(config) if config else None,  # not `or {}`: a fresh dict's id would never match
        tuple(getattr(settings, "ASM_REDACT_PATTERNS", ()) or ()),
    )
    cached = _CACHED
    if cached is not None and cached[0] == key:
        return cached[1]
    redactor = _settings_redactor_build(settings)
    _CACHED = (key, redactor)
    return redactor


def _settings_redactor_build(settings: Any) -> Redactor:
    literals = [os.environ.get(name, "") for name in _SECRET_ENV]
    literals.append(getattr(settings, "ASM_METRICS_TOKEN", "") or "")
    for conf in (getattr(settings, "ASM_PROVIDER_CONFIG", None) or {}).values():
        if isinstance(conf, Mapping):
            literals.extend(
                v
                for k, v in conf.items()
                if isinstance(v, str) and any(s in k.lower() for s in ("key", "token", "secret"))
            )
    patterns = tuple(getattr(settings, "ASM_REDACT_PATTERNS", ()) or ())
    return redactor_for(tuple(sorted({s for s in literals if s})), patterns)


class ContextFilter(logging.Filter):
    """Adds the bound log context to each record (absent fields are None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class RedactFilter(logging.Filter):
    """Masks secrets in the record's message, arguments and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            redactor = settings_redactor()
        except Exception:  # settings not configured (a bare script): built-ins only
            redactor = redactor_for()
        message = record.getMessage()
        clean = redactor.redact_text(message)
        if clean is not message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.redact_text(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)
