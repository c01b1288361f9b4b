"""`asm_core.lifecycle.check_run_transition` over every pair of run statuses.

The expected table is written out here from architecture section 4.5, independently of
`asm_core.lifecycle.RUN_TRANSITIONS`:
pending -> running | cancelled; running -> completed | failed | cancelled | timeout.
"""

from __future__ import annotations

import itertools

import pytest

from asm_core.errors import AsmError
from asm_core.lifecycle import RunStatus, check_run_transition

STATUSES = ["pending", "running", "completed", "failed", "cancelled", "timeout"]

ALLOWED: set[tuple[str, str]] = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "timeout"),
}


def test_the_table_matches_the_enum() -> None:
    assert [s.value for s in RunStatus] == STATUSES


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(STATUSES, STATUSES)))
def test_every_transition_pair(frm: str, to: str) -> None:
    if (frm, to) in ALLOWED:
        result = check_run_transition(frm, to)
        assert result is RunStatus(to)
        return
    with pytest.raises(AsmError) as excinfo:
        check_run_transition(frm, to)
    assert excinfo.value.code == "invalid_transition"
    assert excinfo.value.http_status == 409
    assert excinfo.value.details["from"] == frm
    assert excinfo.value.details["to"] == to


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled", "timeout"])
def test_terminal_statuses_have_no_way_out(terminal: str) -> None:
    for to in STATUSES:
        with pytest.raises(AsmError) as excinfo:
            check_run_transition(terminal, to)
        assert excinfo.value.code == "invalid_transition"


def test_enum_members_are_accepted() -> None:
    assert check_run_transition(RunStatus.PENDING, RunStatus.RUNNING) is RunStatus.RUNNING


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("bogus", "running"),
        ("pending", "bogus"),
        ("", "running"),
        ("pending", ""),
        ("PENDING", "running"),
        ("pending", "Running"),
        ("pending ", "running"),
        ("active", "running"),  # a session status, not a run status
        ("pending", "paused"),
    ],
)
def test_invalid_status_strings_are_invalid_status(current: str, new: str) -> None:
    with pytest.raises(AsmError) as excinfo:
        check_run_transition(current, new)
    assert excinfo.value.code == "invalid_status"
    assert excinfo.value.http_status == 400
    assert set(excinfo.value.details["valid"]) == set(STATUSES)
