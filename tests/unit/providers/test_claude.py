"""The claude provider: the real `anthropic` SDK against FakeAnthropic (no network).

Covers streaming, thinking, the tool loop (as the follow-up requests show it), tool failures
and refusals, error mapping, cancel against a silent server, max_turns, request composition
and validation. Tool callables live in this module (`tests.unit.providers.test_claude.<fn>`).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, CapabilityType, Provider, ProviderResult, RunContext
from runs.providers.claude import DEFAULT_MODEL, ClaudeProvider
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    error_event_turn,
    hang_turn,
    http_error,
    message_turn,
    text_block,
    text_turn,
    tool_use_block,
    tool_use_turn,
)
from tests.fakes.recorder import Recorder, run_context

SESSION_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")
HERE = "tests.unit.providers.test_claude"

# --------------------------------------------------------------------------- test tools

CALLS: list[tuple[str, dict[str, Any]]] = []


def get_weather(location: str, unit: str = "C") -> dict[str, Any]:
    CALLS.append(("get_weather", {"location": location, "unit": unit}))
    return {"location": location, "temperature": 21, "unit": unit}


def add(a: int, b: int) -> int:
    CALLS.append(("add", {"a": a, "b": b}))
    return a + b


def shout(text: str) -> str:
    CALLS.append(("shout", {"text": text}))
    return text.upper()


def explode(**kwargs: Any) -> str:
    CALLS.append(("explode", kwargs))
    raise RuntimeError("boom: the tool broke")


def delete_all(**kwargs: Any) -> str:
    CALLS.append(("delete_all", kwargs))
    return "deleted everything"


OBJECT = {"type": "object", "properties": {}}
TOOLS: list[Mapping[str, Any]] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
        "callable": f"{HERE}.get_weather",
    },
    {"name": "add", "description": "a + b", "input_schema": OBJECT, "callable": f"{HERE}.add"},
    {"name": "shout", "input_schema": OBJECT, "callable": f"{HERE}.shout"},
    {"name": "explode", "input_schema": OBJECT, "callable": f"{HERE}.explode"},
    {"name": "delete_all", "input_schema": OBJECT, "callable": f"{HERE}.delete_all"},
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def make_provider(fake: FakeAnthropic, **kwargs: Any) -> ClaudeProvider:
    kwargs.setdefault("tools", TOOLS)
    return ClaudeProvider(api_key="test", base_url=fake.url, max_retries=0, **kwargs)


def make_context(
    input: dict[str, Any] | None = None,
    adapter_opts: dict[str, Any] | None = None,
    session_context: dict[str, Any] | None = None,
) -> RunContext:
    return run_context(
        "What is the weather in Paris?",
        input=input,
        adapter_opts=adapter_opts,
        session_id=SESSION_ID,
        session_context=session_context,
    )


def run(
    fake: FakeAnthropic,
    context: RunContext | None = None,
    token: CancelToken | None = None,
    **provider_kwargs: Any,
) -> tuple[ProviderResult, Recorder]:
    rec = Recorder()
    result = make_provider(fake, **provider_kwargs).execute(
        context or make_context(), rec, token or CancelToken()
    )
    return result, rec


def run_failing(
    fake: FakeAnthropic,
    context: RunContext | None = None,
    token: CancelToken | None = None,
    **provider_kwargs: Any,
) -> tuple[AsmError, Recorder]:
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        make_provider(fake, **provider_kwargs).execute(
            context or make_context(), rec, token or CancelToken()
        )
    return info.value, rec


# --------------------------------------------------------------------------- basics


def test_it_is_a_provider() -> None:
    provider = ClaudeProvider(api_key="k")
    assert isinstance(provider, Provider)
    assert provider.name == "claude"


def test_capabilities_list_the_configured_tools() -> None:
    caps = ClaudeProvider(api_key="k", tools=TOOLS).capabilities()
    types = {str(c.type) for c in caps}
    assert {"streaming", "cancel", "thinking", "prompt", "sampling", "tool"} <= types
    assert [c.name for c in caps if c.type == CapabilityType.TOOL] == [t["name"] for t in TOOLS]
    assert not [c for c in ClaudeProvider(api_key="k").capabilities() if c.type == "tool"]


def test_text_reply_streams_deltas_then_message_then_usage(fake: FakeAnthropic) -> None:
    fake.script(
        text_turn(
            "Hello brave new world",
            chunks=["Hello", " brave ", "new world"],
            model="claude-x-1",
            usage={
                "input_tokens": 30,
                "output_tokens": 7,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 5,
            },
        )
    )
    result, rec = run(fake, tools=None)

    assert rec.types == [
        "message_streamed",
        "message_streamed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    deltas = rec.of("message_streamed")
    assert [d["delta"] for d in deltas] == ["Hello", " brave ", "new world"]
    assert all(d["content"] == d["delta"] for d in deltas)
    received = rec.of("message_received")[0]
    assert received["content"] == "".join(d["delta"] for d in deltas) == "Hello brave new world"
    assert received["role"] == "assistant"
    assert received["stop_reason"] == "end_turn"
    assert "thinking" not in received
    usage = {
        "input_tokens": 30,
        "output_tokens": 7,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 5,
    }
    assert rec.of("token_usage_updated") == [usage]

    assert result.output == {
        "content": "Hello brave new world",
        "stop_reason": "end_turn",
        "turns": 1,
        "tool_calls": [],
    }
    assert result.token_usage == usage
    assert result.stop_reason == "end_turn"
    assert result.model == "claude-x-1"
    assert result.provider_session_id is None

    [request] = fake.message_requests
    assert request.body["stream"] is True
    assert request.body["model"] == DEFAULT_MODEL
    assert request.body["max_tokens"] == 4096
    assert request.body["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    assert "system" not in request.body
    assert "tools" not in request.body
    assert request.headers.get("authorization") == "Bearer test" or (
        request.headers.get("x-api-key") == "test"
    )


def test_thinking_is_recorded_not_streamed(fake: FakeAnthropic) -> None:
    fake.script(text_turn("The answer is 4.", thinking="2 plus 2 makes 4."))
    context = make_context(adapter_opts={"thinking": {"type": "enabled", "budget_tokens": 2048}})
    result, rec = run(fake, context)

    assert "".join(d["delta"] for d in rec.of("message_streamed")) == "The answer is 4."
    received = rec.of("message_received")[0]
    assert received["content"] == "The answer is 4."
    assert received["thinking"] == "2 plus 2 makes 4."
    assert result.output["thinking"] == "2 plus 2 makes 4."
    assert fake.message_requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


# --------------------------------------------------------------------------- tools


def test_two_tool_uses_in_one_message_with_split_json(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn(
            [
                tool_use_block(
                    "get_weather",
                    {"location": "Paris"},
                    id="toolu_a",
                    chunks=['{"loca', 'tion": "Pa', 'ris"}'],
                ),
                tool_use_block("add", {"a": 2, "b": 3}, id="toolu_b", chunks=6),
            ],
            text="Let me check.",
            usage={"input_tokens": 40, "output_tokens": 20},
        ),
        text_turn("Paris: 21 C; 2 + 3 = 5.", usage={"input_tokens": 90, "output_tokens": 9}),
    )
    result, rec = run(fake)

    started = rec.of("tool_call_started")
    assert started == [
        {
            "tool_call_id": "toolu_a",
            "tool_name": "get_weather",
            "tool_input": {"location": "Paris"},
            "tool_use_id": "toolu_a",
            "input": {"location": "Paris"},
        },
        {
            "tool_call_id": "toolu_b",
            "tool_name": "add",
            "tool_input": {"a": 2, "b": 3},
            "tool_use_id": "toolu_b",
            "input": {"a": 2, "b": 3},
        },
    ]
    completed = rec.of("tool_call_completed")
    assert [(c["tool_call_id"], c["tool_output"]) for c in completed] == [
        ("toolu_a", {"location": "Paris", "temperature": 21, "unit": "C"}),
        ("toolu_b", 5),
    ]
    assert completed[0]["tool_input"] == {"location": "Paris"}
    assert CALLS == [("get_weather", {"location": "Paris", "unit": "C"}), ("add", {"a": 2, "b": 3})]

    # The follow-up request echoes the assistant turn and answers both tools in one message.
    first, follow_up = fake.message_requests
    assert [t["name"] for t in first.body["tools"]] == [t["name"] for t in TOOLS]
    assert first.body["tools"][0]["input_schema"] == TOOLS[0]["input_schema"]
    assert "callable" not in first.body["tools"][0]
    messages = follow_up.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_use",
            "id": "toolu_a",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {"type": "tool_use", "id": "toolu_b", "name": "add", "input": {"a": 2, "b": 3}},
    ]
    assert messages[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_a",
            "content": '{"location": "Paris", "temperature": 21, "unit": "C"}',
        },
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "5"},
    ]

    # Usage per API call; the result carries the run total.
    assert [u["input_tokens"] for u in rec.of("token_usage_updated")] == [40, 90]
    assert result.token_usage["input_tokens"] == 130
    assert result.token_usage["output_tokens"] == 29
    assert result.output["content"] == "Paris: 21 C; 2 + 3 = 5."
    assert result.output["turns"] == 2
    assert result.output["tool_calls"] == [
        {"id": "toolu_a", "name": "get_weather", "input": {"location": "Paris"}},
        {"id": "toolu_b", "name": "add", "input": {"a": 2, "b": 3}},
    ]
    # message_received for the first turn carries its text ("Let me check.").
    assert [m["content"] for m in rec.of("message_received")] == [
        "Let me check.",
        "Paris: 21 C; 2 + 3 = 5.",
    ]


def test_tool_loop_over_three_turns(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn([{"name": "get_weather", "input": {"location": "Paris"}, "id": "toolu_1"}]),
        tool_use_turn(
            [{"name": "shout", "input": {"text": "rome next"}, "id": "toolu_2"}],
            thinking="Now shout.",
        ),
        text_turn("All done."),
    )
    result, rec = run(fake)

    requests = fake.message_requests
    assert len(requests) == 3
    third = requests[2].body["messages"]
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
    assert third[1]["content"][0]["type"] == "tool_use"
    assert third[2]["content"][0]["tool_use_id"] == third[1]["content"][0]["id"] == "toolu_1"
    # The thinking block goes back with its signature, before the tool_use.
    assert third[3]["content"][0] == {
        "type": "thinking",
        "thinking": "Now shout.",
        "signature": "sig_fake",
    }
    assert third[3]["content"][1]["id"] == "toolu_2"
    assert third[4]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "ROME NEXT"}
    ]
    # The second request already carried the first result.
    assert requests[1].body["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"

    assert [t for t in rec.types if t.startswith("tool_call")] == [
        "tool_call_started",
        "tool_call_completed",
        "tool_call_started",
        "tool_call_completed",
    ]
    assert len(rec.of("token_usage_updated")) == 3
    assert result.output["turns"] == 3
    assert result.output["content"] == "All done."
    assert result.output["thinking"] == "Now shout."
    assert [c["id"] for c in result.output["tool_calls"]] == ["toolu_1", "toolu_2"]


def test_a_tool_that_raises_is_reported_to_the_model(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn([{"name": "explode", "input": {"x": 1}, "id": "toolu_x"}]),
        text_turn("The tool failed, sorry."),
    )
    result, rec = run(fake)

    [failed] = rec.of("tool_call_failed")
    assert failed["tool_call_id"] == "toolu_x"
    assert failed["tool_name"] == "explode"
    assert failed["tool_input"] == {"x": 1}
    assert failed["is_error"] is True
    assert failed["error"]["code"] == "tool_execution_failed"
    assert "boom: the tool broke" in failed["error"]["message"]
    assert not rec.of("tool_call_completed")
    [tool_result] = fake.message_requests[1].body["messages"][2]["content"]
    assert tool_result["tool_use_id"] == "toolu_x"
    assert tool_result["is_error"] is True
    assert "boom: the tool broke" in tool_result["content"]
    assert result.output["content"] == "The tool failed, sorry."


def test_wrong_arguments_and_unknown_tools_become_error_results(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn(
            [
                {"name": "add", "input": {"a": 1}, "id": "toolu_args"},  # b is missing
                {"name": "launch_rockets", "input": {}, "id": "toolu_unknown"},
            ]
        ),
        text_turn("ok"),
    )
    _, rec = run(fake)

    failed = rec.of("tool_call_failed")
    assert [(f["tool_call_id"], f["error"]["code"]) for f in failed] == [
        ("toolu_args", "tool_execution_failed"),
        ("toolu_unknown", "tool_not_found"),
    ]
    results = fake.message_requests[1].body["messages"][2]["content"]
    assert [r["is_error"] for r in results] == [True, True]
    assert "TypeError" in results[0]["content"]
    assert "tool not found" in results[1]["content"]


def test_tool_guard_refusal_does_not_run_the_tool(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn(
            [
                {"name": "delete_all", "input": {"path": "/"}, "id": "toolu_del"},
                {"name": "shout", "input": {"text": "hi"}, "id": "toolu_ok"},
            ]
        ),
        text_turn("I was not allowed to delete."),
    )
    seen: list[tuple[str, dict[str, Any]]] = []

    def guard(name: str, tool_input: Mapping[str, Any]) -> str | None:
        seen.append((name, dict(tool_input)))
        return "policy forbids delete_all" if name == "delete_all" else None

    context = dataclasses.replace(make_context(), tool_guard=guard)
    _, rec = run(fake, context)

    assert seen == [("delete_all", {"path": "/"}), ("shout", {"text": "hi"})]
    assert CALLS == [("shout", {"text": "hi"})]  # delete_all never ran
    [failed] = rec.of("tool_call_failed")
    assert failed["tool_call_id"] == "toolu_del"
    assert failed["error"] == {
        "code": "tool_permission_denied",
        "message": "policy forbids delete_all",
    }
    [completed] = rec.of("tool_call_completed")
    assert completed["tool_call_id"] == "toolu_ok"
    refused, ok = fake.message_requests[1].body["messages"][2]["content"]
    assert refused["tool_use_id"] == "toolu_del"
    assert refused["is_error"] is True
    assert "refused" in refused["content"]
    assert "policy forbids delete_all" in refused["content"]
    assert ok == {"type": "tool_result", "tool_use_id": "toolu_ok", "content": "HI"}


def test_max_turns_reached_fails_without_running_the_pending_tools(fake: FakeAnthropic) -> None:
    fake.script(
        tool_use_turn([{"name": "shout", "input": {"text": "one"}, "id": "toolu_1"}]),
        tool_use_turn([{"name": "shout", "input": {"text": "two"}, "id": "toolu_2"}]),
        text_turn("never reached"),
    )
    err, rec = run_failing(fake, make_context(adapter_opts={"max_turns": 2}))

    assert err.code == "provider_error"
    assert err.details["reason"] == "max_turns_exceeded"
    assert err.details["max_turns"] == 2
    assert "max_turns=2" in err.message
    assert len(fake.message_requests) == 2
    assert CALLS == [("shout", {"text": "one"})]
    [failed] = rec.of("tool_call_failed")
    assert failed["tool_call_id"] == "toolu_2"
    assert "max_turns" in failed["error"]["message"]
    assert len(rec.of("token_usage_updated")) == 2


def test_max_turns_default_comes_from_the_constructor(fake: FakeAnthropic) -> None:
    fake.script(tool_use_turn([{"name": "shout", "input": {"text": "x"}}]))
    err, _ = run_failing(fake, max_turns=1)
    assert err.details["reason"] == "max_turns_exceeded"
    assert CALLS == []


# --------------------------------------------------------------------------- errors


def test_error_event_mid_stream_maps_to_provider_unavailable(fake: FakeAnthropic) -> None:
    fake.script(error_event_turn("overloaded_error", "Overloaded"))
    err, rec = run_failing(fake)

    assert err.code == "provider_unavailable"
    assert err.retryable is True
    assert err.details["error_type"] == "overloaded_error"
    assert "Overloaded" in err.message
    assert rec.of("message_streamed") == [{"delta": "Par", "content": "Par"}]
    assert not rec.of("message_received")


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "provider_rate_limited", True),
        (401, "provider_authentication_failed", False),
        (403, "provider_authentication_failed", False),
        (529, "provider_unavailable", True),
        (500, "provider_unavailable", True),
        (400, "provider_error", False),
    ],
)
def test_http_errors_map_to_the_taxonomy(
    fake: FakeAnthropic, status: int, code: str, retryable: bool
) -> None:
    fake.script(http_error(status, message=f"status {status} from the fake"))
    err, rec = run_failing(fake)

    assert err.code == code
    assert err.retryable is retryable
    assert err.details["provider"] == "claude"
    assert err.details["status"] == status
    assert f"status {status} from the fake" in err.message
    assert rec.events == []
    assert len(fake.message_requests) == 1  # max_retries=0


def test_quota_message_maps_to_quota_exceeded(fake: FakeAnthropic) -> None:
    fake.script(
        http_error(400, message="Your credit balance is too low to access the Anthropic API.")
    )
    err, _ = run_failing(fake)
    assert err.code == "provider_quota_exceeded"


@pytest.mark.parametrize("keep", [0, 4])  # nothing at all / message_start .. one delta
def test_stream_cut_short_is_provider_unavailable(fake: FakeAnthropic, keep: int) -> None:
    turn = message_turn([text_block("partial reply")])
    fake.script(turn[:keep])  # then EOF, no message_stop
    err, rec = run_failing(fake)
    assert err.code == "provider_unavailable"
    assert "message_stop" in err.message
    assert not rec.of("message_received")


def test_connection_refused_is_provider_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = ClaudeProvider(api_key="test", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(AsmError) as info:
        provider.execute(make_context(), Recorder(), CancelToken())
    assert info.value.code == "provider_unavailable"


def test_timeout_is_provider_timeout(fake: FakeAnthropic) -> None:
    fake.script(hang_turn())
    err, _ = run_failing(fake, timeout=0.3)
    assert err.code == "provider_timeout"


# --------------------------------------------------------------------------- cancel


def test_cancel_mid_stream_with_a_silent_server(fake: FakeAnthropic) -> None:
    hang = hang_turn()
    fake.script(hang)
    token = CancelToken()
    cancelled_at: list[float] = []

    def cancel_later() -> None:
        hang.started.wait(5)
        time.sleep(0.2)
        cancelled_at.append(time.monotonic())
        token.cancel()

    threading.Thread(target=cancel_later, daemon=True).start()
    err, _ = run_failing(fake, token=token)
    elapsed = time.monotonic() - cancelled_at[0]

    assert err.code == "cancelled"
    assert elapsed < 1.0
    assert hang.client_disconnected.wait(2), "the stream's connection was not closed"


def test_provider_cancel_stops_the_run(fake: FakeAnthropic) -> None:
    hang = hang_turn()
    fake.script(hang)
    provider = make_provider(fake)
    context = make_context()

    def cancel_later() -> None:
        hang.started.wait(5)
        provider.cancel(context.run_id)

    threading.Thread(target=cancel_later, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(AsmError) as info:
        provider.execute(context, Recorder(), CancelToken())
    assert info.value.code == "cancelled"
    assert time.monotonic() - started < 5
    provider.cancel(context.run_id)  # idempotent, unknown run: no error


def test_cancelled_before_start_sends_nothing(fake: FakeAnthropic) -> None:
    token = CancelToken()
    token.cancel()
    err, rec = run_failing(fake, token=token)
    assert err.code == "cancelled"
    assert rec.events == []
    assert fake.requests == []


# --------------------------------------------------------------------------- request shape


def test_system_prompt_opts_and_transcript_reach_the_request(fake: FakeAnthropic) -> None:
    fake.script(text_turn("ok"))
    context = make_context(
        input={
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Weather?"},
                {"role": "tool", "content": "extra context"},
            ]
        },
        adapter_opts={
            "model": "claude-opus-x",
            "max_tokens": 512,
            "stop_sequences": ["STOP"],
            "thinking": {"type": "adaptive", "display": "summarized"},
        },
        session_context={
            "system_prompt": "You are terse.",
            "transcript": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "assistant", "content": None, "tool_name": "add", "tool_call_id": "t1"},
                {"role": "tool", "content": None, "tool_name": "add", "tool_output": 3},
            ],
        },
    )
    result, _ = run(fake, context, tools=None)

    body = fake.message_requests[0].body
    assert body["model"] == "claude-opus-x"
    assert body["max_tokens"] == 512
    assert "temperature" not in body
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["stop_sequences"] == ["STOP"]
    assert body["system"] == "You are terse.\n\nAnswer in French."
    # the transcript as real turns: tool_use in the assistant turn, its tool_result (paired
    # by tool name: the result has no id) heading the next user turn
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Hello!"},
                {"type": "tool_use", "id": "t1", "name": "add", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "3"},
                {"type": "text", "text": "Weather?\n\nextra context"},
            ],
        },
    ]
    # the history's tool is declared (the API requires it) but cannot be called
    assert [t["name"] for t in body["tools"]] == ["add"]
    assert body["tool_choice"] == {"type": "none"}
    assert result.model == "claude-opus-x"  # the fake echoes the requested model


def test_adapter_opts_system_replaces_the_session_prompt(fake: FakeAnthropic) -> None:
    fake.script(text_turn("ok"))
    context = make_context(
        adapter_opts={"system": "Per-run prompt."},
        session_context={"system_prompt": "Session prompt."},
    )
    run(fake, context)
    assert fake.message_requests[0].body["system"] == "Per-run prompt."


def test_environment_defaults(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    monkeypatch.setenv("ASM_CLAUDE_MODEL", "claude-from-env")
    fake.script(text_turn("ok"))
    provider = ClaudeProvider(max_retries=0)
    provider.validate_config()
    provider.execute(make_context(), Recorder(), CancelToken())
    [request] = fake.message_requests
    assert request.body["model"] == "claude-from-env"
    assert "env-key" in (
        request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
    )


def test_no_user_message_is_a_validation_error(fake: FakeAnthropic) -> None:
    err, _ = run_failing(
        fake, make_context(input={"messages": [{"role": "system", "content": "x"}]})
    )
    assert err.code == "validation_error"
    assert fake.requests == []


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"bogus": 1}, "adapter_opts.bogus"),
        ({"model": ""}, "adapter_opts.model"),
        ({"model": 3}, "adapter_opts.model"),
        ({"max_tokens": 0}, "adapter_opts.max_tokens"),
        ({"max_tokens": True}, "adapter_opts.max_tokens"),
        ({"max_turns": 0}, "adapter_opts.max_turns"),
        ({"max_turns": 1000}, "adapter_opts.max_turns"),
        ({"temperature": 0.5}, "adapter_opts.temperature"),  # API 2026-10-21 has none
        ({"stop_sequences": "STOP"}, "adapter_opts.stop_sequences"),
        ({"system": ["x"]}, "adapter_opts.system"),
        ({"thinking": True}, "adapter_opts.thinking"),
        ({"thinking": {"type": "maybe"}}, "adapter_opts.thinking.type"),
        ({"thinking": {"type": "enabled"}}, "adapter_opts.thinking.budget_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 100}},
            "adapter_opts.thinking.budget_tokens",
        ),
        (
            {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 4000}},
            "adapter_opts.thinking.budget_tokens",
        ),
        ({"thinking": {"type": "adaptive", "extra": 1}}, "adapter_opts.thinking.extra"),
        ({"thinking": {"type": "adaptive", "display": "full"}}, "adapter_opts.thinking.display"),
        ({"thinking": {"type": "disabled", "display": "omitted"}}, "adapter_opts.thinking.display"),
    ],
)
def test_validate_adapter_opts_rejects(opts: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        ClaudeProvider(api_key="k").validate_adapter_opts(opts)
    assert info.value.code == "validation_error"
    assert info.value.details == {"field": field}


def test_validate_adapter_opts_accepts() -> None:
    provider = ClaudeProvider(api_key="k")
    provider.validate_adapter_opts(None)
    provider.validate_adapter_opts(
        {
            "model": "m",
            "max_tokens": 8000,
            "max_turns": 3,
            "stop_sequences": ["a"],
            "system": "",
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
    )
    provider.validate_adapter_opts({"thinking": {"type": "adaptive", "display": "omitted"}})
    provider.validate_adapter_opts({"thinking": {"type": "between_tools"}})
    provider.validate_adapter_opts({"thinking": {"type": "disabled"}})


def test_validate_config_needs_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    provider = ClaudeProvider()  # never raises for missing config
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert "ANTHROPIC_API_KEY" in info.value.message
    ClaudeProvider(api_key="k", tools=TOOLS).validate_config()


@pytest.mark.parametrize(
    ("tools", "words"),
    [
        ([{"name": "x", "callable": f"{HERE}.no_such_function"}], "cannot import"),
        ([{"name": "x", "callable": "no_such_module_xyz.fn"}], "cannot import"),
        ([{"name": "x"}], "callable"),
        ([{"name": "bad name!", "callable": f"{HERE}.add"}], "name"),
        ([{"name": "x", "callable": f"{HERE}.add", "colour": "red"}], "unknown keys"),
        (
            [{"name": "x", "callable": f"{HERE}.add", "input_schema": {"type": "string"}}],
            "input_schema",
        ),
        (
            [{"name": "x", "callable": f"{HERE}.add"}, {"name": "x", "callable": f"{HERE}.add"}],
            "twice",
        ),
        ("not a list", "list"),
    ],
)
def test_validate_config_rejects_bad_tools(tools: Any, words: str) -> None:
    provider = ClaudeProvider(api_key="k", tools=tools)  # never raises for bad config
    with pytest.raises(AsmError) as info:
        provider.validate_config()
    assert info.value.code == "validation_error"
    assert words in info.value.message


# --------------------------------------------------------------------------- the fake itself


def test_fake_records_side_requests_without_consuming_turns(fake: FakeAnthropic) -> None:
    import anthropic

    fake.script(text_turn("one"))
    client = anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=0)
    count = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens > 0
    reply = client.messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "one"
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "no scripted turn left" in str(info.value)
    assert [r.route for r in fake.requests] == [
        "/v1/messages/count_tokens",
        "/v1/messages",
        "/v1/messages",
    ]
    assert fake.turns_served == 2
