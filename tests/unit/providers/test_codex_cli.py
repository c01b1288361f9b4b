"""The codex provider running the REAL codex binary (npm @openai/codex, `npm ci`) against
FakeResponses, the scripted Responses API fake (tests/fakes/responses_server.py).

Tools really run: the shell command and the patch change the temporary workspace, under
codex's workspace-write sandbox. The tests using the `provider` fixture are skipped when
node_modules/.bin/codex is missing; the last section runs a scripted stand-in executable
(printing codex's JSONL) for the endings the real binary cannot be made to produce.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, ProviderResult, RunContext
from runs.providers.codex import USAGE_METADATA_KEY, CodexProvider
from tests.fakes.recorder import Recorder, run_context
from tests.fakes.responses_server import (
    FakeResponses,
    Turn,
    apply_patch_item,
    exec_command_turn,
    failed_turn,
    hang_turn,
    http_error,
    message_turn,
    response_turn,
    web_search_item,
)
from tests.tools import tool_missing

BINARY = Path(__file__).resolve().parents[3] / "node_modules" / ".bin" / "codex"

PROXY_ENV = {
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
}


@pytest.fixture
def fake() -> Iterator[FakeResponses]:
    with FakeResponses() as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def provider(fake: FakeResponses, tmp_path: Path) -> CodexProvider:
    if not BINARY.is_file():
        tool_missing(
            f"codex CLI not installed ({BINARY} missing): run `npm ci` in the project root"
        )
    return CodexProvider(
        binary=str(BINARY),
        codex_home=tmp_path / "codex-home",
        api_key="sk-fake-key",
        base_url=fake.url,
        request_max_retries=0,
        stream_max_retries=0,
    )


def make_context(
    prompt: str = "say hello", *, workspace: Path | None = None, **kwargs: Any
) -> RunContext:
    adapter_opts = {"workspace": str(workspace)} if workspace is not None else {}
    return run_context(prompt, adapter_opts=adapter_opts, **kwargs)


def run(
    provider: CodexProvider, fake: FakeResponses, *turns: Turn, context: RunContext | None = None
) -> tuple[ProviderResult, Recorder]:
    fake.script(*turns)
    rec = Recorder()
    result = provider.execute(context or make_context(), rec, CancelToken())
    return result, rec


def run_failing(
    provider: CodexProvider, fake: FakeResponses, *turns: Turn
) -> tuple[AsmError, Recorder]:
    fake.script(*turns)
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        provider.execute(make_context(), rec, CancelToken())
    return info.value, rec


def user_texts(body: Mapping[str, Any]) -> list[str]:
    """The texts of the user messages in a Responses request's input."""
    return [
        part["text"]
        for item in body["input"]
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item["content"]
        if part.get("type") == "input_text"
    ]


# --------------------------------------------------------------------------- runs


def test_plain_message(provider: CodexProvider, fake: FakeResponses) -> None:
    context = make_context(
        "what now?",
        session_context={
            "system_prompt": "You are a test fixture.",
            "transcript": [
                {"role": "user", "content": "earlier question"},
                {"role": "assistant", "content": "earlier answer"},
            ],
        },
    )
    turn = message_turn(
        "Hello from fake",
        reasoning="**Thinking** about hello",
        usage={"input_tokens": 120, "cached_tokens": 20, "output_tokens": 9, "reasoning_tokens": 3},
    )
    result, rec = run(provider, fake, turn, context=context)

    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]
    assert rec.of("message_streamed")[0]["delta"] == "Hello from fake"
    assert rec.of("message_received")[0]["content"] == "Hello from fake"
    usage = {
        "input_tokens": 120,
        "output_tokens": 9,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "reasoning_output_tokens": 3,
    }
    assert rec.of("token_usage_updated") == [usage]
    assert result.token_usage == usage
    assert result.output["content"] == "Hello from fake"
    assert result.output["reasoning"] == "**Thinking** about hello"
    assert result.output["tool_calls"] == []
    assert result.stop_reason == "end_turn"
    assert result.model == "gpt-5.5"
    thread = result.provider_session_id
    assert thread is not None
    assert uuid.UUID(thread)
    assert result.session_metadata[USAGE_METADATA_KEY][thread]["input_tokens"] == 120

    [request] = fake.response_requests
    assert request.headers["authorization"] == "Bearer sk-fake-key"  # from the env, not argv
    assert request.body["model"] == "gpt-5.5"
    assert request.body["stream"] is True
    # the transcript is replayed as plain text before the prompt
    assert user_texts(request.body)[-1] == (
        "user: earlier question\nassistant: earlier answer\n\nwhat now?"
    )
    developer = str([i for i in request.body["input"] if i.get("role") == "developer"])
    assert "You are a test fixture." in developer  # the session's system prompt


