"""The codex provider without its binary: the pure JSONL parser on captured codex 0.171.0
output (tests/fixtures/providers/codex-*.jsonl), usage deltas, the prompt, the argv and
the configuration checks."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CapabilityType, Provider, RunContext
from runs.providers.codex import (
    KEY_ENV,
    CodexJsonlParser,
    CodexProvider,
    build_prompt,
    toml_string,
    usage_delta,
    validate_adapter_opts,
)
from tests.fakes.recorder import Recorder, run_context

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "providers"
TOOLS = "codex-0.171.0-exec-json-tools.jsonl"
PATCH = "codex-0.171.0-exec-json-patch.jsonl"
FAIL = "codex-0.171.0-exec-json-fail.jsonl"


def lines(name: str) -> list[dict[str, Any]]:
    """The sample's JSON objects, parsed like cli.run_jsonl does (json.loads per line)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parse(
    objs: Sequence[Mapping[str, Any]], previous: Mapping[str, Any] | None = None
) -> tuple[CodexJsonlParser, Recorder]:
    """Feed the lines, then close; the Recorder checks every event against its schema."""
    parser = CodexJsonlParser(previous)
    rec = Recorder()
    for obj in objs:
        for event in parser.feed(obj):
            rec(*event)
    for event in parser.close():
        rec(*event)
    return parser, rec


def started(thread: str = "t-1") -> list[dict[str, Any]]:
    return [{"type": "thread.started", "thread_id": thread}, {"type": "turn.started"}]


def done(**usage: int) -> dict[str, Any]:
    return {"type": "turn.completed", "usage": usage or {"input_tokens": 1, "output_tokens": 1}}


# --------------------------------------------------------------------------- samples


