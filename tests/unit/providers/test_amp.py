"""The amp provider: the stream-json parser, and the adapter driving a fake ``amp`` binary.

The fake (tests/fakes/fake_amp.py) checks argv like the real CLI and plays the JSONL
transcripts in tests/fixtures/providers/amp/, every line of which validates against the
official ``amp-sdk`` pydantic models.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, CapabilityType, Provider, ProviderResult, RunContext
from runs.providers.amp import (
    AmpProvider,
    AmpStreamParser,
    build_argv,
    build_prompt,
    is_thread_id,
    validate_adapter_opts,
)
from runs.providers.cli import run_jsonl
from tests.fakes.recorder import Recorder, run_context

TESTS = Path(__file__).resolve().parents[2]
FIXTURES = TESTS / "fixtures" / "providers" / "amp"
FAKE_AMP = TESTS / "fakes" / "fake_amp.py"
THREAD = "T-2775dc92-90ed-4f85-8b73-8f9766029e83"
API_KEY = "amp-fake-key-6d1f"


def lines(name: str) -> list[dict[str, Any]]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parse(name: str) -> tuple[AmpStreamParser, Recorder]:
    rec = Recorder()
    parser = AmpStreamParser(rec)
    for line in lines(name):
        parser.feed(line)
    return parser, rec


def make_context(prompt: str = "what is 2+2?", **kwargs: Any) -> RunContext:
    return run_context(prompt, **kwargs)


# --------------------------------------------------------------------------- fixtures


def test_every_fixture_line_validates_against_the_official_amp_sdk_models() -> None:
    """Parse like amp_sdk.core._read_process_output: result by is_error, else by type."""
    amp_sdk_core = pytest.importorskip("amp_sdk.core")
    amp_sdk_types = pytest.importorskip("amp_sdk.types")
    files = sorted(FIXTURES.glob("*.jsonl"))
    assert len(files) >= 6
    for path in files:
        for n, line in enumerate(lines(path.name), start=1):
            kind = line["type"]
            if kind == "result":
                model = (
                    amp_sdk_types.ErrorResultMessage
                    if line.get("is_error")
                    else amp_sdk_types.ResultMessage
                )
            else:
                assert kind in amp_sdk_core.MESSAGE_TYPES, f"{path.name}:{n}: type {kind!r}"
                model = amp_sdk_core.MESSAGE_TYPES[kind]
            parsed = model.model_validate(line)
            assert parsed.session_id == line["session_id"], f"{path.name}:{n}"
            assert is_thread_id(parsed.session_id), f"{path.name}:{n}"


# --------------------------------------------------------------------------- parser


def test_parser_success_transcript() -> None:
    parser, rec = parse("success.jsonl")
    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]
    assert rec.of("message_streamed") == [
        {"delta": "2 + 2 equals 4.", "content": "2 + 2 equals 4."}
    ]
    assert rec.of("message_received") == [{"content": "2 + 2 equals 4.", "role": "assistant"}]
    assert rec.of("token_usage_updated") == [
        {
            "input_tokens": 12783,
            "output_tokens": 8,
            "cache_read_input_tokens": 12416,
            "cache_creation_input_tokens": 367,
        }
    ]
    assert parser.finished
    assert parser.failure is None
    assert parser.tools[:3] == ["Bash", "Read", "edit_file"]
    result = parser.provider_result()
    assert result.provider_session_id == THREAD
    assert result.model == "claude-sonnet-4-5"
    assert result.stop_reason == "end_turn"
    assert result.output == {
        "content": "2 + 2 equals 4.",
        "stop_reason": "end_turn",
        "tool_calls": [],
        "num_turns": 1,
        "duration_ms": 2906,
    }
    assert result.token_usage == rec.usage_total()


def test_parser_tool_use_transcript() -> None:
    parser, rec = parse("tool_use.jsonl")
    assert rec.types == [
        "message_streamed",
        "message_received",
        "tool_call_started",
        "token_usage_updated",
        "tool_call_completed",
        "tool_call_started",
        "token_usage_updated",
        "tool_call_failed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    bash_started, read_started = rec.of("tool_call_started")
    assert bash_started == {
        "tool_call_id": "toolu_amp_1",
        "tool_name": "Bash",
        "tool_input": {"cmd": "ls"},
        "tool_use_id": "toolu_amp_1",
        "input": {"cmd": "ls"},
    }
    assert read_started["tool_name"] == "Read"
    assert rec.of("tool_call_completed") == [
        {
            "tool_call_id": "toolu_amp_1",
            "tool_name": "Bash",
            "tool_input": {"cmd": "ls"},
            "tool_output": "a.txt\nb.txt\n",
            "tool_use_id": "toolu_amp_1",
            "content": "a.txt\nb.txt\n",
        }
    ]
    (failed,) = rec.of("tool_call_failed")
    assert failed["tool_call_id"] == "toolu_amp_2"
    assert failed["tool_name"] == "Read"
    assert failed["tool_input"] == {"path": "/srv/workspace/notes.txt"}
    assert failed["is_error"] is True
    assert failed["error"] == "File not found: /srv/workspace/notes.txt"
    # per-message increments; their sum equals result.usage, so no reconciling event
    assert [u["input_tokens"] for u in rec.of("token_usage_updated")] == [900, 950, 1000]
    total = rec.usage_total()
    assert total == {
        "input_tokens": 2850,
        "output_tokens": 60,
        "cache_read_input_tokens": 1850,
        "cache_creation_input_tokens": 100,
    }
    result = parser.provider_result()
    assert result.token_usage == total
    assert result.output["content"] == (
        "There are two files, a.txt and b.txt; notes.txt does not exist."
    )
    assert result.output["num_turns"] == 3
    assert [c["name"] for c in result.output["tool_calls"]] == ["Bash", "Read"]
    assert result.output["tool_calls"][1]["is_error"] is True
    assert result.output["tool_calls"][0]["output"] == "a.txt\nb.txt\n"


def test_parser_error_result_takes_the_message_from_error() -> None:
    parser, rec = parse("error.jsonl")
    assert parser.finished
    failure = parser.failure
    assert failure is not None
    assert failure.code == "provider_rate_limited"
    assert "rate limit exceeded" in failure.message
    assert failure.details["subtype"] == "error_during_execution"
    assert failure.details["thread_id"] == "T-9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
    assert failure.details["permission_denials"] == ["Bash"]
    assert failure.details["status"] == 429
    assert "message_received" in rec.types  # what happened before the failure is kept
    with pytest.raises(AsmError) as info:
        parser.provider_result()
    assert info.value is failure


def test_parser_max_turns_is_a_provider_error_with_details() -> None:
    parser, _ = parse("max_turns.jsonl")
    failure = parser.failure
    assert failure is not None
    assert failure.code == "provider_error"
    assert "Maximum number of turns (1) reached" in failure.message
    assert failure.details["subtype"] == "error_max_turns"
    assert failure.details["num_turns"] == 1


def _result(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "done",
        "duration_ms": 5,
        "num_turns": 1,
        "session_id": THREAD,
    }
    base.update(fields)
    return base


def test_parser_judges_success_by_is_error_never_by_subtype() -> None:
    for text in ("Invalid or missing API key.", "request failed: HTTP 401 Unauthorized"):
        parser = AmpStreamParser(Recorder())
        assert parser.feed(_result(subtype="success", is_error=True, error=text))
        assert parser.failure is not None
        assert parser.failure.code == "provider_authentication_failed"
        assert text in parser.failure.message

    parser = AmpStreamParser(Recorder())
    assert parser.feed(_result(subtype="error_during_execution", is_error=False, result="ok"))
    assert parser.failure is None
    assert parser.provider_result().output["content"] == "ok"


def test_parser_error_without_error_field_falls_back() -> None:
    parser = AmpStreamParser(Recorder())
    parser.feed(_result(subtype="error_during_execution", is_error=True, result=None))
    assert parser.failure is not None
    assert parser.failure.code == "provider_error"
    assert "Unknown error" in parser.failure.message


def test_parser_does_not_double_count_a_message_seen_twice() -> None:
    rec = Recorder()
    parser = AmpStreamParser(rec)

    def assistant(block: dict[str, Any], output_tokens: int) -> dict[str, Any]:
        return {
            "type": "assistant",
            "session_id": THREAD,
            "message": {
                "id": "msg_same",
                "content": [block],
                "usage": {"input_tokens": 50, "output_tokens": output_tokens},
            },
        }

    parser.feed(assistant({"type": "text", "text": "a"}, 1))
    parser.feed(assistant({"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}, 7))
    parser.feed(
        {"type": "assistant", "session_id": THREAD, "message": {"content": [], "usage": {}}}
    )
    assert rec.of("token_usage_updated") == [
        {
            "input_tokens": 50,
            "output_tokens": 1,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        {
            "input_tokens": 0,
            "output_tokens": 6,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    ]
    # a result reporting more than the messages did adds the difference once
    parser.feed(_result(usage={"input_tokens": 80, "output_tokens": 7}))
    assert rec.of("token_usage_updated")[-1]["input_tokens"] == 30
    assert rec.usage_total()["input_tokens"] == 80
    assert parser.provider_result().token_usage["input_tokens"] == 80


def test_parser_edge_cases() -> None:
    rec = Recorder()
    parser = AmpStreamParser(rec)
    assert not parser.feed({"type": "system", "subtype": "status", "session_id": THREAD})
    assert not parser.feed({"type": "stream_event", "event": {}})
    assert not parser.feed(
        {"type": "user", "message": {"content": [{"type": "text", "text": "x"}]}}
    )
    parser.feed(
        {
            "type": "assistant",
            "session_id": THREAD,
            "parent_tool_use_id": "toolu_parent",
            "message": {
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {"type": "tool_use", "id": "t9", "name": "Task", "input": ["not", "a", "dict"]},
                ]
            },
        }
    )
    parser.feed(
        {
            "type": "user",
            "session_id": THREAD,
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t9",
                        "content": [{"type": "text", "text": "ok"}],
                    },
                    {"type": "tool_result", "tool_use_id": "t_unknown", "content": "orphan"},
                ]
            },
        }
    )
    started = rec.of("tool_call_started")
    assert started[0]["tool_input"] == {}
    assert started[0]["parent_tool_use_id"] == "toolu_parent"
    completed = rec.of("tool_call_completed")
    assert completed[0]["tool_output"] == "ok"
    assert completed[1]["tool_name"] == "unknown"
    assert "message_streamed" not in rec.types  # thinking is not assistant text
    assert parser.thread_id == THREAD
    assert parser.feed(_result())
    assert not parser.feed(_result(result="late"))  # nothing after the terminal line
    assert parser.provider_result().output["content"] == "done"


# --------------------------------------------------------------------------- prompt, argv, opts


def test_build_prompt_and_argv() -> None:
    context = make_context(
        input={
            "messages": [
                {"role": "system", "content": "ignored here"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": "second"},
            ]
        },
        session_context={
            "system_prompt": "Be terse.",
            "transcript": [{"role": "user", "content": "earlier"}, {"role": "assistant"}],
        },
    )
    assert build_prompt(context, resuming=False) == "Be terse.\n\nuser: earlier\n\nfirst\nsecond"
    assert build_prompt(context, resuming=True) == "first\nsecond"
    with pytest.raises(AsmError) as info:
        build_prompt(make_context(input={"messages": []}), resuming=False)
    assert info.value.code == "invalid_input"

    assert build_argv("amp", "-rf /") == ["amp", "--execute=-rf /", "--stream-json"]
    assert build_argv(
        "/bin/amp",
        "hi",
        thread_id=THREAD,
        dangerously_allow_all=True,
        mode="low",
        settings_file="/etc/amp.json",
        labels=["a", "b-2"],
    ) == [
        "/bin/amp",
        "threads",
        "continue",
        THREAD,
        "--execute=hi",
        "--stream-json",
        "--dangerously-allow-all",
        "--mode",
        "low",
        "--settings-file",
        "/etc/amp.json",
        "--label",
        "a",
        "--label",
        "b-2",
    ]


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"model": "x"}, "adapter_opts.model"),
        ({"workspace": "relative/dir"}, "adapter_opts.workspace"),
        ({"workspace": ""}, "adapter_opts.workspace"),
        ({"workspace": "/etc"}, "adapter_opts.workspace"),  # outside the roots below
        ({"mode": ""}, "adapter_opts.mode"),
        ({"mode": "--dangerously-allow-all"}, "adapter_opts.mode"),
        ({"mode": 3}, "adapter_opts.mode"),
        ({"labels": "a"}, "adapter_opts.labels"),
        ({"labels": ["ok", "-bad"]}, "adapter_opts.labels[1]"),
        ({"labels": ["x"] * 21}, "adapter_opts.labels"),
    ],
)
def test_validate_adapter_opts_rejects(opts: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        validate_adapter_opts(opts, ("/srv/workspaces",))
    assert info.value.code == "validation_error"
    assert info.value.details == {"field": field}
    with pytest.raises(AsmError):
        AmpProvider(workspace_roots=["/srv/workspaces"]).validate_adapter_opts(opts)


def test_validate_adapter_opts_accepts() -> None:
    opts = validate_adapter_opts(
        {"workspace": "/srv/workspaces/a", "mode": "low", "labels": ["ci", "run-1"]},
        ("/srv/workspaces",),
    )
    assert opts.workspace == "/srv/workspaces/a"
    assert opts.mode == "low"
    assert opts.labels == ("ci", "run-1")
    assert validate_adapter_opts(None).workspace is None
    AmpProvider(workspace_roots=()).validate_adapter_opts({"workspace": "/anywhere"})


# --------------------------------------------------------------------------- config


def test_is_a_provider_with_honest_capabilities() -> None:
    amp = AmpProvider()  # never raises, even unconfigured
    assert isinstance(amp, Provider)
    assert amp.name == "amp"
    caps = {(str(c.type), c.name) for c in amp.capabilities()}
    assert {("tool", "Bash"), ("tool", "Read"), ("tool", "edit_file")} <= caps
    types = {str(c.type) for c in amp.capabilities()}
    assert {"tool", "code_execution", "file_access", "resume", "cancel"} <= types
    assert CapabilityType.STREAMING not in types  # whole messages only
    amp.cancel(uuid.uuid4())
    amp.cancel(uuid.uuid4())


def test_validate_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_amp: Path) -> None:
    monkeypatch.delenv("AMP_API_KEY", raising=False)
    monkeypatch.delenv("ASM_AMP_BIN", raising=False)
    monkeypatch.delenv("AMP_SETTINGS_FILE", raising=False)

    with pytest.raises(AsmError) as info:
        AmpProvider(binary=str(tmp_path / "missing" / "amp"), api_key="k").validate_config()
    assert info.value.code == "validation_error"
    assert "ASM_AMP_BIN" in info.value.message

    with pytest.raises(AsmError) as info:
        AmpProvider(binary=str(fake_amp)).validate_config()
    assert info.value.code == "validation_error"
    assert "AMP_API_KEY" in info.value.message

    with pytest.raises(AsmError) as info:
        AmpProvider(
            binary=str(fake_amp), api_key="k", settings_file=str(tmp_path / "nope.json")
        ).validate_config()
    assert "AMP_SETTINGS_FILE" in info.value.message

    monkeypatch.setenv("AMP_API_KEY", "from-env")
    monkeypatch.setenv("ASM_AMP_BIN", str(fake_amp))
    provider = AmpProvider()
    provider.validate_config()
    assert provider.api_key == "from-env"

    # nothing configured and nothing on PATH: ~/.amp/bin/amp is the last resort
    monkeypatch.delenv("ASM_AMP_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(AsmError) as info:
        AmpProvider().validate_config()
    assert "ASM_AMP_BIN" in info.value.message
    home_bin = tmp_path / "home" / ".amp" / "bin"
    home_bin.mkdir(parents=True)
    (home_bin / "amp").write_bytes(fake_amp.read_bytes())
    (home_bin / "amp").chmod(0o755)
    AmpProvider().validate_config()


# --------------------------------------------------------------------------- against the fake


@pytest.fixture
def fake_amp(tmp_path: Path) -> Path:
    """An executable `amp` that runs tests/fakes/fake_amp.py with this interpreter."""
    wrapper = tmp_path / "bin" / "amp"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_AMP))} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


class Harness:
    def __init__(self, fake_amp: Path, tmp_path: Path) -> None:
        self.fake_amp = fake_amp
        self.log = tmp_path / "argv.jsonl"
        self.tmp_path = tmp_path

    def provider(self, script: str | None = None, **kwargs: Any) -> AmpProvider:
        extra_env = {"FAKE_AMP_ARGV_LOG": str(self.log)}
        if script is not None:
            extra_env["FAKE_AMP_SCRIPT"] = str(FIXTURES / script)
        extra_env.update(kwargs.pop("fake_env", {}))
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("url", "http://127.0.0.1:9/")
        kwargs.setdefault("workspace_roots", ())
        kwargs.setdefault("mode", None)
        kwargs.setdefault("dangerously_allow_all", False)
        return AmpProvider(binary=str(self.fake_amp), extra_env=extra_env, **kwargs)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text(encoding="utf-8").splitlines()]

    def run(
        self, provider: AmpProvider, context: RunContext | None = None
    ) -> tuple[ProviderResult, Recorder]:
        rec = Recorder()
        result = provider.execute(context or make_context(), rec, CancelToken())
        return result, rec

    def fail(
        self, provider: AmpProvider, context: RunContext | None = None
    ) -> tuple[AsmError, Recorder]:
        rec = Recorder()
        with pytest.raises(AsmError) as info:
            provider.execute(context or make_context(), rec, CancelToken())
        return info.value, rec


@pytest.fixture
def harness(fake_amp: Path, tmp_path: Path) -> Harness:
    return Harness(fake_amp, tmp_path)


def test_success_through_the_fake(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_TEST_WORKER_SECRET", "must-not-leak")
    result, rec = harness.run(harness.provider("success.jsonl"))
    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]
    assert result.output["content"] == "2 + 2 equals 4."
    assert result.provider_session_id == THREAD
    assert result.token_usage == rec.usage_total()

    (call,) = harness.calls()
    assert call["argv"] == ["--execute=what is 2+2?", "--stream-json"]
    assert all(API_KEY not in arg for arg in call["argv"])
    assert call["env"]["AMP_API_KEY"] == API_KEY
    assert call["env"]["AMP_URL"] == "http://127.0.0.1:9/"
    assert "ASM_TEST_WORKER_SECRET" not in call["env_keys"]  # minimal environment
    assert "PATH" in call["env_keys"]
    # no workspace given: a temporary cwd, removed after the run
    assert Path(call["cwd"]).name.startswith("asm-amp-")
    assert not Path(call["cwd"]).exists()


def test_tool_use_through_the_fake(harness: Harness) -> None:
    result, rec = harness.run(harness.provider("tool_use.jsonl"))
    assert rec.types.count("tool_call_started") == 2
    assert rec.types.count("tool_call_completed") == 1
    assert rec.types.count("tool_call_failed") == 1
    assert result.token_usage["input_tokens"] == 2850
    assert result.token_usage == rec.usage_total()
    assert result.provider_session_id == "T-5b0c1d2e-3f40-4a51-8b62-7c83d94ea5f6"


def test_error_result_through_the_fake(harness: Harness) -> None:
    error, rec = harness.fail(harness.provider("error.jsonl"))
    assert error.code == "provider_rate_limited"
    assert error.retryable
    assert "status 429 Too Many Requests: rate limit exceeded" in error.message
    assert error.details["thread_id"] == "T-9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
    assert rec.of("message_received")[0]["content"] == "Looking at the parser first."

    error, _ = harness.fail(harness.provider("max_turns.jsonl"))
    assert error.code == "provider_error"
    assert error.details["subtype"] == "error_max_turns"


def test_continue_thread_through_the_fake(harness: Harness) -> None:
    session_context = {"system_prompt": "Be terse."}
    first, _ = harness.run(
        harness.provider("success.jsonl"), make_context(session_context=session_context)
    )
    assert first.provider_session_id == THREAD
    second, rec = harness.run(
        harness.provider("continue.jsonl"),
        make_context(
            "and times 3?",
            provider_session_id=first.provider_session_id,
            session_context=session_context,
        ),
    )
    assert second.provider_session_id == THREAD
    assert second.output["content"] == "(2 + 2) * 3 = 12."
    first_call, second_call = harness.calls()
    # a new thread carries the system prompt; the continued one holds it already
    assert first_call["argv"] == ["--execute=Be terse.\n\nwhat is 2+2?", "--stream-json"]
    assert second_call["argv"] == [
        "threads",
        "continue",
        THREAD,
        "--execute=and times 3?",
        "--stream-json",
    ]
    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]


def test_a_provider_session_id_that_is_no_thread_id_starts_a_new_thread(
    harness: Harness,
) -> None:
    result, rec = harness.run(
        harness.provider("success.jsonl"), make_context(provider_session_id="--evil")
    )
    assert rec.types[0] == "error_occurred"
    assert "--evil" in rec.of("error_occurred")[0]["error_message"]
    assert harness.calls()[0]["argv"] == ["--execute=what is 2+2?", "--stream-json"]
    assert result.provider_session_id == THREAD


def test_flags_and_workspace_reach_the_cli(harness: Harness, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    settings = tmp_path / "settings.json"
    settings.write_text("{}", encoding="utf-8")
    provider = harness.provider(
        "success.jsonl",
        dangerously_allow_all=True,
        mode="medium",
        settings_file=str(settings),
        workspace_roots=(str(tmp_path),),
    )
    harness.run(
        provider,
        make_context(
            "-rf is not a flag",
            adapter_opts={"workspace": str(workspace), "mode": "low", "labels": ["ci"]},
        ),
    )
    (call,) = harness.calls()
    assert call["argv"] == [
        "--execute=-rf is not a flag",
        "--stream-json",
        "--dangerously-allow-all",
        "--mode",
        "low",
        "--settings-file",
        str(settings),
        "--label",
        "ci",
    ]
    assert os.path.realpath(call["cwd"]) == os.path.realpath(workspace)
    assert workspace.exists()  # a given workspace is never removed


def test_workspace_from_session_context_and_missing_directory(
    harness: Harness, tmp_path: Path
) -> None:
    harness.run(
        harness.provider("success.jsonl"),
        make_context(session_context={"workspace_path": str(tmp_path)}),
    )
    assert os.path.realpath(harness.calls()[0]["cwd"]) == os.path.realpath(tmp_path)

    error, _ = harness.fail(
        harness.provider("success.jsonl"),
        make_context(adapter_opts={"workspace": str(tmp_path / "gone")}),
    )
    assert error.code == "validation_error"
    assert error.details == {"field": "adapter_opts.workspace"}
    assert len(harness.calls()) == 1  # the CLI never started


def test_env_passthrough(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_TEST_CORP_CA", "/etc/ca.pem")
    harness.run(harness.provider("success.jsonl", env_passthrough="ASM_TEST_CORP_CA"))
    assert "ASM_TEST_CORP_CA" in harness.calls()[0]["env_keys"]


def test_eof_without_result_is_interrupted(harness: Harness) -> None:
    error, rec = harness.fail(harness.provider("truncated.jsonl"))
    assert error.code == "provider_error"
    assert "interrupted" in error.message
    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]


@pytest.mark.parametrize(
    ("stderr", "code"),
    [
        (
            "Error: Invalid or missing API key. Run 'amp login' to authenticate.",
            "provider_authentication_failed",
        ),
        (
            "Error: Couldn't connect to the Amp server at http://127.0.0.1:9/.",
            "provider_unavailable",
        ),
        ("Error: request failed with status 503 Service Unavailable", "provider_unavailable"),
        ("Error: something odd happened", "provider_error"),
    ],
)
def test_nonzero_exit_maps_stderr(harness: Harness, stderr: str, code: str) -> None:
    provider = harness.provider(fake_env={"FAKE_AMP_STDERR": stderr, "FAKE_AMP_EXIT": "1"})
    error, rec = harness.fail(provider)
    assert error.code == code
    assert stderr.removeprefix("Error: ")[:20] in error.message
    assert error.details["exit_code"] == 1
    assert rec.events == []


def test_a_success_result_wins_over_a_nonzero_exit(harness: Harness) -> None:
    provider = harness.provider(
        "success.jsonl", fake_env={"FAKE_AMP_STDERR": "warning", "FAKE_AMP_EXIT": "3"}
    )
    result, _ = harness.run(provider)
    assert result.output["content"] == "2 + 2 equals 4."


def test_a_bad_argv_is_refused_by_the_fake(harness: Harness) -> None:
    """The fake is strict: an argv the real CLI would refuse fails the run."""
    rec = Recorder()
    provider = harness.provider("success.jsonl")
    argv = [*build_argv(str(harness.fake_amp), "hi"), "--no-such-flag"]
    outcome = run_jsonl(
        argv,
        provider="amp",
        on_line=AmpStreamParser(rec).feed,
        cancel_token=CancelToken(),
        env=provider._env(),
    )
    assert outcome.exit_code == 2
    assert "unknown option '--no-such-flag'" in outcome.stderr_tail
    with pytest.raises(AsmError):
        outcome.raise_unless_finished()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_cancel_kills_the_whole_process_group(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    provider = harness.provider(
        "truncated.jsonl",
        fake_env={"FAKE_AMP_HANG": "1", "FAKE_AMP_CHILD_PID_FILE": str(pid_file)},
    )
    token = CancelToken()
    rec = Recorder()
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            provider.execute(make_context(), rec, token)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pid_file.read_text())
    assert _alive(child)
    assert "message_received" in rec.types  # the lines before the hang were reported

    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(5)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 2.0
    error = box["error"]
    assert isinstance(error, AsmError)
    assert error.code == "cancelled"
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the fake's child `sleep` outlived the run"
    fake_pid = harness.calls()[0]["pid"]
    assert not _alive(fake_pid)


def test_cancel_before_start_runs_nothing(harness: Harness) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(AsmError) as info:
        harness.provider("success.jsonl").execute(make_context(), Recorder(), token)
    assert info.value.code == "cancelled"
    assert harness.calls() == []


def test_execute_checks_config_first(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMP_API_KEY", raising=False)
    provider = harness.provider("success.jsonl", api_key=None)
    error, _ = harness.fail(provider)
    assert error.code == "validation_error"
    assert "AMP_API_KEY" in error.message
    assert harness.calls() == []
