"""Continuation (`options.continuation`): the executor hands a run the session's prior history.

The acceptance proof runs the real executor on the in-memory store with real adapters: a
three-run session `echo` (with a tool call), then `claude` through FakeAnthropic (it gets the
first run's exchange as real Messages API turns: `tool_use`, `tool_result`, text), then
`codex` through a stand-in `codex` executable (no thread yet: the transcript is replayed as a
prompt prefix), then `codex` again (it resumes its thread by id: no replay). The same three
runs are repeated with the REAL codex CLI against FakeResponses when it is installed.

Also pinned: the option shapes and their validation, "prior" history only (a retried
attempt does not see its first attempt), `max_messages`, automatic compaction before a run,
`{prompt: ...}` input in every adapter's prompt builder, and the claude turn rules (pairing,
orphans, unanswered calls, ids made API-safe).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import NewEvent, RunRecord, SessionRecord
from runs.continuation import ContinuationOptions, continuation_options
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers import amp, codex
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.claude import NO_TOOL_RESULT, ClaudeProvider, build_request, resolve_options
from runs.providers.codex import CodexProvider
from runs.providers.echo import EchoProvider
from runs.providers.registry import ProviderRegistry
from tests.fakes.anthropic_server import FakeAnthropic, text_turn
from tests.fakes.responses_server import FakeResponses, message_turn

OWNER = "continuity-test"
FAST = ExecutorConfig(flush_interval_s=0.01, tick_s=0.01, cancel_grace_s=1.0)
CODEX_BINARY = Path(__file__).resolve().parents[3] / "node_modules" / ".bin" / "codex"


class Recording:
    """A provider that records the context it was given and answers "ok"."""

    name = "recording"

    def __init__(self) -> None:
        self.contexts: list[RunContext] = []

    def capabilities(self) -> list[Capability]:
        return [Capability(CapabilityType.STREAMING, "streaming")]

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        self.contexts.append(context)
        emit("message_received", {"content": "ok", "role": "assistant"})
        return ProviderResult(output={"content": "ok"}, token_usage={})

    def cancel(self, run_id: uuid.UUID) -> None:
        pass

    def validate_config(self) -> None:
        pass

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        pass


def registry(*providers: Any) -> ProviderRegistry:
    reg = ProviderRegistry()
    for provider in providers:
        reg.register(provider)
    return reg


def execute(
    store: InMemorySessionStore,
    reg: ProviderRegistry,
    session_id: uuid.UUID,
    provider: str,
    input: Mapping[str, Any],
    config: ExecutorConfig = FAST,
    **options: Any,
) -> RunRecord:
    store.run_save(
        RunRecord(session_id=session_id, provider=provider, input=dict(input), options=options)
    )
    claimed = store.run_claim_next(session_id, owner=OWNER, lease_ms=15_000)
    assert claimed is not None
    done = RunExecutor(store, reg, owner=OWNER, config=config).execute(claimed, claimed=True)
    assert done is not None
    return done


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
def session(store: InMemorySessionStore) -> SessionRecord:
    return store.session_save(SessionRecord(agent_id="continuity", status="active"))


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ContinuationOptions(False, None)),
        ({"continuation": False}, ContinuationOptions(False, None)),
        ({"continuation": True}, ContinuationOptions(True, None)),
        ({"continuation": {}}, ContinuationOptions(True, None)),
        ({"continuation": {"max_messages": 4}}, ContinuationOptions(True, 4)),
        ({"continuation": {"enabled": False, "max_messages": 4}}, ContinuationOptions(False, 4)),
        (
            {"continuation": True, "continuation_opts": {"max_messages": 6}},
            ContinuationOptions(True, 6),
        ),
    ],
)
def test_option_shapes(options: dict[str, Any], expected: ContinuationOptions) -> None:
    assert continuation_options(options) == expected


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"continuation": "yes"}, "options.continuation"),
        ({"continuation": 1}, "options.continuation"),
        ({"continuation": {"max_messages": 0}}, "options.continuation.max_messages"),
        ({"continuation": {"max_messages": True}}, "options.continuation.max_messages"),
        ({"continuation": {"enabled": "no"}}, "options.continuation.enabled"),
        ({"continuation": {"bogus": 1}}, "options.continuation"),
        ({"continuation_opts": []}, "options.continuation_opts"),
        ({"continuation_opts": {"max_messages": "3"}}, "options.continuation_opts.max_messages"),
    ],
)
def test_bad_options_are_validation_errors(options: dict[str, Any], field: str) -> None:
    with pytest.raises(AsmError) as info:
        continuation_options(options)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == field


@pytest.mark.django_db
def test_run_submission_accepts_and_checks_the_option() -> None:
    from runs.services import validate_run_options

    ok = {"continuation": {"max_messages": 3}, "continuation_opts": {"max_messages": 2}}
    assert validate_run_options(ok, "echo") == ok
    with pytest.raises(AsmError) as info:
        validate_run_options({"continuation": "always"}, "echo")
    assert info.value.details["field"] == "options.continuation"


# --------------------------------------------------------------------------- the executor hook


def test_off_by_default_and_prior_history_only(
    store: InMemorySessionStore, session: SessionRecord
) -> None:
    rec = Recording()
    reg = registry(EchoProvider(), rec)
    execute(store, reg, session.id, "echo", {"prompt": "first question"})
    execute(store, reg, session.id, "recording", {"prompt": "no continuation"})
    assert "transcript" not in rec.contexts[-1].session_context

    execute(
        store, reg, session.id, "recording", {"prompt": "third"}, continuation={"max_messages": 3}
    )
    transcript = rec.contexts[-1].session_context["transcript"]
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("assistant", "first question"),  # the echo reply
        ("user", "no continuation"),
        ("assistant", "ok"),
    ]  # newest 3; the current run's own message is not history


def test_a_retried_attempt_does_not_see_its_first_attempt(
    store: InMemorySessionStore, session: SessionRecord
) -> None:
    rec = Recording()
    reg = registry(EchoProvider(), rec)
    execute(store, reg, session.id, "echo", {"prompt": "before"})
    run = store.run_save(
        RunRecord(
            session_id=session.id,
            provider="recording",
            input={"prompt": "again"},
            options={"continuation": True},
            attempt=1,  # a first attempt was lost after writing these:
        )
    )
    store.event_append_many(
        session.id,
        [
            NewEvent("message_sent", {"role": "user", "content": "again"}, run.id),
            NewEvent("message_streamed", {"delta": "partial"}, run.id),
        ],
    )
    claimed = store.run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
    assert claimed is not None
    RunExecutor(store, reg, owner=OWNER, config=FAST).execute(claimed, claimed=True)
    transcript = rec.contexts[-1].session_context["transcript"]
    assert [m["content"] for m in transcript] == ["before", "before"]


def test_automatic_compaction_before_the_run(
    store: InMemorySessionStore, session: SessionRecord
) -> None:
    rec = Recording()
    reg = registry(EchoProvider(), rec)
    for i in range(6):
        execute(store, reg, session.id, "echo", {"prompt": f"question {i} " + "x" * 40})
    small = ExecutorConfig(
        flush_interval_s=0.01, tick_s=0.01, cancel_grace_s=1.0, transcript_max_chars=300
    )
    run = execute(
        store, reg, session.id, "recording", {"prompt": "now"}, config=small, continuation=True
    )
    [compacted] = store.event_list(session.id, types="session_compacted")
    assert compacted.data["reason"] == "auto"
    assert compacted.metadata == {"actor": "system", "run_id": str(run.id)}
    first_of_run = store.event_list(session.id, run_id=run.id)[0]
    assert compacted.sequence_number < first_of_run.sequence_number  # before the run's events
    transcript = rec.contexts[-1].session_context["transcript"]
    assert transcript[0]["role"] == "system"
    assert transcript[0]["content"] == compacted.data["summary"]
    assert "question 0" in compacted.data["summary"]
    kept = transcript[1:]
    assert 0 < len(kept) < 12
    assert sum(len(m["content"] or "") for m in kept) <= 150  # half of max_chars
    assert kept[-1]["content"].startswith("question 5")
    # the next run starts from that compaction without compacting again
    execute(store, reg, session.id, "recording", {"prompt": "later"}, continuation=True)
    assert len(store.event_list(session.id, types="session_compacted")) == 1
    assert (
        rec.contexts[-1].session_context["transcript"][0]["content"] == (compacted.data["summary"])
    )


# --------------------------------------------------------------------------- prompt input


TRANSCRIPT = [
    {"role": "user", "content": "earlier question", "tool_name": None},
    {"role": "assistant", "content": "earlier answer"},
]


def context(input: Mapping[str, Any], transcript: list[dict[str, Any]] | None = None) -> RunContext:
    return RunContext.build(
        run_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        input=input,
        session_context={"transcript": transcript or TRANSCRIPT},
    )


def test_prompt_input_is_the_prompt_in_every_adapter() -> None:
    ctx = context({"prompt": "what now?"})
    replayed = "user: earlier question\nassistant: earlier answer\n\nwhat now?"
    assert codex.build_prompt(ctx, resuming=False) == replayed
    assert codex.build_prompt(ctx, resuming=True) == "what now?"
    assert amp.build_prompt(ctx, resuming=False) == replayed
    assert amp.build_prompt(ctx, resuming=True) == "what now?"
    _, messages = build_request(ctx, resolve_options(None, model="m", max_tokens=10, max_turns=1))
    assert messages == [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "what now?"},
    ]
    assert EchoProvider().execute(ctx, lambda *_: None, CancelToken()).output["content"] == (
        "what now?"
    )


# --------------------------------------------------------------------------- claude turns


def claude_messages(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _, messages = build_request(
        context({"prompt": "go on"}, transcript),
        resolve_options(None, model="m", max_tokens=10, max_turns=1),
    )
    return messages


def call(call_id: str | None, name: str, **tool_input: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_call_id": call_id,
        "tool_name": name,
        "tool_input": tool_input,
    }


def result(call_id: str | None, name: str, output: Any, error: bool = False) -> dict[str, Any]:
    return {
        "role": "tool",
        "content": None,
        "tool_call_id": call_id,
        "tool_name": name,
        "tool_output": output,
        "metadata": {"is_error": True} if error else {},
    }


def test_claude_parallel_calls_failures_and_unsafe_ids() -> None:
    messages = claude_messages(
        [
            {"role": "user", "content": "list and read"},
            {"role": "assistant", "content": "Sure."},
            call("call.1/a", "shell", cmd="ls"),
            call("c2", "read file", path="a"),
            result("call.1/a", "shell", {"files": ["a"]}),
            result("c2", "read file", "boom", error=True),
            {"role": "assistant", "content": "Done."},
        ]
    )
    assert messages == [
        {"role": "user", "content": "list and read"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "call_1_a", "name": "shell", "input": {"cmd": "ls"}},
                {"type": "tool_use", "id": "c2", "name": "read_file", "input": {"path": "a"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1_a", "content": '{"files": ["a"]}'},
                {"type": "tool_result", "tool_use_id": "c2", "content": "boom", "is_error": True},
            ],
        },
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "go on"},
    ]


def test_claude_unanswered_calls_orphan_results_and_a_leading_assistant_turn() -> None:
    messages = claude_messages(
        [
            result("gone", "shell", "cut off by max_messages"),  # its call is not here
            {"role": "assistant", "content": "Checking."},
            call(None, "shell"),
            call(None, "shell"),
            result(None, "shell", "first"),  # paired by name with the oldest open call
        ]  # the second call never got a result (a cancelled run)
    )
    assert messages == [
        {"role": "user", "content": "tool_result(gone): shell cut off by max_messages"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_asm_1", "name": "shell", "input": {}},
                {"type": "tool_use", "id": "toolu_asm_2", "name": "shell", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_asm_1", "content": "first"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_asm_2",
                    "content": NO_TOOL_RESULT,
                    "is_error": True,
                },
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    leading = claude_messages([{"role": "assistant", "content": "Hello again."}])
    assert leading[0]["role"] == "user"  # a placeholder: the API wants a user turn first
    assert leading[1:] == [
        {"role": "assistant", "content": "Hello again."},
        {"role": "user", "content": "go on"},
    ]


# --------------------------------------------------------------------------- three runs


STAND_IN = """#!{python}
import json, sys
argv = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(argv) + "\\n")
resuming = len(argv) > 2 and argv[0] == "exec" and argv[1] == "resume"
thread = argv[2] if resuming else "thread-codex-1"
lines = [
    {{"type": "thread.started", "thread_id": thread}},
    {{"type": "turn.started"}},
    {{"type": "item.completed", "item": {{"id": "i1", "type": "agent_message",
      "text": "codex answer " + ("resumed" if resuming else "new")}}}},
    {{"type": "turn.completed", "usage": {{"input_tokens": 10, "output_tokens": 2}}}},
]
for line in lines:
    print(json.dumps(line), flush=True)