def test_tools_sample_maps_shell_reasoning_message_and_usage() -> None:
    parser, rec = parse(lines(TOOLS))
    assert rec.types == [
        "tool_call_started",
        "tool_call_completed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    command = "/bin/bash -lc 'echo hi-from-tool'"
    start, end = rec.events[0][1], rec.events[1][1]
    assert start["tool_call_id"] == end["tool_call_id"] == "item_1"
    assert start["tool_name"] == end["tool_name"] == "shell"
    assert start["tool_input"] == end["tool_input"] == {"command": command}
    assert end["tool_output"] == {"output": "hi-from-tool\n", "exit_code": 0}
    assert rec.of("message_streamed") == [
        {"delta": "Done: hi-from-tool", "content": "Done: hi-from-tool"}
    ]
    received = rec.of("message_received")[0]
    assert (received["content"], received["role"]) == ("Done: hi-from-tool", "assistant")
    # a new thread: the cumulative totals are this run's usage
    assert rec.of("token_usage_updated") == [
        {
            "input_tokens": 250,
            "output_tokens": 25,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 0,
            "reasoning_output_tokens": 5,
        }
    ]
    assert parser.thread_id == "01a21f98-14a3-7b53-ad2a-072a456498f0"
    assert parser.completed
    assert parser.finished
    assert parser.failure is None
    assert parser.content == "Done: hi-from-tool"
    assert parser.reasoning == ["**Planning** I will run echo."]  # thinking, not message text
    assert parser.thread_usage == {
        "input_tokens": 250,
        "cached_input_tokens": 100,
        "cache_write_input_tokens": 0,
        "output_tokens": 25,
        "reasoning_output_tokens": 5,
    }
    assert parser.tool_calls == [
        {
            "id": "item_1",
            "name": "shell",
            "input": {"command": command},
            "output": {"output": "hi-from-tool\n", "exit_code": 0},
        }
    ]


def test_patch_sample_maps_web_search_with_its_duplicate_id_and_apply_patch() -> None:
    parser, rec = parse(lines(PATCH))
    assert rec.types == [
        "tool_call_started",
        "tool_call_completed",
        "tool_call_started",
        "tool_call_completed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    search_start, search_end, patch_start, patch_end = (d for _, d in rec.events[:4])
    # {"id":"item_0","type":"web_search","id":"ws_1"}: json.loads keeps the last "id"
    assert search_start["tool_call_id"] == search_end["tool_call_id"] == "ws_1"
    assert search_start["tool_name"] == "web_search"
    action = {"type": "search", "query": "weather paris"}
    assert search_start["tool_input"] == {"query": "weather paris", "action": action}
    changes = [{"path": "/srv/workspace/hello.txt", "kind": "add"}]
    assert patch_start["tool_call_id"] == patch_end["tool_call_id"] == "item_1"
    assert patch_start["tool_name"] == patch_end["tool_name"] == "apply_patch"
    assert patch_start["tool_input"] == {"changes": changes}
    assert patch_end["tool_output"] == {"changes": changes}
    assert parser.content == "Wrote file"
    assert [c["name"] for c in parser.tool_calls] == ["web_search", "apply_patch"]


def test_fail_sample_is_a_failure_without_a_duplicate_warning() -> None:
    parser, rec = parse(lines(FAIL))
    # the top-level error repeats the turn.failed message: reported once, as the failure
    assert rec.events == []
    assert parser.failure == "stream disconnected before completion: boom"
    assert parser.finished
    assert not parser.completed
    assert parser.thread_id == "01a21f98-190e-7d83-be1b-f2dd9adae1ad"


# --------------------------------------------------------------------------- usage


def test_resumed_thread_reports_the_delta_since_the_previous_run() -> None:
    thread = "01a21f98-14a3-7b53-ad2a-072a456498f0"
    previous = {
        thread: {
            "input_tokens": 100,
            "cached_input_tokens": 40,
            "cache_write_input_tokens": 0,
            "output_tokens": 10,
            "reasoning_output_tokens": 2,
        },
        "some-other-thread": {"input_tokens": 9999, "output_tokens": 9999},
    }
    parser, rec = parse(lines(TOOLS), previous)
    assert rec.of("token_usage_updated") == [
        {
            "input_tokens": 150,
            "output_tokens": 15,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 0,
            "reasoning_output_tokens": 3,
        }
    ]
    assert parser.usage == rec.of("token_usage_updated")[0]
    assert parser.thread_usage is not None
    assert parser.thread_usage["input_tokens"] == 250


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [
        ({}, None, {"input_tokens": 0, "output_tokens": 0}),
        # an older codex: only three fields
        (
            {"input_tokens": 30, "cached_input_tokens": 5, "output_tokens": 4},
            None,
            {"input_tokens": 30, "output_tokens": 4, "cache_read_input_tokens": 5},
        ),
        (
            {"input_tokens": 30, "output_tokens": 4},
            {"input_tokens": 10, "output_tokens": 1, "junk": "x"},
            {"input_tokens": 20, "output_tokens": 3},
        ),
        # a previous total larger than the current one (a reset thread): never negative
        (
            {"input_tokens": 5, "output_tokens": 1},
            {"input_tokens": 50, "output_tokens": 10},
            {"input_tokens": 0, "output_tokens": 0},
        ),
        # malformed previous values count as 0
        (
            {"input_tokens": 5, "output_tokens": 1},
            {"input_tokens": "lots", "output_tokens": True},
            {"input_tokens": 5, "output_tokens": 1},
        ),
    ],
)
def test_usage_delta(
    current: dict[str, int], previous: dict[str, Any] | None, expected: dict[str, int]
) -> None:
    assert usage_delta(current, previous) == expected


def test_usage_tolerates_extra_and_bad_fields() -> None:
    _, rec = parse(
        [
            *started(),
            done(input_tokens=7, output_tokens=2, future_field=3, cached_input_tokens=-1),
        ]
    )
    assert rec.of("token_usage_updated") == [{"input_tokens": 7, "output_tokens": 2}]


# --------------------------------------------------------------------------- tools


def _cmd(status: str, exit_code: int | None, output: str = "") -> dict[str, Any]:
    return {
        "id": "item_5",
        "type": "command_execution",
        "command": "/bin/bash -lc 'false'",
        "aggregated_output": output,
        "exit_code": exit_code,
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "exit_code", "error"),
    [
        ("failed", 3, "command exited with code 3"),
        ("completed", 1, "command exited with code 1"),
        ("declined", None, "command declined"),
    ],
)
def test_failed_or_declined_commands_are_tool_call_failed(
    status: str, exit_code: int | None, error: str
) -> None:
    parser, rec = parse(
        [
            *started(),
            {"type": "item.started", "item": _cmd("in_progress", None)},
            {"type": "item.completed", "item": _cmd(status, exit_code, "nope\n")},
            done(),
        ]
    )
    assert rec.types == ["tool_call_started", "tool_call_failed", "token_usage_updated"]
    failed = rec.events[1][1]
    assert failed["tool_name"] == "shell"
    assert failed["is_error"] is True
    assert failed["error"] == error
    assert failed["tool_output"] == {"output": "nope\n", "exit_code": exit_code}
    assert parser.tool_calls[0]["error"] == error


