"""The helpers the provider adapters share: ``options``, ``workspace``, ``cli.child_env`` and
``stream_json`` (usage arithmetic, tool-call bookkeeping)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import RunContext
from runs.providers.cli import DEFAULT_PATH, NETWORK_ENV, child_env
from runs.providers.options import (
    adapter_opts,
    check_object,
    comma_list,
    env_flag,
    env_int,
    env_list,
    env_str,
    integer,
    non_empty_string,
)
from runs.providers.stream_json import (
    ToolCalls,
    UsageMeter,
    count,
    text_blocks,
    tool_result_blocks,
    usage_counts,
)
from runs.providers.workspace import (
    configured_workspace,
    run_workspace,
    split_roots,
    under_roots,
    validate_workspace_option,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: Mapping[str, Any]) -> None:
        self.events.append((type_, dict(data)))


def make_context(
    *, session_context: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> RunContext:
    return RunContext.build(
        run_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        input={"prompt": "hi"},
        options=options,
        session_context=session_context,
    )


def field_of(call: Any, *args: Any) -> str:
    with pytest.raises(AsmError) as info:
        call(*args)
    assert info.value.code == "validation_error"
    assert set(info.value.details) == {"field"}
    assert info.value.message.startswith(info.value.details["field"] + " ")
    return str(info.value.details["field"])


# --------------------------------------------------------------------------- options


def test_option_checks_name_the_field() -> None:
    assert integer(3, "f", 1, 5) == 3
    assert field_of(integer, True, "adapter_opts.n", 0) == "adapter_opts.n"
    assert field_of(integer, 0, "adapter_opts.n", 1) == "adapter_opts.n"
    assert field_of(integer, 6, "adapter_opts.n", 1, 5) == "adapter_opts.n"
    assert non_empty_string(" x ", "f") == " x "
    assert field_of(non_empty_string, "  ", "adapter_opts.model") == "adapter_opts.model"
    assert adapter_opts(None, ("a",)) == {}
    assert field_of(adapter_opts, ["a"], ("a",)) == "adapter_opts"
    assert field_of(adapter_opts, {"a": 1, "b": 2}, ("a",)) == "adapter_opts.b"
    assert field_of(check_object, {"x": 1}, "adapter_opts.fail", ("code",)) == (
        "adapter_opts.fail.x"
    )


def test_env_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_TEST_EMPTY", "")
    monkeypatch.setenv("ASM_TEST_FLAG", " Yes ")
    monkeypatch.setenv("ASM_TEST_LIST", " a, ,b ,")
    monkeypatch.setenv("ASM_TEST_INT", "7")
    monkeypatch.setenv("ASM_TEST_BAD_INT", "seven")
    monkeypatch.delenv("ASM_TEST_UNSET", raising=False)
    assert env_str("ASM_TEST_EMPTY") is None
    assert env_str("ASM_TEST_UNSET") is None
    assert env_flag("ASM_TEST_FLAG") is True
    assert env_flag("ASM_TEST_EMPTY") is False
    assert env_list("ASM_TEST_LIST") == ["a", "b"]
    assert env_list("ASM_TEST_EMPTY") == []
    assert env_list("ASM_TEST_UNSET") is None
    assert comma_list("x,y") == ["x", "y"]
    problems: list[str] = []
    assert env_int("ASM_TEST_INT", problems) == 7
    assert env_int("ASM_TEST_EMPTY", problems) is None
    assert env_int("ASM_TEST_BAD_INT", problems) is None
    assert problems == ["ASM_TEST_BAD_INT must be an integer, got 'seven'"]


# --------------------------------------------------------------------------- workspace


def test_workspace_option_and_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "root-sibling").mkdir()
    assert split_roots(f" {root} ,:/srv ") == (str(root), "/srv")
    assert under_roots(str(root / "a"), [str(root)])
    assert under_roots(str(root), [str(root) + "/"])
    assert not under_roots(str(tmp_path / "root-sibling"), [str(root)])
    assert validate_workspace_option(str(root / "a"), "adapter_opts.workspace", [str(root)])
    for bad in ("", "relative/dir", None, str(tmp_path / "root-sibling")):
        assert (
            field_of(validate_workspace_option, bad, "adapter_opts.workspace", [str(root)])
            == "adapter_opts.workspace"
        )


def test_configured_workspace_order_and_checks(tmp_path: Path) -> None:
    first, second, third = (tmp_path / n for n in ("first", "second", "third"))
    for path in (first, second, third):
        path.mkdir()
    context = make_context(
        session_context={"workspace_path": str(second)},
        options={"workspace": {"path": str(third)}},
    )
    assert configured_workspace(context, str(first)) == str(first)
    assert configured_workspace(context, None) == str(second)
    only_options = make_context(options={"workspace": {"path": str(third)}})
    assert configured_workspace(only_options, None) == str(third)
    disabled = make_context(options={"workspace": {"enabled": False, "path": str(third)}})
    assert configured_workspace(disabled, None) is None
    assert configured_workspace(make_context(), "") is None

    gone = make_context(session_context={"workspace_path": str(tmp_path / "gone")})
    assert field_of(configured_workspace, gone, None) == "session_context.workspace_path"
    not_a_path = make_context(options={"workspace": {"path": 42}})
    assert field_of(configured_workspace, not_a_path, None) == "options.workspace.path"
    assert field_of(configured_workspace, context, str(first), [str(second)]) == (
        "adapter_opts.workspace"
    )


def test_run_workspace_removes_only_its_temporary_directory(tmp_path: Path) -> None:
    with run_workspace(make_context(), None, temp_prefix="asm-test-") as temp:
        assert os.path.isdir(temp)
        assert os.path.basename(temp).startswith("asm-test-")
    assert not os.path.exists(temp)
    with pytest.raises(RuntimeError), run_workspace(make_context(), None, temp_prefix="t-") as t:
        raise RuntimeError("the run failed")
    assert not os.path.exists(t)
    with run_workspace(make_context(), str(tmp_path), temp_prefix="asm-test-") as given:
        assert given == str(tmp_path)
    assert tmp_path.is_dir()


# --------------------------------------------------------------------------- child env


def test_child_env_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("TZ", "UTC")
    env = child_env(("TZ", "ASM_TEST_UNSET_NAME"))
    assert "DATABASE_URL" not in env
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "NO_PROXY" not in env  # empty means unset
    assert env["TZ"] == "UTC"
    assert env["PATH"] == os.environ["PATH"]
    assert set(env) <= {"PATH", "TZ", *NETWORK_ENV}
    monkeypatch.delenv("PATH")
    assert child_env()["PATH"] == DEFAULT_PATH


# --------------------------------------------------------------------------- stream_json


def test_counts_and_blocks() -> None:
    assert [count(v) for v in (5, -3, 2.9, True, float("nan"), float("inf"), "7", None)] == [
        5,
        0,
        2,
        0,
        0,
        0,
        0,
        0,
    ]
    assert usage_counts({"input_tokens": 3, "bogus": 1}) == {
        "input_tokens": 3,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    content = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text"}, "x"]
    assert text_blocks(content) == ["a"]
    assert text_blocks("a") == []
    result = {"type": "tool_result", "tool_use_id": "t1"}
    line = {"message": {"content": [result, {"type": "text", "text": "no"}]}}
    assert tool_result_blocks(line) == [result]
    assert tool_result_blocks({"message": "x"}) == []


def test_usage_meter_never_double_counts_and_settles() -> None:
    rec = Recorder()
    meter = UsageMeter(rec)
    usage = usage_counts({"input_tokens": 10, "output_tokens": 2})
    meter.message("m1", usage)
    meter.message("m1", usage)  # the same message reported again: nothing
    meter.message("m1", usage_counts({"input_tokens": 10, "output_tokens": 5}))
    meter.message("m1", usage_counts({"input_tokens": 4}))  # never goes back
    meter.message(None, usage_counts({"output_tokens": 1}))
    meter.settle(usage_counts({"input_tokens": 12, "output_tokens": 6}))
    meter.settle(usage_counts({"input_tokens": 1}))  # a smaller total: nothing
    increments = [data for _, data in rec.events]
    assert [(d["input_tokens"], d["output_tokens"]) for d in increments] == [
        (10, 2),
        (0, 3),
        (0, 1),
        (2, 0),
    ]
    assert {type_ for type_, _ in rec.events} == {"token_usage_updated"}
    assert meter.total["input_tokens"] == sum(d["input_tokens"] for d in increments) == 12
    assert meter.total["output_tokens"] == 6


def test_tool_calls_match_results_to_their_started_call() -> None:
    calls = ToolCalls()
    tool_input = {"command": "ls"}
    started = calls.start("t1", "Bash", tool_input)
    assert started == {
        "tool_call_id": "t1",
        "tool_name": "Bash",
        "tool_input": {"command": "ls"},
        "tool_use_id": "t1",
        "input": {"command": "ls"},
    }
    started["tool_input"]["command"] = "rm"
    assert tool_input == {"command": "ls"}  # payloads are copies
    assert calls.finish("t1", "a.txt", is_error=False) == (
        "tool_call_completed",
        {
            "tool_call_id": "t1",
            "tool_name": "Bash",
            "tool_input": {"command": "ls"},
            "tool_output": "a.txt",
            "tool_use_id": "t1",
        },
    )
    event_type, failed = calls.finish("t9", "", is_error=True)
    assert event_type == "tool_call_failed"
    assert failed["tool_name"] == "unknown"
    assert failed["is_error"] is True
    assert failed["error"] == "tool failed"
    calls.start("t1", "Read", {})  # the same id started again
    assert [c.name for c in calls.calls] == ["Bash", "unknown", "Read"]
    assert [(c.id, c.name) for c in calls.latest()] == [("t1", "Read"), ("t9", "unknown")]
