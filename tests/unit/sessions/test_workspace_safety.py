"""Workspace safety (issue 7, item 5) and the strict `options.workspace` checks.

A run may only name a directory under one of `ASM_WORKSPACE_ROOTS`; a path outside them,
a `..` path and a symlink escaping them are each `validation_error` before anything runs:
at submit (`run_submit` stores nothing) and again when the run executes (see
test_workspace_runs.py: the provider is never called).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from events.selectors import latest_sequence
from runs.models import Run
from runs.services import run_submit, validate_run_options
from sessions.services import session_create
from sessions.workspaces import (
    WorkspaceOptions,
    workspace_option_validate,
    workspace_options_parse,
    workspace_path_check,
)
from sessions.workspaces.safety import path_inside


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<tmp>/roots` is the only workspace root (set in the environment, as deployed)."""
    root = tmp_path / "roots"
    (root / "ws").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    monkeypatch.setenv("ASM_WORKSPACE_ROOTS", str(root))
    return root


def escaping_cases(tmp_path: Path, roots: Path) -> dict[str, str]:
    os.symlink(tmp_path / "outside", roots / "escape")
    return {
        "outside the roots": str(tmp_path / "outside"),
        "a .. path": str(roots / "ws" / ".." / ".." / "outside"),
        "a .. path that stays inside": str(roots / "ws" / ".." / "ws"),
        "an escaping symlink": str(roots / "escape"),
        "below an escaping symlink": str(roots / "escape" / "sub"),
        "relative": "roots/ws",
        "home-relative": "~/ws",
        "empty": "",
        "NUL": str(roots / "ws") + "\x00x",
    }


def test_path_check_accepts_only_real_directories_under_the_roots(
    tmp_path: Path, roots: Path
) -> None:
    ws = roots / "ws"
    assert workspace_path_check(str(ws), "f") == os.path.realpath(ws)
    os.symlink(ws, roots / "alias")  # a link that stays inside is fine: its real path counts
    assert workspace_path_check(str(roots / "alias"), "f") == os.path.realpath(ws)
    assert workspace_path_check(str(roots), "f") == os.path.realpath(roots)
    for name, path in escaping_cases(tmp_path, roots).items():
        with pytest.raises(AsmError) as info:
            workspace_path_check(path, "options.workspace.path")
        assert info.value.code == "validation_error", name
        assert info.value.details == {"field": "options.workspace.path"}, name
    for bad in (None, 42, ["/x"]):
        with pytest.raises(AsmError):
            workspace_path_check(bad, "f")
    with pytest.raises(AsmError):  # existence is checked when asked
        workspace_path_check(str(roots / "missing"), "f")
    assert workspace_path_check(str(roots / "missing"), "f", must_exist=False)
    assert path_inside(os.path.realpath(ws), str(ws / "a" / "b"))
    assert not path_inside(os.path.realpath(ws), str(ws) + "-sibling")


def test_without_roots_any_absolute_directory_but_never_dot_dot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASM_WORKSPACE_ROOTS", raising=False)
    assert workspace_path_check(str(tmp_path), "f") == os.path.realpath(tmp_path)
    with pytest.raises(AsmError):
        workspace_path_check(str(tmp_path / ".." / tmp_path.name), "f")
    explicit = [str(tmp_path / "elsewhere")]
    with pytest.raises(AsmError):
        workspace_path_check(str(tmp_path), "f", explicit)


# --------------------------------------------------------------------------- options
def test_options_parse_defaults_and_aliases() -> None:
    assert workspace_options_parse(None) is None
    assert workspace_options_parse({}) == WorkspaceOptions()
    assert WorkspaceOptions() == WorkspaceOptions(
        enabled=True,
        path=None,
        strategy="auto",
        capture_patch=True,
        max_patch_bytes=1_048_576,
        rollback_on_failure=False,
    )
    parsed = workspace_options_parse(
        {"path": "/w", "backend": "git", "rollback_on_failure": True, "max_patch_bytes": 0}
    )
    assert parsed == WorkspaceOptions(
        path="/w", strategy="git", rollback_on_failure=True, max_patch_bytes=0
    )
    assert workspace_options_parse({"strategy": "hash", "backend": "hash"}).strategy == "hash"
    disabled = workspace_options_parse({"enabled": False, "path": "/w"})
    assert disabled is not None
    assert disabled.enabled is False


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("yes", "options.workspace"),
        ({"paht": "/w"}, "options.workspace.paht"),
        ({"enabled": "true"}, "options.workspace.enabled"),
        ({"path": ""}, "options.workspace.path"),
        ({"path": 7}, "options.workspace.path"),
        ({"strategy": "svn"}, "options.workspace.strategy"),
        ({"backend": "auto", "strategy": "git"}, "options.workspace.backend"),
        ({"capture_patch": 1}, "options.workspace.capture_patch"),
        ({"max_patch_bytes": -1}, "options.workspace.max_patch_bytes"),
        ({"max_patch_bytes": True}, "options.workspace.max_patch_bytes"),
        ({"max_patch_bytes": 1 << 30}, "options.workspace.max_patch_bytes"),
        ({"rollback_on_failure": "no"}, "options.workspace.rollback_on_failure"),
        (
            {"strategy": "hash", "rollback_on_failure": True},
            "options.workspace.rollback_on_failure",
        ),
        ({"enabled": False, "strategy": "svn"}, "options.workspace.strategy"),
    ],
)
def test_options_parse_refuses_bad_values(value: Any, field: str) -> None:
    with pytest.raises(AsmError) as info:
        workspace_options_parse(value)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field


def test_submit_time_checks(tmp_path: Path, roots: Path) -> None:
    ws = str(roots / "ws")
    assert workspace_option_validate({"workspace": {"path": ws}}) is not None
    assert workspace_option_validate({}) is None
    later = str(roots / "created-later")  # existence is checked when the run executes
    assert workspace_option_validate({"workspace": {"path": later}}) is not None
    for path in escaping_cases(tmp_path, roots).values():
        with pytest.raises(AsmError) as info:
            workspace_option_validate({"workspace": {"path": path}})
        assert info.value.code == "validation_error"
    with pytest.raises(AsmError) as info:
        workspace_option_validate(
            {"workspace": {"path": ws}, "adapter_opts": {"workspace": str(roots)}}
        )
    assert info.value.details["field"] == "options.workspace.path"
    same = {"workspace": {"path": ws}, "adapter_opts": {"workspace": ws}}
    assert workspace_option_validate(same) is not None
    # Disabled: the path is not looked at.
    assert workspace_option_validate({"workspace": {"enabled": False, "path": "/etc"}})


def test_run_options_accept_workspace_strictly(roots: Path) -> None:
    options = {"workspace": {"path": str(roots / "ws"), "strategy": "git"}}
    assert validate_run_options(options, "echo") == options
    with pytest.raises(AsmError) as info:
        validate_run_options({"workspace": {"path": "/etc"}}, "echo")
    assert info.value.details["field"] == "options.workspace.path"


@pytest.mark.django_db
def test_submit_with_an_escaping_workspace_stores_nothing(tmp_path: Path, roots: Path) -> None:
    session = session_create(agent_id="ws-safety")
    for name, path in escaping_cases(tmp_path, roots).items():
        with pytest.raises(AsmError) as info:
            run_submit(
                session_id=session.id,
                input={"prompt": "hi"},
                options={"workspace": {"path": path}},
            )
        assert info.value.code == "validation_error", name
    assert not Run.objects.filter(session_id=session.id).exists()
    assert latest_sequence(session_id=session.id) == 1  # session_created only
