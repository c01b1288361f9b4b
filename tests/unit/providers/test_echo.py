"""The echo provider: streaming, scripting surface, failures, cancellation (no DB)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import (
    CancelToken,
    CapabilityType,
    EchoProvider,
    Provider,
    ProviderResult,
    RunContext,
    validate_adapter_opts,
)
from runs.providers.echo import EchoOptions, echo_chunks
from tests.fakes.recorder import Recorder, run_context

SESSION_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def make_context(
    input: dict[str, Any] | None = None, adapter_opts: dict[str, Any] | None = None
) -> RunContext:
    return run_context(
        "hello brave new world", input=input, adapter_opts=adapter_opts, session_id=SESSION_ID
    )


def run(
    input: dict[str, Any] | None = None,
    adapter_opts: dict[str, Any] | None = None,
    token: CancelToken | None = None,
) -> tuple[ProviderResult, Recorder]:
    rec = Recorder()
    result = EchoProvider().execute(make_context(input, adapter_opts), rec, token or CancelToken())
    return result, rec


def run_failing(
    input: dict[str, Any] | None = None,
    adapter_opts: dict[str, Any] | None = None,
    token: CancelToken | None = None,
) -> tuple[AsmError, Recorder]:
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        EchoProvider().execute(make_context(input, adapter_opts), rec, token or CancelToken())
    return info.value, rec


# --------------------------------------------------------------------------- basics


def test_is_a_provider_with_honest_capabilities() -> None:
    echo = EchoProvider()
    assert isinstance(echo, Provider)
    assert echo.name == "echo"
    caps = {(c.type, c.name) for c in echo.capabilities()}
    assert caps == {
        (CapabilityType.STREAMING, "streaming"),
        (CapabilityType.CANCEL, "cancel"),
        (CapabilityType.TOOL, "echo_tool"),
    }
    echo.validate_config()
    echo.cancel(uuid.uuid4())
    echo.cancel(uuid.uuid4())  # idempotent no-op


def test_streams_word_chunks_that_concatenate_to_the_reply() -> None:
    result, rec = run({"prompt": "hello brave new world"})
    assert rec.types == ["message_streamed"] * 4 + ["message_received", "token_usage_updated"]
    deltas = [d["delta"] for d in rec.of("message_streamed")]
    assert deltas == ["hello ", "brave ", "new ", "world"]
    assert all(d["content"] == d["delta"] for d in rec.of("message_streamed"))
    assert "".join(deltas) == "hello brave new world"
    assert rec.of("message_received") == [{"content": "hello brave new world", "role": "assistant"}]
    assert result.output == {
        "content": "hello brave new world",
        "stop_reason": "end_turn",
        "tool_calls": [],
    }
    assert result.stop_reason == "end_turn"
    assert result.model == "echo-1"
    assert result.provider_session_id == f"echo_{SESSION_ID.hex}"


def test_replies_with_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "USER", "content": "second  one"},
        {"role": "assistant", "content": "not me"},
    ]
    result, rec = run({"messages": messages})
    assert result.output["content"] == "second  one"
    # Splitting on single spaces keeps the double space in the stream.
    assert [d["delta"] for d in rec.of("message_streamed")] == ["second ", " ", "one"]


def test_no_user_message_and_no_prompt_gives_an_empty_reply() -> None:
    result, rec = run({"messages": [{"role": "system", "content": "x y"}]})
    assert result.output["content"] == ""
    assert rec.types == ["message_received", "token_usage_updated"]
    assert rec.of("token_usage_updated") == [{"input_tokens": 2, "output_tokens": 0}]


@pytest.mark.parametrize(
    ("reply", "words", "expected"),
    [
        ("a b c d e", 2, ["a b ", "c d ", "e"]),
        ("a b c d", 2, ["a b ", "c d"]),
        ("a b c", 5, ["a b c"]),
        ("one", 1, ["one"]),
        ("", 1, []),
        ("a\nb c", 1, ["a\nb ", "c"]),
        (" lead trail ", 1, [" ", "lead ", "trail ", ""]),
    ],
)
def test_echo_chunks(reply: str, words: int, expected: list[str]) -> None:
    assert echo_chunks(reply, words) == expected
    assert "".join(echo_chunks(reply, words)) == reply


def test_chunk_words() -> None:
    _, rec = run({"prompt": "a b c d e"}, {"chunk_words": 2})
    assert [d["delta"] for d in rec.of("message_streamed")] == ["a b ", "c d ", "e"]


def test_repeat() -> None:
    result, rec = run({"prompt": "hi there"}, {"repeat": 3})
    assert result.output["content"] == "hi there hi there hi there"
    assert "".join(d["delta"] for d in rec.of("message_streamed")) == result.output["content"]
    assert result.token_usage == {"input_tokens": 2, "output_tokens": 6}


def test_default_usage_counts_words() -> None:
    messages = [
        {"role": "system", "content": "you are  helpful"},
        {"role": "user", "content": "say\nsomething nice"},
    ]
    result, rec = run({"messages": messages})
    assert result.token_usage == {"input_tokens": 6, "output_tokens": 3}
    assert rec.of("token_usage_updated") == [{"input_tokens": 6, "output_tokens": 3}]


def test_scripted_usage() -> None:
    result, rec = run(adapter_opts={"usage": {"input_tokens": 100, "output_tokens": 7}})
    assert result.token_usage == {"input_tokens": 100, "output_tokens": 7}
    assert rec.of("token_usage_updated") == [{"input_tokens": 100, "output_tokens": 7}]


def test_partial_scripted_usage_keeps_the_other_default() -> None:
    result, _ = run({"prompt": "a b c"}, {"usage": {"output_tokens": 50}})
    assert result.token_usage == {"input_tokens": 3, "output_tokens": 50}


def test_tool_calls_come_before_the_reply_with_the_canonical_payload() -> None:
    calls = [
        {"name": "bash", "input": {"command": "ls"}, "output": "a.txt\n"},
        {"name": "read", "input": {"path": "a.txt"}, "output": {"text": "hi"}},
    ]
    result, rec = run({"prompt": "done"}, {"tool_calls": calls})
    assert rec.types == [
        "tool_call_started",
        "tool_call_completed",
        "tool_call_started",
        "tool_call_completed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    assert rec.events[0][1] == {
        "tool_call_id": "echo_tool_1",
        "tool_name": "bash",
        "tool_input": {"command": "ls"},
    }
    assert rec.events[1][1] == {
        "tool_call_id": "echo_tool_1",
        "tool_name": "bash",
        "tool_input": {"command": "ls"},
        "tool_output": "a.txt\n",
    }
    assert rec.events[3][1]["tool_call_id"] == "echo_tool_2"
    assert rec.events[3][1]["tool_output"] == {"text": "hi"}
    assert result.output["tool_calls"] == [
        {"id": "echo_tool_1", "name": "bash", "input": {"command": "ls"}, "output": "a.txt\n"},
        {"id": "echo_tool_2", "name": "read", "input": {"path": "a.txt"}, "output": {"text": "hi"}},
    ]


def test_tool_call_defaults() -> None:
    result, rec = run(adapter_opts={"tool_calls": [{"name": "noop"}]})
    assert rec.events[1][1] == {
        "tool_call_id": "echo_tool_1",
        "tool_name": "noop",
        "tool_input": {},
        "tool_output": None,
    }
    assert result.output["tool_calls"] == [
        {"id": "echo_tool_1", "name": "noop", "input": {}, "output": None}
    ]


def test_result_does_not_alias_the_options() -> None:
    opts: dict[str, Any] = {"tool_calls": [{"name": "t", "input": {"k": [1]}, "output": [2]}]}
    ctx = make_context(None, opts)
    result = EchoProvider().execute(ctx, Recorder(), CancelToken())
    result.output["tool_calls"][0]["input"]["k"].append(9)
    assert ctx.adapter_opts["tool_calls"][0]["input"] == {"k": [1]}


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("provider_error", False),
        ("provider_rate_limited", True),
        ("provider_timeout", True),
        ("provider_authentication_failed", False),
        ("internal_error", False),
    ],
)
def test_fail_before_the_first_chunk(code: str, retryable: bool) -> None:
    err, rec = run_failing(
        {"prompt": "a b c"},
        {"fail": {"code": code}, "tool_calls": [{"name": "t", "input": {}, "output": 1}]},
    )
    assert err.code == code
    assert err.retryable is retryable
    assert rec.types == ["tool_call_started", "tool_call_completed"]


def test_fail_mid_stream_with_message() -> None:
    err, rec = run_failing(
        {"prompt": "a b c d"},
        {"fail": {"code": "provider_unavailable", "message": "boom", "after_chunks": 2}},
    )
    assert (err.code, err.message, err.retryable) == ("provider_unavailable", "boom", True)
    assert rec.types == ["message_streamed", "message_streamed"]
    assert [d["delta"] for d in rec.of("message_streamed")] == ["a ", "b "]


def test_fail_without_message_uses_the_default_message() -> None:
    err, _ = run_failing(adapter_opts={"fail": {"code": "provider_quota_exceeded"}})
    assert err.message == "Provider quota exceeded"
    assert err.retryable is False


@pytest.mark.parametrize("after", [3, 4, 100])
def test_fail_at_the_end_of_the_stream(after: int) -> None:
    err, rec = run_failing(
        {"prompt": "a b c"}, {"fail": {"code": "tool_error", "after_chunks": after}}
    )
    assert err.code == "tool_error"
    assert err.retryable is False
    assert rec.types == ["message_streamed"] * 3  # no message_received, no usage


def test_fail_on_an_empty_reply() -> None:
    err, rec = run_failing(
        {"messages": [{"role": "system", "content": "s"}]},
        {"fail": {"code": "timeout", "after_chunks": 1}},
    )
    assert (err.code, err.retryable) == ("timeout", True)
    assert rec.events == []


# --------------------------------------------------------------------------- cancellation


def _cancel_later(token: CancelToken, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, token.cancel)
    timer.start()
    return timer


def test_hang_returns_only_once_cancelled_and_promptly() -> None:
    token = CancelToken()
    rec = Recorder()
    ctx = make_context({"prompt": "x y"}, {"hang": True})
    done = threading.Event()
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            EchoProvider().execute(ctx, rec, token)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=target)
    thread.start()
    assert not done.wait(0.2)  # still hanging after the reply
    assert rec.types == [
        "message_streamed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    started = time.monotonic()
    token.cancel()
    assert done.wait(0.5)
    assert time.monotonic() - started < 0.5
    thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], AsmError)
    assert outcome[0].code == "cancelled"
    assert outcome[0].message == "Run was cancelled"


def test_delay_is_interruptible_by_cancel() -> None:
    token = CancelToken()
    canceller = _cancel_later(token, 0.05)
    started = time.monotonic()
    err, rec = run_failing({"prompt": "a b c"}, {"delay_ms": 10_000}, token)
    elapsed = time.monotonic() - started
    canceller.join()
    assert err.code == "cancelled"
    assert elapsed < 0.5
    assert rec.events == []  # the pause precedes the first chunk


def test_delay_paces_the_chunks() -> None:
    started = time.monotonic()
    _, rec = run({"prompt": "a b c"}, {"delay_ms": 20})
    assert time.monotonic() - started >= 0.06
    assert rec.types.count("message_streamed") == 3


def test_cancel_between_chunks_stops_the_stream() -> None:
    token = CancelToken()
    rec = Recorder()

    def emit(type_: str, data: Mapping[str, Any]) -> None:
        rec(type_, data)
        if len(rec.of("message_streamed")) == 2:
            token.cancel()

    with pytest.raises(AsmError) as info:
        EchoProvider().execute(make_context({"prompt": "a b c d"}), emit, token)
    assert info.value.code == "cancelled"
    assert rec.types == ["message_streamed", "message_streamed"]


def test_already_cancelled_token_emits_nothing() -> None:
    token = CancelToken()
    token.cancel()
    err, rec = run_failing(token=token)
    assert err.code == "cancelled"
    assert rec.events == []


# --------------------------------------------------------------------------- options


def test_defaults() -> None:
    assert validate_adapter_opts(None) == EchoOptions()
    assert validate_adapter_opts({}) == EchoOptions()


def test_full_options_parse() -> None:
    opts = validate_adapter_opts(
        {
            "delay_ms": 1.5,
            "chunk_words": 3,
            "repeat": 2,
            "usage": {"input_tokens": 1, "output_tokens": 2},
            "tool_calls": [{"name": "t", "input": [1], "output": "o"}],
            "fail": {"code": "provider_error", "message": "m", "after_chunks": 4},
            "hang": False,
        }
    )
    assert opts.delay_ms == 1.5
    assert (opts.chunk_words, opts.repeat) == (3, 2)
    assert (opts.input_tokens, opts.output_tokens) == (1, 2)
    assert opts.tool_calls[0].name == "t"
    assert opts.fail is not None
    assert (opts.fail.code, opts.fail.message, opts.fail.after_chunks) == ("provider_error", "m", 4)


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ("not an object", "adapter_opts"),
        ({"speed": 1}, "adapter_opts.speed"),
        ({"delay_ms": "10"}, "adapter_opts.delay_ms"),
        ({"delay_ms": -1}, "adapter_opts.delay_ms"),
        ({"delay_ms": True}, "adapter_opts.delay_ms"),
        ({"delay_ms": float("nan")}, "adapter_opts.delay_ms"),
        ({"chunk_words": 0}, "adapter_opts.chunk_words"),
        ({"chunk_words": 1.0}, "adapter_opts.chunk_words"),
        ({"repeat": 0}, "adapter_opts.repeat"),
        ({"repeat": 10_001}, "adapter_opts.repeat"),
        ({"repeat": "2"}, "adapter_opts.repeat"),
        ({"usage": [1, 2]}, "adapter_opts.usage"),
        ({"usage": {"total_tokens": 3}}, "adapter_opts.usage.total_tokens"),
        ({"usage": {"input_tokens": -1}}, "adapter_opts.usage.input_tokens"),
        ({"usage": {"output_tokens": "7"}}, "adapter_opts.usage.output_tokens"),
        ({"tool_calls": {"name": "t"}}, "adapter_opts.tool_calls"),
        ({"tool_calls": ["t"]}, "adapter_opts.tool_calls[0]"),
        ({"tool_calls": [{"input": {}}]}, "adapter_opts.tool_calls[0].name"),
        ({"tool_calls": [{"name": "t", "id": "x"}]}, "adapter_opts.tool_calls[0].id"),
        ({"fail": "provider_error"}, "adapter_opts.fail"),
        ({"fail": {}}, "adapter_opts.fail.code"),
        ({"fail": {"code": "not_a_code"}}, "adapter_opts.fail.code"),
        ({"fail": {"code": "provider_error", "message": 1}}, "adapter_opts.fail.message"),
        (
            {"fail": {"code": "provider_error", "after_chunks": -1}},
            "adapter_opts.fail.after_chunks",
        ),
        ({"fail": {"code": "provider_error", "retry": True}}, "adapter_opts.fail.retry"),
        ({"hang": "yes"}, "adapter_opts.hang"),
        ({"hang": 1}, "adapter_opts.hang"),
    ],
)
def test_bad_adapter_opts_are_rejected_before_any_emit(opts: Any, field: str) -> None:
    with pytest.raises(AsmError) as info:
        validate_adapter_opts(opts)
    assert info.value.code == "validation_error"
    assert info.value.details == {"field": field}

    ctx = RunContext(
        run_id=uuid.uuid4(),
        session_id=SESSION_ID,
        attempt=1,
        input={"prompt": "a b"},
        messages=({"role": "user", "content": "a b"},),
        adapter_opts=opts,
    )
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        EchoProvider().execute(ctx, rec, CancelToken())
    assert info.value.code == "validation_error"
    assert info.value.details == {"field": field}
    assert rec.events == []
