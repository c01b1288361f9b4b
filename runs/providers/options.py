"""Shared checks for ``options.adapter_opts`` and readers of adapters' environment defaults.

Plain Python (no Django); only ``asm_core``. Every adapter validates its ``adapter_opts``
with these helpers, so a bad value is reported the same way whichever provider runs.

Invariants:

- A failed check raises ``AsmError("validation_error")`` whose message is
  ``"<field> <problem>"`` and whose details are exactly ``{"field": "<field>"}``, the
  dotted path of the bad value (``adapter_opts.max_turns``, ``adapter_opts.fail.code``).
- ``check_object``: a mapping whose keys are all ``allowed``; an unknown key is named
  (``adapter_opts.<key>``) with the allowed keys listed in order. ``adapter_opts(None, ...)``
  is the empty mapping (all defaults).
- ``integer`` never accepts a ``bool``; ``non_empty_string`` never accepts blank text.
- The ``env_*`` readers treat a variable set to the empty string as unset; they never raise
  (``env_int`` reports an unparsable value in ``problems`` for ``validate_config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NoReturn

from asm_core.errors import AsmError, ErrorCode

__all__ = [
    "ADAPTER_OPTS",
    "adapter_opts",
    "check_object",
    "comma_list",
    "env_flag",
    "env_int",
    "env_list",
    "env_str",
    "integer",
    "invalid",
    "non_empty_string",
]

#: The field name every ``adapter_opts`` check reports under.
ADAPTER_OPTS = "adapter_opts"

_TRUE = frozenset({"1", "true", "yes", "on"})


# --------------------------------------------------------------------------- adapter_opts


def invalid(field: str, problem: str) -> NoReturn:
    """Raise ``validation_error`` "<field> <problem>" with details ``{"field": field}``."""
    raise AsmError(ErrorCode.VALIDATION_ERROR, f"{field} {problem}", {"field": field})


def integer(value: object, field: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``minimum..maximum`` (``maximum`` None: unbounded)."""
    if not isinstance(value, int) or isinstance(value, bool):
        invalid(field, "must be an integer")
    if value < minimum:
        invalid(field, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        invalid(field, f"must be <= {maximum}")
    return value


def non_empty_string(value: object, field: str) -> str:
    """``value`` when it is a string that is not blank (returned as given, unstripped)."""
    if not isinstance(value, str) or not value.strip():
        invalid(field, "must be a non-empty string")
    return value


def check_object(value: object, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """``value`` when it is a mapping with no key outside ``allowed``."""
    if not isinstance(value, Mapping):
        invalid(field, "must be an object")
    for key in value:
        if key not in allowed:
            invalid(f"{field}.{key}", f"is not a known option (allowed: {', '.join(allowed)})")
    return value


def adapter_opts(opts: Mapping[str, Any] | None, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """The ``adapter_opts`` mapping (``None``: empty) after ``check_object``."""
    return check_object({} if opts is None else opts, ADAPTER_OPTS, allowed)


# --------------------------------------------------------------------------- environment


def env_str(name: str) -> str | None:
    """The value of environment variable ``name``; None when unset or empty."""
    return os.environ.get(name) or None


def env_flag(name: str) -> bool:
    """True when ``name`` is set to 1/true/yes/on (any case, surrounding blanks ignored)."""
    return (os.environ.get(name) or "").strip().lower() in _TRUE


def comma_list(text: str) -> list[str]:
    """The non-blank items of a comma-separated list, stripped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def env_list(name: str) -> list[str] | None:
    """``name`` as a comma-separated list (``comma_list``); None when unset."""
    value = os.environ.get(name)
    return None if value is None else comma_list(value)


def env_int(name: str, problems: list[str]) -> int | None:
    """``name`` as an int; None when unset or blank. A value that is not an int is None
    and a line in ``problems`` (the constructor never raises; ``validate_config`` does)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        problems.append(f"{name} must be an integer, got {raw!r}")
        return None