def test_shell_command_really_runs_in_the_workspace(
    provider: CodexProvider, fake: FakeResponses, workspace: Path
) -> None:
    result, rec = run(
        provider,
        fake,
        exec_command_turn("echo hi > proof.txt && cat proof.txt", call_id="call_shell"),
        message_turn("Wrote proof.txt"),
        context=make_context("write proof", workspace=workspace),
    )
    assert (workspace / "proof.txt").read_text() == "hi\n"
    assert rec.types == [
        "tool_call_started",
        "tool_call_completed",
        "message_streamed",
        "message_received",
        "token_usage_updated",
    ]
    started, completed = rec.of("tool_call_started")[0], rec.of("tool_call_completed")[0]
    assert started["tool_name"] == completed["tool_name"] == "shell"
    assert "echo hi > proof.txt" in started["tool_input"]["command"]
    assert completed["tool_output"] == {"output": "hi\n", "exit_code": 0}
    assert result.output["content"] == "Wrote proof.txt"
    assert [c["name"] for c in result.output["tool_calls"]] == ["shell"]
    # two model calls in the turn: their usage adds up
    assert result.token_usage["input_tokens"] == 200
    assert result.token_usage["output_tokens"] == 20
    # the second request carries the tool's output back
    last = fake.response_requests[1].body["input"][-1]
    assert last["type"] == "function_call_output"
    assert last["call_id"] == "call_shell"
    assert "hi" in last["output"]


def test_failing_command_is_tool_call_failed(
    provider: CodexProvider, fake: FakeResponses, workspace: Path
) -> None:
    _, rec = run(
        provider,
        fake,
        exec_command_turn("echo nope; exit 3"),
        message_turn("It failed"),
        context=make_context(workspace=workspace),
    )
    [failed] = rec.of("tool_call_failed")
    assert failed["tool_name"] == "shell"
    assert failed["error"] == "command exited with code 3"
    assert failed["tool_output"] == {"output": "nope\n", "exit_code": 3}


def test_sandbox_keeps_writes_in_the_workspace(
    provider: CodexProvider, fake: FakeResponses, workspace: Path
) -> None:
    """workspace-write really sandboxes commands. codex 0.171.0 quirk pinned here: a command
    that FAILS because of a sandbox denial produces no command_execution item at all (the
    model gets the output; the JSONL shows nothing), so there is no tool event to report."""
    # Outside the workspace and outside the temp directories, which workspace-write leaves
    # writable (a checkout under /tmp, as CI's clone may be, is writable too): the home.
    probe_dir = Path.home() / ".cache" / "asm-tests"
    if any(probe_dir.resolve().is_relative_to(t) for t in ("/tmp", tempfile.gettempdir())):  # noqa: S108
        pytest.skip(f"no writable directory outside the temp directories ({probe_dir})")
    probe_dir.mkdir(parents=True, exist_ok=True)
    probe = probe_dir / f"sandbox-probe-{uuid.uuid4().hex}"
    try:
        _, rec = run(
            provider,
            fake,
            exec_command_turn(f"touch {probe}"),
            message_turn("Could not write"),
            context=make_context(workspace=workspace),
        )
        assert not probe.exists(), "workspace-write should keep writes inside the workspace"
    finally:
        probe.unlink(missing_ok=True)
    assert rec.types == ["message_streamed", "message_received", "token_usage_updated"]
    tool_result = fake.response_requests[1].body["input"][-1]
    assert tool_result["type"] == "function_call_output"
    assert "Read-only file system" in tool_result["output"]


def test_apply_patch_and_web_search(
    provider: CodexProvider, fake: FakeResponses, workspace: Path
) -> None:
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello world\n*** End Patch\n"
    result, rec = run(
        provider,
        fake,
        response_turn([web_search_item("weather paris"), apply_patch_item(patch)]),
        message_turn("Wrote file"),
        context=make_context(workspace=workspace),
    )
    assert (workspace / "hello.txt").read_text() == "hello world\n"
    names = [d["tool_name"] for d in rec.of("tool_call_completed")]
    assert names == ["web_search", "apply_patch"]
    search, patched = rec.of("tool_call_completed")
    assert search["tool_input"]["query"] == "weather paris"
    assert patched["tool_output"] == {
        "changes": [{"path": str(workspace / "hello.txt"), "kind": "add"}]
    }
    assert result.output["content"] == "Wrote file"