def test_completed_tool_without_a_started_line_still_gets_its_start() -> None:
    _, rec = parse([*started(), {"type": "item.completed", "item": _cmd("completed", 0)}])
    assert rec.types == ["tool_call_started", "tool_call_completed"]


def test_updates_do_not_repeat_the_start() -> None:
    _, rec = parse(
        [
            *started(),
            {"type": "item.started", "item": _cmd("in_progress", None)},
            {"type": "item.updated", "item": _cmd("in_progress", None, "partial")},
            {"type": "item.completed", "item": _cmd("completed", 0, "partial\n")},
        ]
    )
    assert rec.types == ["tool_call_started", "tool_call_completed"]


def test_mcp_tool_calls() -> None:
    ok = {
        "id": "item_1",
        "type": "mcp_tool_call",
        "server": "docs",
        "tool": "lookup",
        "arguments": {"q": "x"},
        "result": {"content": [{"type": "text", "text": "found"}], "structured_content": None},
        "error": None,
        "status": "completed",
    }
    bad = {
        **ok,
        "id": "item_2",
        "arguments": "raw",
        "result": None,
        "error": {"message": "server gone"},
        "status": "failed",
    }
    _, rec = parse(
        [
            *started(),
            {"type": "item.started", "item": {**ok, "result": None, "status": "in_progress"}},
            {"type": "item.completed", "item": ok},
            {"type": "item.completed", "item": bad},
        ]
    )
    assert rec.types == [
        "tool_call_started",
        "tool_call_completed",
        "tool_call_started",
        "tool_call_failed",
    ]
    assert rec.events[0][1]["tool_name"] == "mcp:docs/lookup"
    assert rec.events[0][1]["tool_input"] == {"q": "x"}
    assert (rec.events[0][1]["server"], rec.events[0][1]["tool"]) == ("docs", "lookup")
    assert rec.events[1][1]["tool_output"] == ok["result"]
    assert rec.events[2][1]["tool_input"] == {"arguments": "raw"}  # tool_input is always a dict
    assert rec.events[3][1]["error"] == "server gone"


def test_failed_patch() -> None:
    item = {"id": "item_3", "type": "file_change", "changes": [], "status": "failed"}
    _, rec = parse([*started(), {"type": "item.completed", "item": item}])
    assert rec.types == ["tool_call_started", "tool_call_failed"]
    assert rec.events[1][1]["error"] == "patch failed"


# --------------------------------------------------------------------------- errors, metadata


