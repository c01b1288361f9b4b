"""Subscription parameters and credentials parsing (plain functions, no database)."""

from __future__ import annotations

import uuid

import pytest

from asm_core.errors import AsmError
from asm_project.ws_auth import token_from
from events.streaming import StreamFilter, StreamParams, stream_params_parse


def parse(last_event_id: str | None = None, **query: str | list[str]) -> StreamParams:
    q = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    return stream_params_parse(q, last_event_id=last_event_id)


def test_defaults_are_everything_from_the_start():
    assert parse() == StreamParams(0, StreamFilter(None, None))
    assert parse(after="") == StreamParams(0, StreamFilter(None, None))


def test_after_type_and_run_id():
    run_id = uuid.uuid4()
    types = ["message_streamed,run_started", "run_started"]
    params = parse(after="7", type=types, run_id=str(run_id))
    assert params.after == 7
    assert params.filter == StreamFilter(frozenset({"message_streamed", "run_started"}), run_id)


def test_last_event_id_resumes_and_the_larger_cursor_wins():
    assert parse("12").after == 12
    assert parse("12", after="3").after == 12  # EventSource resends the first URL
    assert parse("3", after="12").after == 12
    assert parse(" ", after="4").after == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"after": "1e3"}, "after"),
        ({"after": "٣"}, "after"),  # a digit, but not an ASCII one
        ({"after": str(2**63)}, "after"),
        ({"type": "nope"}, "type"),
        ({"run_id": "123"}, "run_id"),
    ],
)
def test_bad_values_name_their_field(query, field):
    with pytest.raises(AsmError) as raised:
        parse(**query)
    assert raised.value.code == "validation_error"
    assert raised.value.http_status == 400
    assert raised.value.details["field"] == field


def test_bad_last_event_id():
    with pytest.raises(AsmError) as raised:
        parse("abc")
    assert raised.value.details["field"] == "Last-Event-ID"


@pytest.mark.parametrize(
    ("authorization", "query", "expected"),
    [
        (None, None, None),
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", "zzz", "abc"),  # the header wins
        (None, "abc", "abc"),
        (None, "", ""),  # presented, empty: matches nobody
        ("Basic dXNlcjpwdw==", None, None),
        ("Basic dXNlcjpwdw==", "abc", "abc"),
    ],
)
def test_token_from_header_then_query(authorization, query, expected):
    assert token_from(authorization, query) == expected