def test_without_a_workspace_a_temporary_one_is_used_and_removed(
    provider: CodexProvider, fake: FakeResponses
) -> None:
    _, rec = run(provider, fake, exec_command_turn("pwd"), message_turn("ok"))
    cwd = rec.of("tool_call_completed")[0]["tool_output"]["output"].strip()
    assert Path(cwd).name.startswith("asm-codex-")
    assert not Path(cwd).exists()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("turn", "code"),
    [
        (failed_turn("boom"), "provider_unavailable"),
        (http_error(401, "Incorrect API key provided"), "provider_authentication_failed"),
        (http_error(429, "Rate limit reached"), "provider_rate_limited"),
        (http_error(500, "oops"), "provider_unavailable"),
        (http_error(400, "bad request body"), "provider_error"),
    ],
    ids=["response.failed", "401", "429", "500", "400"],
)
def test_failures_map_to_taxonomy_codes(
    provider: CodexProvider, fake: FakeResponses, turn: Turn, code: str
) -> None:
    error, rec = run_failing(provider, fake, turn)
    assert error.code == code
    assert error.details["provider"] == "codex"
    assert "thread_id" in error.details
    assert rec.of("token_usage_updated") == []
    assert rec.of("error_occurred") == []  # the repeated error line is not a second report
    assert len(fake.response_requests) == 1  # retries off


# --------------------------------------------------------------------------- resume


def test_resume_continues_the_thread_and_reports_the_per_run_usage(
    provider: CodexProvider, fake: FakeResponses, workspace: Path
) -> None:
    first, _ = run(
        provider,
        fake,
        message_turn("first answer", usage={"input_tokens": 100, "output_tokens": 5}),
        context=make_context("first question", workspace=workspace),
    )
    thread = first.provider_session_id
    assert thread is not None

    second, rec = run(
        provider,
        fake,
        message_turn("second answer", usage={"input_tokens": 130, "output_tokens": 7}),
        context=make_context(
            "second question",
            workspace=workspace,
            session_context={"transcript": [{"role": "user", "content": "NOT REPLAYED"}]},
            session_metadata=dict(first.session_metadata),
            provider_session_id=thread,
        ),
    )
    assert second.provider_session_id == thread  # same thread
    assert second.output["content"] == "second answer"
    # codex reports 230/12 for the thread; this run used 130/7
    assert rec.of("token_usage_updated")[0]["input_tokens"] == 130
    assert rec.of("token_usage_updated")[0]["output_tokens"] == 7
    assert second.token_usage["input_tokens"] == 130
    assert second.session_metadata[USAGE_METADATA_KEY][thread]["input_tokens"] == 230

    body = fake.response_requests[1].body
    texts = user_texts(body)
    assert "first question" in texts
    assert texts[-1] == "second question"  # no transcript replay on resume
    assistant = [i for i in body["input"] if i.get("role") == "assistant"]
    assert assistant[0]["content"][0]["text"] == "first answer"


def test_resume_of_an_unknown_thread_starts_a_new_one(
    provider: CodexProvider, fake: FakeResponses
) -> None:
    context = make_context(
        "again",
        session_context={"transcript": [{"role": "user", "content": "before"}]},
        provider_session_id=str(uuid.UUID(int=7)),
    )
    result, rec = run(provider, fake, message_turn("fresh"), context=context)
    [warning] = rec.of("error_occurred")
    assert "not found" in warning["error_message"]
    assert result.provider_session_id not in (None, context.provider_session_id)
    assert user_texts(fake.response_requests[0].body)[-1] == "user: before\n\nagain"