def test_warnings_retry_notices_and_error_items() -> None:
    parser, rec = parse(
        [
            *started(),
            {"type": "item.completed", "item": {"id": "item_0", "type": "error", "message": "x"}},
            {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected: boom)"},
            {
                "type": "item.completed",
                "item": {"id": "item_1", "type": "agent_message", "text": "ok"},
            },
            done(),
        ]
    )
    assert rec.types == [
        "error_occurred",
        "error_occurred",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    item_warning, retry = rec.events[0][1], rec.events[1][1]
    assert item_warning["severity"] == retry["severity"] == "warning"
    assert item_warning["error_message"] == "x"
    assert retry["error_code"] == "provider_unavailable"
    assert parser.warnings == ["x", "Reconnecting... 1/5 (stream disconnected: boom)"]


def test_an_error_that_differs_from_turn_failed_is_reported_as_a_warning() -> None:
    parser, rec = parse(
        [
            *started(),
            {"type": "error", "message": "first problem"},
            {"type": "turn.failed", "error": {"message": "unexpected status 401 Unauthorized"}},
        ]
    )
    assert [d["error_message"] for d in rec.of("error_occurred")] == ["first problem"]
    assert parser.failure == "unexpected status 401 Unauthorized"


def test_an_error_line_then_eof_is_the_failure() -> None:
    parser, rec = parse([*started(), {"type": "error", "message": "fatal: config broken"}])
    assert rec.events == []
    assert not parser.finished
    assert parser.last_error == "fatal: config broken"


def test_an_error_line_after_completion_is_a_warning() -> None:
    parser, rec = parse([*started(), done(), {"type": "error", "message": "late"}])
    assert rec.types == ["token_usage_updated", "error_occurred"]
    assert parser.last_error is None


def test_todo_list_and_plan_are_metadata_and_unknown_lines_are_ignored() -> None:
    todo = [{"text": "write tests", "completed": False}]
    parser, rec = parse(
        [
            *started(),
            {"type": "item.started", "item": {"id": "item_0", "type": "todo_list", "items": []}},
            {"type": "item.updated", "item": {"id": "item_0", "type": "todo_list", "items": todo}},
            {"type": "item.completed", "item": {"id": "item_1", "type": "plan", "text": "1. a"}},
            {"type": "item.plan.delta", "item_id": "item_1", "delta": "x"},
            {"type": "item.completed", "item": {"id": "item_2", "type": "brand_new_kind"}},
            {"type": "something.else"},
            done(),
        ]
    )
    assert rec.types == ["token_usage_updated"]
    assert parser.todo_list == todo
    assert parser.plan == "1. a"


def test_several_agent_messages_the_last_is_the_content() -> None:
    parser, rec = parse(
        [
            *started(),
            {
                "type": "item.completed",
                "item": {"id": "a", "type": "agent_message", "text": "On it."},
            },
            {"type": "item.completed", "item": {"id": "b", "type": "agent_message", "text": ""}},
            {
                "type": "item.completed",
                "item": {"id": "c", "type": "agent_message", "text": "Done."},
            },
            done(),
        ]
    )
    assert [d["content"] for d in rec.of("message_received")] == ["On it.", "", "Done."]
    assert [d["delta"] for d in rec.of("message_streamed")] == ["On it.", "Done."]
    assert parser.content == "Done."


# --------------------------------------------------------------------------- prompt and argv


def context(
    input: dict[str, Any] | None = None,
    *,
    adapter_opts: dict[str, Any] | None = None,
    session_context: dict[str, Any] | None = None,
    provider_session_id: str | None = None,
) -> RunContext:
    return run_context(
        "do the thing",
        input=input,
        adapter_opts=adapter_opts or {},
        session_context=session_context,
        provider_session_id=provider_session_id,
    )


TRANSCRIPT = [
    {"role": "user", "content": "earlier question"},
    {"role": "assistant", "content": "earlier answer"},
    {"role": "assistant", "tool_name": "shell", "tool_call_id": "c1", "tool_input": {"x": 1}},
    {"role": "tool", "tool_name": "shell", "tool_call_id": "c1", "tool_output": "out"},
    {"role": "assistant", "content": ""},
    "not a mapping",
]


def test_prompt_is_the_last_user_message_with_the_transcript_replayed() -> None:
    ctx = context(session_context={"transcript": TRANSCRIPT})
    assert build_prompt(ctx, resuming=False) == (
        "user: earlier question\n"
        "assistant: earlier answer\n"
        'assistant_tool_call(c1): shell {"x": 1}\n'
        "tool_result(c1): shell out\n"
        "\n"
        "do the thing"
    )
    # resuming a thread: codex has the history already
    assert build_prompt(ctx, resuming=True) == "do the thing"
    assert build_prompt(context(), resuming=False) == "do the thing"


def test_prompt_keeps_earlier_input_messages() -> None:
    ctx = context(
        {
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ack"},
                {"role": "user", "content": "second"},
                {"role": "assistant", "content": "trailing"},
            ]
        }
    )
    assert build_prompt(ctx, resuming=True) == "user: first\nassistant: ack\n\nsecond"


