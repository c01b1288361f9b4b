"""Secret redaction: the one function every output path (events, logs, admin) goes through.

Invariants:
- `redact` returns the value unchanged (the same object) when nothing in it could hold a
  secret, so the hot path (event appends) pays one substring scan per string and no copy.
- A string is checked cheaply first: it is searched with the regular expressions only when
  it contains one of the known secret prefixes (`sk-`, `Bearer `, `xox`, `ghp_`, ...), a
  configured literal, or when extra patterns are configured.
- Secrets are replaced by `[REDACTED]`; mapping keys whose name says "secret" (`api_key`,
  `authorization`, `token`, `password`, ...) have their whole string value replaced.
- Plain Python: no Django. Callers pass the configured literals and patterns
  (`Redactor(literals=..., patterns=...)`), usually through a cached `redactor_for`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["MASK", "Redactor", "redact", "redactor_for"]

MASK = "[REDACTED]"

# Cheap pre-checks: a string without any of these cannot match a built-in pattern.
_PREFIXES = ("sk-", "Bearer ", "bearer ", "xox", "ghp_", "gho_", "github_pat_", "AKIA", "AIza")
_BUILTIN = (
    r"sk-ant-[A-Za-z0-9_\-]{8,}",  # Anthropic
    r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}",  # OpenAI and look-alikes
    r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*",  # Authorization: Bearer <token>
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"gh[po]_[A-Za-z0-9]{20,}",  # GitHub
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
)
# Mapping keys whose string values are secrets whatever they look like.
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_-])?(?:api[_-]?key|authorization|password|passwd|secret|token|"
    r"access[_-]?token|refresh[_-]?token|x[_-]api[_-]key|cookie)$"
)


class Redactor:
    """Redacts built-in secret shapes, configured patterns and exact configured values."""

    def __init__(self, *, literals: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        # Short literals would redact ordinary words; a real key is never under 8 chars.
        self.literals = tuple(sorted({s for s in literals if s and len(s) >= 8}, key=len))[::-1]
        self.extra = tuple(patterns)
        self._regex = re.compile("|".join(f"(?:{p})" for p in (*_BUILTIN, *self.extra)))
        # One C-level scan for every prefix and literal; with extra patterns, always look.
        self._quick = (
            None
            if self.extra
            else re.compile("|".join(re.escape(t) for t in (*_PREFIXES, *self.literals)))
        )

    def might_hold(self, text: str) -> bool:
        """Cheap test: could `text` contain a secret? False means `redact_text` is a no-op."""
        return self._quick is None or self._quick.search(text) is not None

    def redact_text(self, text: str) -> str:
        if not self.might_hold(text):
            return text
        for secret in self.literals:
            text = text.replace(secret, MASK)
        return self._regex.sub(MASK, text)

    def redact(self, value: Any) -> Any:
        """`value` with secrets masked; the very same object when there was nothing to mask."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] | None = None
            for k, v in value.items():
                if isinstance(k, str) and isinstance(v, str) and v and _SECRET_KEY.match(k):
                    new: Any = MASK
                else:
                    new = self.redact(v)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if isinstance(value, list | tuple):
            items = [self.redact(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items) if isinstance(value, tuple) else items
        return value


@lru_cache(maxsize=8)
def redactor_for(literals: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> Redactor:
    """A cached `Redactor` for this configuration (compiling the patterns once)."""
    return Redactor(literals=literals, patterns=patterns)


def redact(value: Any, *, literals: Iterable[str] = (), patterns: Iterable[str] = ()) -> Any:
    """Mask secrets in a string or JSON-like value (see `Redactor.redact`)."""
    return redactor_for(tuple(literals), tuple(patterns)).redact(value)
