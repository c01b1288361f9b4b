"""claude_code: the stream-json normalizer on captured CLI output, and the pure option checks.

The fixture `claude-code-2.1.332-stream-json.jsonl` is real output of Claude Code 2.1.332
(`--include-partial-messages`) against a fake Anthropic server: one Bash tool call, then
"All done.". No subprocess here; test_claude_code_cli.py runs the real CLI.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, RunContext
from runs.providers.base import CapabilityType, has_capability
from runs.providers.claude_code import (
    PERMISSION_MODES,
    USAGE_KEYS,
    ClaudeCodeProvider,
    StreamJsonNormalizer,
    validate_adapter_opts,
)
from tests.fakes.recorder import Recorder

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "providers"
    / "claude-code-2.1.332-stream-json.jsonl"
)
SESSION = "0918a13f-1f40-4145-97ce-ba5f5094d159"


def sample_lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def normalize(lines: list[dict[str, Any]]) -> tuple[StreamJsonNormalizer, Recorder]:
    rec = Recorder()
    normalizer = StreamJsonNormalizer(rec)
    finished = [normalizer.feed(line) for line in lines]
    assert finished.count(True) == (1 if any(line["type"] == "result" for line in lines) else 0)
    return normalizer, rec


def summed(rec: Recorder) -> dict[str, int]:
    total = dict.fromkeys(USAGE_KEYS, 0)
    for usage in rec.of("token_usage_updated"):
        for key in USAGE_KEYS:
            total[key] += usage.get(key, 0)
    return total


def result_usage(lines: list[dict[str, Any]]) -> dict[str, int]:
    usage = next(line for line in lines if line["type"] == "result")["usage"]
    return {key: usage[key] for key in USAGE_KEYS}


# --------------------------------------------------------------------------- the sample


def test_sample_event_sequence() -> None:
    normalizer, rec = normalize(sample_lines())
    result = normalizer.finish()
    assert rec.types == [
        "tool_call_started",
        "token_usage_updated",
        "tool_call_completed",
        "message_streamed",
        "token_usage_updated",
        "message_received",
    ]
    assert result.provider_session_id == SESSION
    assert result.model == "claude-opus-5-5"
    assert "Bash" in normalizer.tools
    assert "Read" in normalizer.tools


def test_sample_tool_call_payloads() -> None:
    normalizer, rec = normalize(sample_lines())
    started = rec.of("tool_call_started")[0]
    assert started["tool_call_id"] == started["tool_use_id"] == "toolu_bash_1"
    assert started["tool_name"] == "Bash"
    assert started["tool_input"] == {"command": "echo hi-from-bash", "description": "echo"}
    assert started["input"] == started["tool_input"]
    completed = rec.of("tool_call_completed")[0]
    assert completed["tool_call_id"] == "toolu_bash_1"
    assert completed["tool_name"] == "Bash"
    assert completed["tool_input"] == started["tool_input"]
    assert completed["tool_output"] == completed["content"] == "hi-from-bash"
    assert completed["tool_use_result"]["stdout"] == "hi-from-bash"
    result = normalizer.finish()
    assert result.output["tool_calls"] == [
        {
            "id": "toolu_bash_1",
            "name": "Bash",
            "input": {"command": "echo hi-from-bash", "description": "echo"},
            "output": "hi-from-bash",
            "is_error": False,
        }
    ]


def test_sample_messages() -> None:
    _normalizer, rec = normalize(sample_lines())
    assert rec.of("message_streamed") == [
        {"delta": "All done.", "content": "All done.", "message_id": "msg_t1"}
    ]
    # the tool-only message msg_b1 has no text: one message_received, for msg_t1
    assert rec.of("message_received") == [
        {"content": "All done.", "role": "assistant", "message_id": "msg_t1"}
    ]


def test_sample_usage_increments_add_up_to_result_usage() -> None:
    lines = sample_lines()
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    # one increment per API message, from message_start + the final message_delta
    assert rec.of("token_usage_updated") == [
        {
            "input_tokens": 50,
            "output_tokens": 12,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 5,
        },
        {
            "input_tokens": 80,
            "output_tokens": 6,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 0,
        },
    ]
    assert summed(rec) == result_usage(lines) == result.token_usage
    assert result.token_usage == {
        "input_tokens": 130,
        "output_tokens": 18,
        "cache_read_input_tokens": 50,
        "cache_creation_input_tokens": 5,
    }


def test_sample_result_output() -> None:
    normalizer, _ = normalize(sample_lines())
    result = normalizer.finish()
    assert result.stop_reason == "end_turn"
    output = result.output
    assert output["content"] == "All done."
    assert output["stop_reason"] == "end_turn"
    assert output["num_turns"] == 2
    assert output["total_cost_usd"] == pytest.approx(0.000915)
    assert output["permission_denials"] == []
    assert output["terminal_reason"] == "completed"
    assert "thinking" not in output
    meta = result.session_metadata["claude_code"]
    assert meta["session_id"] == SESSION
    assert meta["claude_code_version"] == "2.1.332"
    assert meta["cwd"] == "/srv/workspace"


def test_without_partial_messages_text_and_usage_come_from_lines_and_result() -> None:
    lines = [line for line in sample_lines() if line["type"] != "stream_event"]
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    assert rec.of("message_streamed") == [
        {"delta": "All done.", "content": "All done.", "message_id": "msg_t1"}
    ]
    assert [d["content"] for d in rec.of("message_received")] == ["All done."]
    # no message_delta: the whole usage is settled from result.usage in one increment
    assert len(rec.of("token_usage_updated")) == 1
    assert summed(rec) == result_usage(lines) == result.token_usage
    assert rec.types[-1] == "token_usage_updated"


def test_usage_remainder_when_the_result_counts_more_than_the_stream() -> None:
    lines = sample_lines()
    result_line = lines[-1]
    assert result_line["type"] == "result"
    result_line["usage"]["input_tokens"] += 40  # e.g. a subagent's calls
    result_line["usage"]["output_tokens"] += 2
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    assert rec.of("token_usage_updated")[-1] == {
        "input_tokens": 40,
        "output_tokens": 2,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    assert summed(rec) == result_usage(lines) == result.token_usage


def test_feed_ignores_unknown_lines_and_keys() -> None:
    lines = sample_lines()
    lines.insert(1, {"type": "system", "subtype": "brand_new", "whatever": [1, 2]})
    lines.insert(2, {"type": "totally_new_kind"})
    lines[0]["unexpected_key"] = {"nested": True}
    normalizer, _rec = normalize(lines)
    assert normalizer.finish().output["content"] == "All done."


def test_finish_without_result_is_provider_error() -> None:
    lines = [line for line in sample_lines() if line["type"] != "result"]
    normalizer, _ = normalize(lines)
    with pytest.raises(AsmError) as info:
        normalizer.finish()
    assert info.value.code == "provider_error"


# --------------------------------------------------------------------------- hand-built lines
# Shapes copied from real 2.1.332 output against the fake server.


def _se(event: dict[str, Any], message_id: str) -> dict[str, Any]:
    return {
        "type": "stream_event",
        "event": event,
        "session_id": "s1",
        "parent_tool_use_id": None,
        "api_message_id": message_id,
    }


def _delta(index: int, delta: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The stream event of one `content_block_delta`."""
    return _se({"type": "content_block_delta", "index": index, "delta": delta}, message_id)