def test_prompt_needs_a_user_message() -> None:
    ctx = context({"messages": [{"role": "assistant", "content": "hi"}]})
    with pytest.raises(AsmError) as info:
        build_prompt(ctx, resuming=False)
    assert info.value.code == "validation_error"


@pytest.mark.parametrize(
    "value", ["plain", 'quote " and \\ backslash', "line\nbreak\ttab", "emoji 🦀 é", "del\x7f\x01"]
)
def test_toml_string_round_trips(value: str) -> None:
    assert tomllib.loads(f"k={toml_string(value)}")["k"] == value


def _config(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]


def test_argv_of_a_new_thread_and_of_a_resume() -> None:
    provider = CodexProvider(
        binary="/opt/codex",
        model="gpt-5.5",
        codex_home="/srv/codex",
        api_key="sk-secret-key",
        base_url="http://127.0.0.1:9/v1",
        request_max_retries=0,
        stream_max_retries=0,
        extra_config=["features.x=true"],
    )
    ctx = context(
        adapter_opts={"model": "gpt-5.4", "reasoning_effort": "high"},
        session_context={"system_prompt": 'Be "terse".'},
    )
    argv = provider.build_argv(ctx, prompt="--not-a-flag", workspace="/w")
    assert argv[:4] == ["/opt/codex", "exec", "--json", "--skip-git-repo-check"]
    assert argv[-2:] == ["--", "--not-a-flag"]
    assert argv[argv.index("-C") + 1] == "/w"
    assert argv[argv.index("-m") + 1] == "gpt-5.4"
    assert argv[argv.index("-s") + 1] == "workspace-write"
    config = _config(argv)
    parsed = {k: v for c in config for k, v in tomllib.loads(c).items()}
    assert parsed["model_provider"] == "asm"
    assert parsed["model_providers"] == {
        "asm": {
            "name": "asm",
            "base_url": "http://127.0.0.1:9/v1",
            "env_key": KEY_ENV,
            "wire_api": "responses",
            "request_max_retries": 0,
            "stream_max_retries": 0,
        }
    }
    assert parsed["approval_policy"] == "never"
    assert parsed["developer_instructions"] == 'Be "terse".'
    assert parsed["model_reasoning_effort"] == "high"
    assert parsed["features"] == {"x": True}
    assert not any("sk-secret-key" in a for a in argv)  # the key never reaches argv

    resume = provider.build_argv(ctx, prompt="next", workspace="/w", thread="t-123")
    assert resume[:6] == [
        "/opt/codex",
        "exec",
        "resume",
        "t-123",
        "--json",
        "--skip-git-repo-check",
    ]
    assert "-C" not in resume
    assert "-s" not in resume
    assert 'sandbox_mode="workspace-write"' in _config(resume)
    assert resume[-2:] == ["--", "next"]


def test_argv_without_base_url_and_with_the_sandbox_bypassed() -> None:
    provider = CodexProvider(binary="codex", api_key="k", bypass_sandbox=True)
    argv = provider.build_argv(context(), prompt="p", workspace="/w")
    assert "--dangerously-bypass-approvals-and-sandbox" in argv
    assert "-s" not in argv
    assert not any(c.startswith(("model_provider", "approval_policy")) for c in _config(argv))
    resume = provider.build_argv(context(), prompt="p", workspace="/w", thread="t")
    assert "--dangerously-bypass-approvals-and-sandbox" in resume
    assert not any(c.startswith("sandbox_mode") for c in _config(resume))


