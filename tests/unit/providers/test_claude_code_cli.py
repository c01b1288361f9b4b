"""claude_code: the real Claude Code CLI against the fake Anthropic server.

The CLI is the one bundled in `claude-agent-sdk` (or `claude` on PATH, or ASM_CLAUDE_CODE_BIN);
tests that need it skip with a reason when it is absent. Each real run takes ~0.6 s: the CLI
talks only to `tests/fakes/anthropic_server.py` (ANTHROPIC_BASE_URL), with a temp HOME and
`CLAUDE_CODE_MAX_RETRIES=0` so error tests make one request.

A few tests use a tiny fake `claude` executable instead (it records its argv, environment and
cwd and prints a stream-json result): they check the command line and environment the adapter
builds, and run even without the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, ProviderResult, RunContext
from runs.providers.claude_code import ClaudeCodeProvider, bundled_binary
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    error_event_turn,
    hang_turn,
    http_error,
    text_turn,
    tool_use_turn,
)
from tests.fakes.recorder import Recorder, run_context
from tests.tools import tools_required


def _real_binary() -> str | None:
    configured = os.environ.get("ASM_CLAUDE_CODE_BIN")
    if configured:
        return shutil.which(configured) if os.sep not in configured else configured
    return shutil.which("claude") or bundled_binary()


REAL_BINARY = _real_binary()
needs_cli = pytest.mark.skipif(
    REAL_BINARY is None and not tools_required(),  # in CI the tests run, and fail without it
    reason="Claude Code CLI not found: pip install claude-agent-sdk==0.2.189 (bundles it), "
    "or set ASM_CLAUDE_CODE_BIN",
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "cc-home"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def real_provider(fake: FakeAnthropic, home: Path, **kwargs: Any) -> ClaudeCodeProvider:
    assert REAL_BINARY is not None
    return ClaudeCodeProvider(
        binary=REAL_BINARY,
        api_key="sk-ant-fake",
        base_url=fake.url,
        home=home,
        max_retries=0,
        **kwargs,
    )


def run_ok(
    provider: ClaudeCodeProvider, context: RunContext, token: CancelToken | None = None
) -> tuple[ProviderResult, Recorder]:
    rec = Recorder()
    result = provider.execute(context, rec, token or CancelToken())
    return result, rec


def run_failing(
    provider: ClaudeCodeProvider, context: RunContext, token: CancelToken | None = None
) -> tuple[AsmError, Recorder]:
    rec = Recorder()
    with pytest.raises(AsmError) as info:
        provider.execute(context, rec, token or CancelToken())
    return info.value, rec


def body_text(request_body: Any) -> str:
    return json.dumps(request_body, ensure_ascii=False)


def processes_with_home(home: Path) -> list[int]:
    """Live processes whose environment has HOME=<home>: the CLI and anything it started."""
    marker = f"HOME={home}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


# --------------------------------------------------------------------------- real CLI


@needs_cli
def test_text_run_streams_deltas(fake: FakeAnthropic, home: Path, workspace: Path) -> None:
    fake.script(text_turn("Hello from the fake server.", usage={"input_tokens": 30}))
    provider = real_provider(fake, home, model="claude-fake-model")
    context = run_context(
        "say hello",
        adapter_opts={"workspace": str(workspace), "append_system_prompt": "OPTS-PROMPT-MARK"},
        session_context={"system_prompt": "SESSION-PROMPT-MARK"},
    )
    result, rec = run_ok(provider, context)

    deltas = [d["delta"] for d in rec.of("message_streamed")]
    assert len(deltas) > 1
    assert "".join(deltas) == "Hello from the fake server."
    assert rec.of("message_received") == [
        {
            "content": "Hello from the fake server.",
            "role": "assistant",
            "message_id": rec.of("message_streamed")[0]["message_id"],
        }
    ]
    assert result.output["content"] == "Hello from the fake server."
    assert result.stop_reason == "end_turn"
    assert result.output["num_turns"] == 1
    assert result.provider_session_id
    assert result.session_metadata["claude_code"]["cwd"] == str(workspace)
    usage = rec.of("token_usage_updated")
    assert len(usage) == 1
    assert usage[0]["input_tokens"] == 30
    assert usage[0]["output_tokens"] == 12
    assert result.token_usage == usage[0]
    assert not [t for t in rec.types if t.startswith(("run_", "tool_call"))]

    (request,) = fake.message_requests
    assert request.body["model"] == "claude-fake-model"
    assert request.headers["x-api-key"] == "sk-ant-fake"
    text = body_text(request.body)
    assert "say hello" in text
    assert "SESSION-PROMPT-MARK" in text
    assert "OPTS-PROMPT-MARK" in text


@needs_cli
def test_bash_tool_really_runs_in_the_workspace(
    fake: FakeAnthropic, home: Path, workspace: Path
) -> None:
    command = "echo hi-from-bash > proof.txt && cat proof.txt"
    fake.script(
        tool_use_turn([{"name": "Bash", "input": {"command": command}, "id": "toolu_cc_1"}]),
        text_turn("All done."),
    )
    provider = real_provider(fake, home)
    context = run_context(
        "write the proof",
        adapter_opts={"workspace": str(workspace), "allowed_tools": ["Bash"]},
    )
    result, rec = run_ok(provider, context)

    assert (workspace / "proof.txt").read_text() == "hi-from-bash\n"
    (started,) = rec.of("tool_call_started")
    assert started["tool_call_id"] == "toolu_cc_1"
    assert started["tool_name"] == "Bash"
    assert started["tool_input"] == {"command": command}
    (completed,) = rec.of("tool_call_completed")
    assert completed["tool_call_id"] == "toolu_cc_1"
    assert completed["tool_input"] == {"command": command}
    assert "hi-from-bash" in completed["tool_output"]
    assert rec.types.index("tool_call_started") < rec.types.index("tool_call_completed")
    assert result.output["content"] == "All done."
    assert result.output["num_turns"] == 2
    assert result.output["tool_calls"][0]["name"] == "Bash"
    # usage: one increment per API message, adding up to the CLI's total
    usage = rec.of("token_usage_updated")
    assert len(usage) == 2
    assert sum(u["input_tokens"] for u in usage) == result.token_usage["input_tokens"] == 50
    assert sum(u["output_tokens"] for u in usage) == result.token_usage["output_tokens"] == 24
    # the follow-up request carried the tool result
    follow_up = fake.message_requests[1].body
    assert "toolu_cc_1" in body_text(follow_up["messages"])
    assert "hi-from-bash" in body_text(follow_up["messages"])


@needs_cli
def test_default_mode_denies_writes_and_reports_a_failed_tool_call(
    fake: FakeAnthropic, home: Path, workspace: Path
) -> None:
    fake.script(
        tool_use_turn([{"name": "Bash", "input": {"command": "echo x > denied.txt"}}]),
        text_turn("Could not write."),
    )
    provider = real_provider(fake, home)
    result, rec = run_ok(provider, run_context("try", adapter_opts={"workspace": str(workspace)}))
    assert not (workspace / "denied.txt").exists()
    (failed,) = rec.of("tool_call_failed")
    assert failed["tool_name"] == "Bash"
    assert failed["permission_denied"] is True
    assert failed["error"]
    assert result.output["content"] == "Could not write."


@needs_cli
def test_bypass_permissions_works_as_root(fake: FakeAnthropic, home: Path, workspace: Path) -> None:
    fake.script(
        tool_use_turn([{"name": "Bash", "input": {"command": "echo bypass > bypass.txt"}}]),
        text_turn("ok"),
    )
    provider = real_provider(fake, home, permission_mode="bypassPermissions")
    result, rec = run_ok(provider, run_context("go", adapter_opts={"workspace": str(workspace)}))
    assert (workspace / "bypass.txt").read_text() == "bypass\n"
    assert len(rec.of("tool_call_completed")) == 1
    assert result.output["content"] == "ok"


@needs_cli
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "provider_authentication_failed"),
        (429, "provider_rate_limited"),
        (400, "provider_error"),
        (529, "provider_unavailable"),
    ],
)
def test_http_errors_map_to_the_taxonomy(
    fake: FakeAnthropic, home: Path, workspace: Path, status: int, code: str
) -> None:
    # a generic 400 makes the CLI retry with reduced requests (6 in 2.1.332), whatever
    # CLAUDE_CODE_MAX_RETRIES says: script enough error turns
    fake.script(*[http_error(status) for _ in range(8)])
    provider = real_provider(fake, home)
    error, rec = run_failing(provider, run_context(adapter_opts={"workspace": str(workspace)}))
    assert error.code == code
    assert error.details["status"] == status
    assert error.details["provider"] == "claude_code"
    assert error.details["terminal_reason"]
    if status != 400:
        assert len(fake.message_requests) == 1  # CLAUDE_CODE_MAX_RETRIES=0
    assert rec.of("message_received") == []
    assert [e["error_code"] for e in rec.of("error_occurred")] == [code]


@needs_cli
def test_error_event_mid_stream_then_a_failed_non_streaming_retry_is_unavailable(
    fake: FakeAnthropic, home: Path, workspace: Path
) -> None:
    # the CLI retries a stream cut by `event: error` once, with "stream": false
    fake.script(error_event_turn(), error_event_turn())
    provider = real_provider(fake, home)
    error, rec = run_failing(provider, run_context(adapter_opts={"workspace": str(workspace)}))
    assert error.code == "provider_unavailable"
    assert error.details["status"] == 529
    assert error.details["api_error_type"] == "overloaded_error"
    assert [r.body["stream"] for r in fake.message_requests] == [True, False]
    assert rec.of("message_received") == []
    assert [e["error_code"] for e in rec.of("error_occurred")] == ["provider_unavailable"]


@needs_cli
def test_resume_continues_the_cli_session(fake: FakeAnthropic, home: Path, workspace: Path) -> None:
    fake.script(text_turn("FIRST-ANSWER"), text_turn("SECOND-ANSWER"))
    provider = real_provider(fake, home)
    session_id = uuid.uuid4()
    first, _ = run_ok(
        provider,
        run_context(
            "FIRST-QUESTION", session_id=session_id, adapter_opts={"workspace": str(workspace)}
        ),
    )
    assert first.provider_session_id
    second, rec = run_ok(
        provider,
        run_context(
            "SECOND-QUESTION",
            session_id=session_id,
            adapter_opts={"workspace": str(workspace)},
            provider_session_id=first.provider_session_id,
        ),
    )
    assert second.provider_session_id == first.provider_session_id
    assert second.output["content"] == "SECOND-ANSWER"
    assert rec.of("error_occurred") == []
    messages = body_text(fake.message_requests[1].body["messages"])
    assert "FIRST-QUESTION" in messages
    assert "FIRST-ANSWER" in messages
    assert "SECOND-QUESTION" in messages


@needs_cli
def test_resume_of_a_missing_session_starts_a_new_one(
    fake: FakeAnthropic, home: Path, workspace: Path
) -> None:
    fake.script(text_turn("fresh"))
    provider = real_provider(fake, home)
    missing = str(uuid.uuid4())
    result, rec = run_ok(
        provider,
        run_context(
            "again", adapter_opts={"workspace": str(workspace)}, provider_session_id=missing
        ),
    )
    assert result.output["content"] == "fresh"
    assert result.provider_session_id
    assert result.provider_session_id != missing
    (warning,) = rec.of("error_occurred")
    assert missing in warning["error_message"]


@needs_cli
def test_default_workspace_is_kept_per_session(fake: FakeAnthropic, home: Path) -> None:
    fake.script(text_turn("one"))
    provider = real_provider(fake, home)
    session_id = uuid.uuid4()
    result, _ = run_ok(provider, run_context("x", session_id=session_id))
    expected = home / "workspaces" / str(session_id)
    assert expected.is_dir()
    assert result.session_metadata["claude_code"]["cwd"] == str(expected)


@needs_cli
def test_cancel_during_a_silent_stream_kills_everything(
    fake: FakeAnthropic, home: Path, workspace: Path
) -> None:
    turn = hang_turn()
    fake.script(turn)
    provider = real_provider(fake, home)
    context = run_context("hang", adapter_opts={"workspace": str(workspace)})
    token = CancelToken()
    rec = Recorder()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            provider.execute(context, rec, token)
        except AsmError as exc:
            outcome["error"] = exc
        outcome["done_at"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert turn.started.wait(20), "the CLI never reached the fake server"
    assert processes_with_home(home), "the CLI should be running"
    cancelled_at = time.monotonic()
    provider.cancel(context.run_id)  # sets the run's token
    thread.join(10)
    assert not thread.is_alive()
    assert outcome["error"].code == "cancelled"
    assert outcome["done_at"] - cancelled_at < 2.5
    assert token.cancelled
    assert turn.client_disconnected.wait(2)
    deadline = time.monotonic() + 1
    while processes_with_home(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_home(home) == [], "orphan processes left behind"
    provider.cancel(context.run_id)  # idempotent, run no longer active


# --------------------------------------------------------------------------- fake executable

FAKE_CLAUDE = """\
import json, os, sys
record = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
with open(os.environ["FAKE_CLAUDE_OUT"], "a") as out:
    out.write(json.dumps(record) + "\\n")