def _assistant(message_id: str, block: dict[str, Any], model: str = "m1") -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        },
        "parent_tool_use_id": None,
        "session_id": "s1",
    }


def _result(**overrides: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 1,
        "result": "done",
        "stop_reason": "end_turn",
        "session_id": "s1",
        "total_cost_usd": 0.0,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "permission_denials": [],
        "terminal_reason": "completed",
    }
    line.update(overrides)
    return line


def _init() -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "init",
        "session_id": "s1",
        "model": "m1",
        "tools": ["Bash"],
    }


def test_one_message_many_blocks_gives_one_message_received_at_message_stop() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "m1",
            "content": [],
            "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3},
        },
    }
    lines = [
        _init(),
        _se(start, "msg_1"),
        _se(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
            "msg_1",
        ),
        _delta(0, {"type": "thinking_delta", "thinking": "hm"}, "msg_1"),
        _assistant("msg_1", {"type": "thinking", "thinking": "hmm.", "signature": "s"}),
        _delta(1, {"type": "text_delta", "text": "Part "}, "msg_1"),
        _delta(1, {"type": "text_delta", "text": "one. "}, "msg_1"),
        _assistant("msg_1", {"type": "text", "text": "Part one. "}),
        _delta(2, {"type": "text_delta", "text": "Part two."}, "msg_1"),
        _assistant("msg_1", {"type": "text", "text": "Part two."}),
        _se(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 9},
            },
            "msg_1",
        ),
        _se({"type": "message_stop"}, "msg_1"),
        _result(
            result="Part one. Part two.",
            usage={"input_tokens": 7, "output_tokens": 9, "cache_read_input_tokens": 3},
        ),
    ]
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    assert [d["delta"] for d in rec.of("message_streamed")] == ["Part ", "one. ", "Part two."]
    assert rec.of("message_received") == [
        {"content": "Part one. Part two.", "role": "assistant", "message_id": "msg_1"}
    ]
    assert rec.types == ["message_streamed"] * 3 + ["token_usage_updated", "message_received"]
    assert result.output["thinking"] == ["hmm."]
    assert "hm" not in result.output["content"]
    assert (
        summed(rec)
        == result.token_usage
        == {
            "input_tokens": 7,
            "output_tokens": 9,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 0,
        }
    )