# --------------------------------------------------------------------------- options, config


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"temperature": 1}, "adapter_opts.temperature"),
        ({"model": ""}, "adapter_opts.model"),
        ({"model": 5}, "adapter_opts.model"),
        ({"workspace": "relative/dir"}, "adapter_opts.workspace"),
        ({"workspace": None}, "adapter_opts.workspace"),
        ({"reasoning_effort": "maximum"}, "adapter_opts.reasoning_effort"),
    ],
)
def test_adapter_opts_are_strict(opts: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        validate_adapter_opts(opts)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field


def test_valid_adapter_opts() -> None:
    opts = validate_adapter_opts({"model": "m", "workspace": "/w", "reasoning_effort": "low"})
    assert (opts.model, opts.workspace, opts.reasoning_effort) == ("m", "/w", "low")
    assert validate_adapter_opts(None).model is None


def test_capabilities_are_honest() -> None:
    provider = CodexProvider(binary="codex", api_key="k")
    assert isinstance(provider, Provider)
    assert provider.name == "codex"
    caps = {(str(c.type), c.name) for c in provider.capabilities()}
    assert ("tool", "shell") in caps
    assert ("tool", "apply_patch") in caps
    assert ("tool", "web_search") in caps
    kinds = {t for t, _ in caps}
    assert {"code_execution", "file_access", "resume", "cancel", "thinking"} <= kinds
    assert CapabilityType.STREAMING.value not in kinds  # no text deltas in codex's JSONL


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "ASM_CODEX_BIN",
        "ASM_CODEX_MODEL",
        "ASM_CODEX_HOME",
        "ASM_CODEX_BASE_URL",
        "ASM_CODEX_SANDBOX",
        "ASM_CODEX_BYPASS_SANDBOX",
        "CODEX_API_KEY",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_validate_config_names_the_missing_binary(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    provider = CodexProvider(binary=str(tmp_path / "no-codex"), api_key="k")
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "ASM_CODEX_BIN" in info.value.message
    assert "npm ci" in info.value.message


def test_validate_config_names_the_missing_key(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "codex"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    provider = CodexProvider(binary=str(binary), codex_home=tmp_path / "home")  # no key
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "CODEX_API_KEY" in info.value.message
    assert "OPENAI_API_KEY" in info.value.message
    # a `codex login` in codex_home is enough
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "auth.json").write_text("{}")
    provider.validate_config()
    # and the environment supplies the key
    clean_env.setenv("OPENAI_API_KEY", "sk-env")
    assert CodexProvider(binary=str(binary)).api_key == "sk-env"
    clean_env.setenv("CODEX_API_KEY", "sk-codex")
    assert CodexProvider(binary=str(binary)).api_key == "sk-codex"


def test_configuration_comes_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ASM_CODEX_BIN", "/x/codex")
    clean_env.setenv("ASM_CODEX_MODEL", "gpt-x")
    clean_env.setenv("ASM_CODEX_HOME", "/var/lib/asm/codex")
    clean_env.setenv("ASM_CODEX_BASE_URL", "http://proxy/v1")
    clean_env.setenv("ASM_CODEX_SANDBOX", "read-only")
    clean_env.setenv("ASM_CODEX_BYPASS_SANDBOX", "1")
    provider = CodexProvider()  # never raises for configuration
    assert provider.binary == "/x/codex"
    assert provider.model == "gpt-x"
    assert provider.codex_home == Path("/var/lib/asm/codex")
    assert provider.base_url == "http://proxy/v1"
    assert provider.sandbox == "read-only"
    assert provider.bypass_sandbox is True
    assert provider.api_key is None


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    provider = CodexProvider()
    assert provider.model == "gpt-5.5"
    assert provider.sandbox == "workspace-write"
    assert provider.codex_home == Path(os.path.expanduser("~")) / ".asm" / "codex"
    assert provider.binary.endswith(("node_modules/.bin/codex", "codex"))
    binary = tmp_path / "codex"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    with pytest.raises(AsmError) as info:
        CodexProvider(binary=str(binary), api_key="k", sandbox="yolo").validate_config()
    assert "ASM_CODEX_SANDBOX" in info.value.message