mode = os.environ.get("FAKE_CLAUDE_MODE", "ok")
if mode == "stderr-401":
    sys.stderr.write("API Error: status 401 Unauthorized\\n")
    sys.exit(1)
if mode == "silent-exit":
    sys.exit(0)
print("banner: not json")
print(json.dumps({"type": "system", "subtype": "init", "session_id": "fake-s", "model": "m"}))
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                  "result": "fake-ok", "stop_reason": "end_turn", "session_id": "fake-s",
                  "usage": {"input_tokens": 3, "output_tokens": 4}}))
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "claude"
    script.write_text(f"#!{sys.executable}\n{FAKE_CLAUDE}")
    script.chmod(0o755)
    return script, tmp_path / "calls.jsonl"


def fake_provider(fake_cli: tuple[Path, Path], home: Path, **kwargs: Any) -> ClaudeCodeProvider:
    script, out = fake_cli
    extra_env = {"FAKE_CLAUDE_OUT": str(out), **kwargs.pop("extra_env", {})}
    return ClaudeCodeProvider(
        binary=str(script), api_key="sk-secret-key", home=home, extra_env=extra_env, **kwargs
    )


def calls(fake_cli: tuple[Path, Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in fake_cli[1].read_text().splitlines()]


def test_command_line_and_environment(
    fake_cli: tuple[Path, Path], home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASM_TEST_SERVICE_SECRET", "must-not-leak")
    provider = fake_provider(
        fake_cli,
        home,
        model="claude-cfg",
        allowed_tools=["Read"],
        disallowed_tools=["WebFetch"],
        max_turns=7,
        base_url="http://127.0.0.1:1",
    )
    context = run_context(
        "--looks-like-a-flag",
        adapter_opts={
            "workspace": str(workspace),
            "allowed_tools": ["Bash(git *)", "Read"],
            "max_turns": 2,
        },
        options={"tool_rules": {"allow": ["Edit"], "deny": ["Write"]}},
        session_context={"system_prompt": "Be terse."},
        provider_session_id="prev-session",
    )
    result, _ = run_ok(provider, context)
    assert result.output["content"] == "fake-ok"
    (call,) = calls(fake_cli)
    argv = call["argv"]
    assert argv[:6] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--permission-mode",
    ]
    assert argv[6] == "default"
    assert argv[-2:] == ["--", "--looks-like-a-flag"]
    assert argv[argv.index("--model") + 1] == "claude-cfg"
    assert argv[argv.index("--max-turns") + 1] == "2"
    assert argv[argv.index("--resume") + 1] == "prev-session"
    allowed = argv.index("--allowedTools")
    assert argv[allowed + 1 : allowed + 4] == ["Read", "Bash(git *)", "Edit"]
    denied = argv.index("--disallowedTools")
    assert argv[denied + 1 : denied + 3] == ["WebFetch", "Write"]
    assert argv[argv.index("--append-system-prompt") + 1] == "Be terse."
    assert "sk-secret-key" not in " ".join(argv)
    env = call["env"]
    assert env["ANTHROPIC_API_KEY"] == "sk-secret-key"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["HOME"] == str(home)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "IS_SANDBOX" not in env
    assert "ASM_TEST_SERVICE_SECRET" not in env
    assert call["cwd"] == str(workspace)


def test_bypass_mode_sets_is_sandbox(fake_cli: tuple[Path, Path], home: Path) -> None:
    provider = fake_provider(fake_cli, home, max_retries=0)
    run_ok(provider, run_context(adapter_opts={"permission_mode": "bypassPermissions"}))
    run_ok(provider, run_context(adapter_opts={"permission_mode": "acceptEdits"}))
    bypass, accept = calls(fake_cli)
    assert bypass["argv"][bypass["argv"].index("--permission-mode") + 1] == "bypassPermissions"
    assert bypass["env"]["IS_SANDBOX"] == "1"
    assert bypass["env"]["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert "IS_SANDBOX" not in accept["env"]


def test_run_max_turns_option_and_transcript_prompt(
    fake_cli: tuple[Path, Path], home: Path
) -> None:
    provider = fake_provider(fake_cli, home)
    context = RunContext.build(
        run_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        input={"messages": [{"role": "user", "content": "now this"}]},
        options={"max_turns": 4},
        session_context={
            "transcript": [
                {"role": "user", "content": "earlier q"},
                {"role": "assistant", "content": "earlier a"},
            ]
        },
    )
    run_ok(provider, context)
    (call,) = calls(fake_cli)
    assert call["argv"][call["argv"].index("--max-turns") + 1] == "4"
    assert call["argv"][-1] == "user: earlier q\nassistant: earlier a\nuser: now this"
    assert "--resume" not in call["argv"]


def test_exit_without_result_maps_stderr(fake_cli: tuple[Path, Path], home: Path) -> None:
    provider = fake_provider(fake_cli, home, extra_env={"FAKE_CLAUDE_MODE": "stderr-401"})
    error, _ = run_failing(provider, run_context())
    assert error.code == "provider_authentication_failed"
    assert error.details["exit_code"] == 1
    provider = fake_provider(fake_cli, home, extra_env={"FAKE_CLAUDE_MODE": "silent-exit"})
    error, _ = run_failing(provider, run_context())
    assert error.code == "provider_error"
    assert "interrupted" in error.message


def test_missing_workspace_is_a_validation_error(fake_cli: tuple[Path, Path], home: Path) -> None:
    provider = fake_provider(fake_cli, home)
    error, _ = run_failing(
        provider, run_context(session_context={"workspace_path": "/nonexistent/asm-ws"})
    )
    assert error.code == "validation_error"
    assert error.details["field"] == "session_context.workspace_path"
    assert not fake_cli[1].exists()  # never started