def test_message_delta_usage_is_cumulative_within_a_message() -> None:
    start = {
        "type": "message_start",
        "message": {"id": "m", "usage": {"input_tokens": 5, "output_tokens": 1}},
    }
    lines = [
        _se(start, "m"),
        _se({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4}}, "m"),
        _se(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 10, "input_tokens": 6},
            },
            "m",
        ),
        _se({"type": "message_stop"}, "m"),
        _result(usage={"input_tokens": 6, "output_tokens": 10}),
    ]
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    usage = rec.of("token_usage_updated")
    assert [(u["input_tokens"], u["output_tokens"]) for u in usage] == [(5, 4), (1, 6)]
    assert summed(rec) == result.token_usage
    assert result.token_usage["input_tokens"] == 6
    assert result.token_usage["output_tokens"] == 10


def test_denied_tool_is_tool_call_failed() -> None:
    denial = (
        "Output redirection to '/w/proof.txt' needs approval. The path is inside the working "
        "directories for this session ('/w')."
    )
    lines = [
        _init(),
        _assistant(
            "msg_1",
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "Bash",
                "input": {"command": "echo x > proof.txt"},
            },
        ),
        {
            "type": "system",
            "subtype": "permission_denied",
            "tool_name": "Bash",
            "tool_use_id": "toolu_1",
            "message": denial,
        },
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "content": denial,
                        "is_error": True,
                        "tool_use_id": "toolu_1",
                    }
                ],
            },
            "parent_tool_use_id": None,
        },
        _assistant("msg_2", {"type": "text", "text": "Could not."}),
        _result(
            result="Could not.",
            permission_denials=[
                {
                    "tool_name": "Bash",
                    "tool_use_id": "toolu_1",
                    "tool_input": {"command": "echo x > proof.txt"},
                }
            ],
        ),
    ]
    normalizer, rec = normalize(lines)
    result = normalizer.finish()
    failed = rec.of("tool_call_failed")
    assert len(failed) == 1
    assert failed[0]["tool_call_id"] == "toolu_1"
    assert failed[0]["tool_name"] == "Bash"
    assert failed[0]["tool_input"] == {"command": "echo x > proof.txt"}
    assert failed[0]["is_error"] is True
    assert failed[0]["error"] == denial
    assert failed[0]["permission_denied"] is True
    assert failed[0]["error_code"] == "tool_permission_denied"
    assert rec.of("tool_call_completed") == []
    assert result.output["permission_denials"][0]["tool_use_id"] == "toolu_1"
    assert result.output["tool_calls"][0]["is_error"] is True
    # the next message flushed msg_2 only at the result (no partial messages here)
    assert [d["content"] for d in rec.of("message_received")] == ["Could not."]


def test_tool_result_list_content_and_non_dict_input() -> None:
    lines = [
        _assistant("msg_1", {"type": "tool_use", "id": "t1", "name": "Read", "input": "oops"}),
        {
            "type": "user",
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    }
                ]
            },
        },
        _result(),
    ]
    normalizer, rec = normalize(lines)
    assert rec.of("tool_call_started")[0]["tool_input"] == {}
    assert rec.of("tool_call_started")[0]["input"] == "oops"
    assert rec.of("tool_call_completed")[0]["tool_output"] == "a\nb"
    normalizer.finish()


