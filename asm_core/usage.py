"""Token-usage merge rule (seed `update_token_usage`): numbers add, anything else replaces.

`{input_tokens: 100}` then `{input_tokens: 50, output_tokens: 75}` gives
`{input_tokens: 150, output_tokens: 75}`. Booleans are not numbers here. Inputs are never
mutated; a new dict is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def merge_token_usage(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        prev = merged.get(key)
        merged[key] = prev + value if _is_number(prev) and _is_number(value) else value
    return merged
