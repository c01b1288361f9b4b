"""Live smoke test of the claude_code provider: the real Claude Code CLI against the real
Anthropic API (opt-in).

Skipped unless ANTHROPIC_API_KEY is set (and the CLI is installed:
``.venv/bin/pip install claude-agent-sdk==0.2.189`` bundles it). It costs a few cents of
tokens. Run it with::

    ANTHROPIC_API_KEY=sk-ant-... \
        .venv/bin/python -m pytest tests/live/test_claude_code_live.py -m live

Optional: ASM_CLAUDE_CODE_MODEL picks the model (default: the CLI's), ASM_CLAUDE_CODE_BIN
the CLI, ANTHROPIC_BASE_URL a proxy. The CLI's HOME is a temp directory.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runs.providers import RunContext
from runs.providers.claude_code import ClaudeCodeProvider
from tests.live.support import live_context, live_marks, run_live, usable

pytestmark = live_marks("ANTHROPIC_API_KEY")


@pytest.fixture
def provider(tmp_path: Path) -> ClaudeCodeProvider:
    return usable(ClaudeCodeProvider(home=tmp_path / "home"))


def _context(
    prompt: str, workspace: Path, session_id: uuid.UUID, provider_session_id: str | None = None
) -> RunContext:
    return live_context(
        prompt,
        adapter_opts={"workspace": str(workspace), "max_turns": 4, "allowed_tools": ["Bash"]},
        session_id=session_id,
        provider_session_id=provider_session_id,
    )


def test_tool_run_and_resume(provider: ClaudeCodeProvider, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    session_id = uuid.uuid4()
    first, rec = run_live(
        provider,
        _context(
            "Use the Bash tool to run `echo live-proof > proof.txt`, "
            "then reply with the word done.",
            workspace,
            session_id,
        ),
    )
    assert (workspace / "proof.txt").read_text().strip() == "live-proof"
    assert rec.of("tool_call_started")
    assert rec.of("message_streamed")
    assert first.provider_session_id
    assert first.token_usage["output_tokens"] > 0
    total = {k: sum(u.get(k, 0) for u in rec.of("token_usage_updated")) for k in first.token_usage}
    assert total == first.token_usage

    second, _ = run_live(
        provider,
        _context(
            "What file did you create? Reply with its name only.",
            workspace,
            session_id,
            first.provider_session_id,
        ),
    )
    assert second.provider_session_id == first.provider_session_id
    assert "proof.txt" in second.output["content"]