def _synthetic(text: str, status: int, api_type: str, cli_error: str) -> dict[str, Any]:
    line = _assistant("d7b1", {"type": "text", "text": text}, model="<synthetic>")
    line.update(
        {
            "error": cli_error,
            "is_api_error_message": True,
            "api_error_status": status,
            "api_error_type": api_type,
        }
    )
    return line


@pytest.mark.parametrize(
    ("status", "api_type", "cli_error", "text", "code"),
    [
        (
            429,
            "rate_limit_error",
            "rate_limit",
            "API Error: Request rejected (429) · rate_limit_error",
            "provider_rate_limited",
        ),
        (
            401,
            "authentication_error",
            "authentication_failed",
            "Failed to authenticate. API Error: 401 authentication_error",
            "provider_authentication_failed",
        ),
        (
            529,
            "overloaded_error",
            "server_error",
            "API Error: 529 overloaded_error.",
            "provider_unavailable",
        ),
        (500, "api_error", "server_error", "API Error: 500 api_error.", "provider_unavailable"),
        (400, "invalid_request_error", "invalid_request", "Prompt is too long", "provider_error"),
        (
            403,
            "permission_error",
            "billing_error",
            "Credit balance is too low",
            "provider_quota_exceeded",
        ),
    ],
)
def test_api_error_result_maps_to_taxonomy(
    status: int, api_type: str, cli_error: str, text: str, code: str
) -> None:
    lines = [
        _init(),
        _synthetic(text, status, api_type, cli_error),
        _result(
            is_error=True,
            subtype="success",  # success is never judged by subtype
            result=text,
            stop_reason="stop_sequence",
            api_error_status=status,
            api_error_type=api_type,
            terminal_reason="api_error",
        ),
    ]
    normalizer, rec = normalize(lines)
    with pytest.raises(AsmError) as info:
        normalizer.finish()
    error = info.value
    assert error.code == code
    assert error.details["status"] == status
    assert error.details["api_error_type"] == api_type
    assert error.details["terminal_reason"] == "api_error"
    assert error.details["provider"] == "claude_code"
    assert error.details["provider_session_id"] == "s1"
    assert text in error.message
    # the synthetic line is a warning event, never assistant text
    assert rec.of("message_received") == []
    assert rec.of("message_streamed") == []
    warning = rec.of("error_occurred")
    assert len(warning) == 1
    assert warning[0]["error_code"] == code


def test_error_without_status_uses_the_text() -> None:
    lines = [
        _result(
            is_error=True,
            subtype="error_max_turns",
            result=None,
            errors=["Reached maximum number of turns (1)"],
            terminal_reason="max_turns",
            usage={"input_tokens": 25, "output_tokens": 12},
        )
    ]
    normalizer, rec = normalize(lines)
    with pytest.raises(AsmError) as info:
        normalizer.finish()
    assert info.value.code == "provider_error"
    assert "Reached maximum number of turns" in info.value.message
    assert info.value.details["subtype"] == "error_max_turns"
    assert info.value.details["terminal_reason"] == "max_turns"
    # tokens spent before the failure are still reported
    assert summed(rec)["input_tokens"] == 25
    assert summed(rec)["output_tokens"] == 12
    assert not normalizer.resume_not_found()


def test_connection_refused_is_unavailable() -> None:
    text = "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
    normalizer, _ = normalize([_result(is_error=True, result=text, terminal_reason="api_error")])
    with pytest.raises(AsmError) as info:
        normalizer.finish()
    assert info.value.code == "provider_unavailable"


def test_connection_failure_is_classified_by_the_synthetic_error_kind() -> None:
    text = "API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)"
    synthetic = _assistant("d1", {"type": "text", "text": text}, model="<synthetic>")
    synthetic.update(
        {"error": "server_error", "is_api_error_message": True, "api_error": "connection_failed"}
    )
    result = _result(is_error=True, result=text, terminal_reason="api_error", api_error_status=None)
    normalizer, rec = normalize([_init(), synthetic, result])
    with pytest.raises(AsmError) as info:
        normalizer.finish()
    assert info.value.code == "provider_unavailable"
    assert info.value.details["cli_error"] == {
        "error": "server_error",
        "api_error": "connection_failed",
    }
    assert [e["error_code"] for e in rec.of("error_occurred")] == ["provider_unavailable"]


def test_resume_not_found_is_detected() -> None:
    line = _result(
        is_error=True,
        subtype="error_during_execution",
        num_turns=0,
        result=None,
        errors=["No conversation found with session ID: 1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"],
    )
    normalizer, _ = normalize([line])
    assert normalizer.resume_not_found()