# --------------------------------------------------------------------------- cancel


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (the prompt is in codex's argv)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_cancel_during_a_silent_stream_kills_every_process(
    provider: CodexProvider, fake: FakeResponses
) -> None:
    marker = f"cancel-marker-{uuid.uuid4().hex}"
    hang = hang_turn()
    fake.script(hang)
    token = CancelToken()
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            provider.execute(make_context(marker), Recorder(), token)
        except AsmError as exc:
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    worker = threading.Thread(target=execute)
    worker.start()
    assert hang.started.wait(20), "codex never reached the fake"
    running = _processes_with(marker)
    assert running, "codex processes should be visible while the stream hangs"
    # the process the adapter spawned (its child is the native binary): its env is ours
    [launcher] = [pid for pid in running if _parent(pid) == os.getpid()]
    cmdline = Path(f"/proc/{launcher}/cmdline").read_bytes()
    assert b"sk-fake-key" not in cmdline  # the key is never on the command line
    environ = Path(f"/proc/{launcher}/environ").read_bytes().split(b"\0")
    names = {e.split(b"=", 1)[0].decode() for e in environ if e}
    assert {"PATH", "HOME", "CODEX_HOME", "CODEX_API_KEY", "LANG"} <= names
    assert names <= {"PATH", "HOME", "CODEX_HOME", "CODEX_API_KEY", "LANG"} | PROXY_ENV
    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(5)
    assert not worker.is_alive()
    assert outcome["error"].code == "cancelled"
    assert outcome["at"] - cancelled_at < 2.0
    assert _processes_with(marker) == []  # no orphan
    assert [pid for pid in running if _alive(pid)] == []
    assert hang.client_disconnected.wait(2)


# --------------------------------------------------------------------------- stand-in binary


def stand_in(tmp_path: Path, script: str) -> CodexProvider:
    """A provider whose "codex" is a shell script (prints JSONL like codex, then exits)."""
    binary = tmp_path / "codex-stand-in"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    return CodexProvider(binary=str(binary), codex_home=tmp_path / "home", api_key="k")


def test_an_error_line_then_exit_is_that_error(tmp_path: Path) -> None:
    provider = stand_in(
        tmp_path,
        """echo '{"type":"thread.started","thread_id":"t-9"}'
echo '{"type":"error","message":"unexpected status 403 Forbidden: no access"}'
exit 1
""",
    )
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        provider.execute(make_context(), rec, CancelToken())
    assert info.value.code == "provider_authentication_failed"
    assert info.value.details["thread_id"] == "t-9"
    assert rec.events == []


def test_eof_without_a_terminal_line(tmp_path: Path) -> None:
    provider = stand_in(
        tmp_path,
        """echo '{"type":"thread.started","thread_id":"t-9"}'
echo '{"type":"turn.started"}'
echo 'not json: a banner'
""",
    )
    with pytest.raises(AsmError) as info:
        provider.execute(make_context(), Recorder(), CancelToken())
    assert info.value.code == "provider_error"
    assert "interrupted" in info.value.message
    crashed = stand_in(tmp_path, "echo 'Error: thread/resume: something broke' >&2\nexit 1\n")
    with pytest.raises(AsmError) as info:
        crashed.execute(make_context(), Recorder(), CancelToken())
    assert info.value.code == "provider_error"
    assert "something broke" in info.value.message
    assert info.value.details["exit_code"] == 1


def test_the_child_sees_its_workspace_and_nothing_is_spawned_for_bad_input(
    tmp_path: Path, workspace: Path
) -> None:
    provider = stand_in(
        tmp_path,
        """printf '{"type":"thread.started","thread_id":"t-1"}\\n'
item='{"id":"item_0","type":"agent_message","text":"%s"}'
printf '{"type":"item.completed","item":'"$item"'}\\n' "$(pwd)"
printf '{"type":"turn.completed","usage":{"input_tokens":3,"output_tokens":1}}\\n'
""",
    )
    result = provider.execute(make_context(workspace=workspace), Recorder(), CancelToken())
    assert result.output["content"] == str(workspace)
    assert result.token_usage == {"input_tokens": 3, "output_tokens": 1}

    missing = make_context(workspace=tmp_path / "missing")
    with pytest.raises(AsmError) as info:
        provider.execute(missing, Recorder(), CancelToken())
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == "adapter_opts.workspace"
    gone = make_context(session_context={"workspace_path": str(tmp_path / "gone")})
    with pytest.raises(AsmError) as info:
        provider.execute(gone, Recorder(), CancelToken())
    assert info.value.details["field"] == "session_context.workspace_path"
    no_user = RunContext.build(
        run_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        input={"messages": [{"role": "assistant", "content": "hi"}]},
    )
    with pytest.raises(AsmError) as info:
        provider.execute(no_user, Recorder(), CancelToken())
    assert info.value.details["field"] == "input.messages"