"""


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


def stand_in_codex(tmp_path: Path) -> tuple[CodexProvider, Path]:
    log = tmp_path / "codex-argv.jsonl"
    binary = tmp_path / "codex-stand-in"
    binary.write_text(STAND_IN.format(python=sys.executable, log=str(log)))
    binary.chmod(0o755)
    return CodexProvider(binary=str(binary), codex_home=tmp_path / "home", api_key="k"), log


def first_two_runs(
    store: InMemorySessionStore,
    reg: ProviderRegistry,
    session: SessionRecord,
    anthropic: FakeAnthropic,
) -> None:
    echo = execute(
        store,
        reg,
        session.id,
        "echo",
        {"prompt": "hello echo"},
        adapter_opts={"tool_calls": [{"name": "lookup", "input": {"q": "x"}, "output": "found"}]},
    )
    assert echo.status == "completed"
    anthropic.script(text_turn("claude answer"))
    claude = execute(store, reg, session.id, "claude", {"prompt": "now claude"}, continuation=True)
    assert claude.status == "completed", claude.error
    # the first run's exchange as real Messages API turns
    body = anthropic.message_requests[0].body
    assert body["messages"] == [
        {"role": "user", "content": "hello echo"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "echo_tool_1", "name": "lookup", "input": {"q": "x"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "echo_tool_1", "content": "found"}],
        },
        {"role": "assistant", "content": "hello echo"},
        {"role": "user", "content": "now claude"},
    ]
    assert [t["name"] for t in body["tools"]] == ["lookup"]  # declared, not callable
    assert body["tool_choice"] == {"type": "none"}


REPLAY = (
    "user: hello echo\n"
    'assistant_tool_call(echo_tool_1): lookup {"q": "x"}\n'
    "tool_result(echo_tool_1): lookup found\n"
    "assistant: hello echo\n"
    "user: now claude\n"
    "assistant: claude answer\n\n"
    "now codex"
)


def test_three_providers_one_conversation(
    store: InMemorySessionStore,
    session: SessionRecord,
    anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    provider, log = stand_in_codex(tmp_path)
    claude = ClaudeProvider(api_key="k", base_url=anthropic.url, max_retries=0)
    reg = registry(EchoProvider(), claude, provider)
    first_two_runs(store, reg, session, anthropic)

    third = execute(store, reg, session.id, "codex", {"prompt": "now codex"}, continuation=True)
    assert third.status == "completed", third.error
    [argv] = [json.loads(line) for line in log.read_text().splitlines()]
    assert "resume" not in argv  # no codex thread yet: the transcript is replayed
    assert argv[-1] == REPLAY
    ids = store.session_get(session.id).metadata["provider_session_ids"]
    assert ids["codex"] == "thread-codex-1"

    fourth = execute(store, reg, session.id, "codex", {"prompt": "and again"}, continuation=True)
    assert fourth.output["content"] == "codex answer resumed"
    argv = json.loads(log.read_text().splitlines()[-1])
    assert argv[:3] == ["exec", "resume", "thread-codex-1"]  # resumed by thread id
    assert argv[-1] == "and again"  # the thread has the history: no replay


def test_three_providers_with_the_real_codex_cli(
    store: InMemorySessionStore,
    session: SessionRecord,
    anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    if not CODEX_BINARY.is_file():
        pytest.skip(f"codex CLI not installed ({CODEX_BINARY} missing): run `npm ci`")
    with FakeResponses() as responses:
        provider = CodexProvider(
            binary=str(CODEX_BINARY),
            codex_home=tmp_path / "codex-home",
            api_key="sk-fake",
            base_url=responses.url,
            request_max_retries=0,
            stream_max_retries=0,
        )
        claude = ClaudeProvider(api_key="k", base_url=anthropic.url, max_retries=0)
        reg = registry(EchoProvider(), claude, provider)
        first_two_runs(store, reg, session, anthropic)

        responses.script(message_turn("codex says hi"))
        third = execute(store, reg, session.id, "codex", {"prompt": "now codex"}, continuation=True)
        assert third.status == "completed", third.error
        texts = _user_texts(responses.response_requests[0].body)
        assert texts[-1] == REPLAY
        thread = store.session_get(session.id).metadata["provider_session_ids"]["codex"]

        responses.script(message_turn("codex again"))
        fourth = execute(
            store, reg, session.id, "codex", {"prompt": "and again"}, continuation=True
        )
        assert fourth.status == "completed", fourth.error
        assert store.run_get(fourth.id).metadata["provider_session_id"] == thread
        texts = _user_texts(responses.response_requests[1].body)
        assert texts[-1] == "and again"  # resumed: the thread holds the history
        assert REPLAY in texts  # ...which codex itself sends again


def _user_texts(body: Mapping[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in body["input"]
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item["content"]
        if part.get("type") == "input_text"
    ]
