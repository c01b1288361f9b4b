"""`asm_core.usage.merge_token_usage`: numbers add, anything else replaces (spec 1.2)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from asm_core.usage import merge_token_usage


def test_spec_example() -> None:
    assert merge_token_usage({"input_tokens": 100}, {"input_tokens": 50, "output_tokens": 75}) == {
        "input_tokens": 150,
        "output_tokens": 75,
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {}, {}),
        ({"a": 1}, {}, {"a": 1}),
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 2}, {"a": 3}),
        ({"cost": 0.5}, {"cost": 0.25}, {"cost": 0.75}),
        ({"a": 1}, {"a": 0.5}, {"a": 1.5}),
        ({"a": 1}, {"a": -1}, {"a": 0}),
        ({"a": 1, "b": 2}, {"b": 3, "c": 4}, {"a": 1, "b": 5, "c": 4}),
    ],
)
def test_numbers_add(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_token_usage(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"model": "a"}, {"model": "b"}, {"model": "b"}),
        ({"a": 1}, {"a": "2"}, {"a": "2"}),
        ({"a": "1"}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {"a": None}, {"a": None}),
        ({"a": None}, {"a": 1}, {"a": 1}),
        ({"a": {"x": 1}}, {"a": {"y": 2}}, {"a": {"y": 2}}),  # no deep merge
        ({"a": [1]}, {"a": [2]}, {"a": [2]}),
    ],
)
def test_non_numbers_replace(
    old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert merge_token_usage(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"cached": True}, {"cached": True}, {"cached": True}),  # not 2
        ({"cached": True}, {"cached": False}, {"cached": False}),
        ({"a": 1}, {"a": True}, {"a": True}),  # not 2
        ({"a": True}, {"a": 1}, {"a": 1}),  # not 2
        ({"a": False}, {"a": 5}, {"a": 5}),
    ],
)
def test_bools_replace(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    merged = merge_token_usage(old, new)
    assert merged == expected
    # True == 1 in Python, so compare the types too.
    assert {k: type(v) for k, v in merged.items()} == {k: type(v) for k, v in expected.items()}


def test_inputs_are_not_mutated_and_a_new_dict_is_returned() -> None:
    old = {"input_tokens": 1, "nested": {"x": 1}}
    new = {"input_tokens": 2, "output_tokens": 3}
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    merged = merge_token_usage(old, new)
    assert merged == {"input_tokens": 3, "output_tokens": 3, "nested": {"x": 1}}
    assert old == old_copy
    assert new == new_copy
    assert merged is not old
    assert merged is not new
    merged["input_tokens"] = 99
    assert old["input_tokens"] == 1


def test_merging_in_steps_accumulates() -> None:
    usage: dict[str, Any] = {}
    for step in (
        {"input_tokens": 10},
        {"input_tokens": 5, "output_tokens": 1},
        {"output_tokens": 2},
    ):
        usage = merge_token_usage(usage, step)
    assert usage == {"input_tokens": 15, "output_tokens": 3}


def test_accepts_any_mapping() -> None:
    from types import MappingProxyType

    assert merge_token_usage(MappingProxyType({"a": 1}), MappingProxyType({"a": 2})) == {"a": 3}