def test_is_error_true_fails_even_with_subtype_success() -> None:
    normalizer, _ = normalize([_result(is_error=True, result="boom")])
    with pytest.raises(AsmError):
        normalizer.finish()


# --------------------------------------------------------------------------- options, config


def test_adapter_opts_valid() -> None:
    opts = validate_adapter_opts(
        {
            "model": "claude-x",
            "max_turns": 3,
            "permission_mode": "acceptEdits",
            "allowed_tools": ["Bash", "Bash(git *)"],
            "disallowed_tools": ["WebFetch"],
            "workspace": "/srv/workspace",
            "append_system_prompt": "Be brief.",
        }
    )
    assert opts.model == "claude-x"
    assert opts.max_turns == 3
    assert opts.allowed_tools == ("Bash", "Bash(git *)")
    assert validate_adapter_opts(None).model is None
    assert set(PERMISSION_MODES) >= {"default", "acceptEdits", "bypassPermissions", "plan"}


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"nope": 1}, "adapter_opts.nope"),
        ({"model": ""}, "adapter_opts.model"),
        ({"model": 3}, "adapter_opts.model"),
        ({"max_turns": 0}, "adapter_opts.max_turns"),
        ({"max_turns": True}, "adapter_opts.max_turns"),
        ({"max_turns": "2"}, "adapter_opts.max_turns"),
        ({"permission_mode": "yolo"}, "adapter_opts.permission_mode"),
        ({"allowed_tools": "Bash"}, "adapter_opts.allowed_tools"),
        ({"allowed_tools": ["Bash", 1]}, "adapter_opts.allowed_tools[1]"),
        ({"disallowed_tools": ["--evil"]}, "adapter_opts.disallowed_tools[0]"),
        ({"workspace": "relative/dir"}, "adapter_opts.workspace"),
        ({"append_system_prompt": ["x"]}, "adapter_opts.append_system_prompt"),
    ],
)
def test_adapter_opts_invalid(opts: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        ClaudeCodeProvider().validate_adapter_opts(opts)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field


def test_constructor_never_raises_and_validate_config_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ASM_CLAUDE_CODE_MAX_TURNS", "many")
    monkeypatch.setenv("ASM_CLAUDE_CODE_PERMISSION_MODE", "yolo")
    provider = ClaudeCodeProvider(api_key="k", binary=str(tmp_path / "claude"))
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "ASM_CLAUDE_CODE_MAX_TURNS" in info.value.message
    assert "ASM_CLAUDE_CODE_PERMISSION_MODE" in info.value.message


def test_validate_config_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    provider = ClaudeCodeProvider(api_key="k", binary=str(tmp_path / "no-such-claude"))
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "ASM_CLAUDE_CODE_BIN" in info.value.message
    assert "claude-agent-sdk" in info.value.message


def test_validate_config_missing_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    binary = tmp_path / "claude"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    provider = ClaudeCodeProvider(binary=str(binary))
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "ANTHROPIC_API_KEY" in info.value.message
    ClaudeCodeProvider(binary=str(binary), api_key="k").validate_config()


def test_capabilities() -> None:
    caps = ClaudeCodeProvider().capabilities()
    for type_ in (
        "streaming",
        "cancel",
        "resume",
        "thinking",
        "prompt",
        "code_execution",
        "file_access",
    ):
        assert has_capability(caps, type_), type_
    for tool in ("Bash", "Read", "Edit", "Write"):
        assert has_capability(caps, CapabilityType.TOOL, tool)
    no_bash = ClaudeCodeProvider(disallowed_tools=["Bash"]).capabilities()
    assert not has_capability(no_bash, CapabilityType.TOOL, "Bash")
    assert not has_capability(no_bash, CapabilityType.CODE_EXECUTION)


def test_bad_tool_rules_are_refused_before_starting(tmp_path: Path) -> None:
    binary = tmp_path / "claude"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    context = RunContext.build(
        run_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        input={"prompt": "hi"},
        options={"tool_rules": {"allow": "Bash"}},
    )
    provider = ClaudeCodeProvider(binary=str(binary), api_key="k", home=tmp_path / "home")
    with pytest.raises(AsmError) as info:
        provider.execute(context, Recorder(), CancelToken())
    assert info.value.details["field"] == "options.tool_rules.allow"
