"""Live smoke test of the codex provider: the real codex CLI against the real OpenAI API
(opt-in).

Skipped unless CODEX_API_KEY or OPENAI_API_KEY is set (and the CLI is installed: `npm ci`).
It costs a few cents of tokens. Run it with::

    npm ci
    CODEX_API_KEY=sk-... .venv/bin/python -m pytest tests/live/test_codex_live.py -m live

Optional: ASM_CODEX_MODEL picks the model (default: the adapter's DEFAULT_MODEL),
ASM_CODEX_BASE_URL points at another Responses-compatible endpoint, ASM_CODEX_BIN at another
codex binary, ASM_CODEX_BYPASS_SANDBOX=1 where codex's sandbox cannot start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runs.providers import RunContext
from runs.providers.codex import CodexProvider
from tests.live.support import live_context, live_marks, run_live, usable

pytestmark = live_marks("CODEX_API_KEY", "OPENAI_API_KEY")


def _context(
    prompt: str,
    workspace: Path,
    *,
    thread: str | None = None,
    session_metadata: Mapping[str, Any] | None = None,
) -> RunContext:
    return live_context(
        prompt,
        adapter_opts={"workspace": str(workspace)},
        session_metadata=session_metadata,
        provider_session_id=thread,
    )


def test_shell_tool_then_resume(tmp_path: Path) -> None:
    provider = usable(CodexProvider(codex_home=tmp_path / "codex-home"))
    workspace = tmp_path / "workspace"
    workspace.mkdir()

    first, rec = run_live(
        provider,
        _context(
            "Run the shell command `echo live-proof > proof.txt` in the current directory, "
            "then reply with the single word: done",
            workspace,
        ),
    )
    assert (workspace / "proof.txt").read_text().strip() == "live-proof"
    assert any(d["tool_name"] == "shell" for d in rec.of("tool_call_completed"))
    assert first.token_usage["input_tokens"] > 0
    assert first.provider_session_id

    second, _ = run_live(
        provider,
        _context(
            "What file did you just create? Reply with its name only.",
            workspace,
            thread=first.provider_session_id,
            session_metadata=first.session_metadata,
        ),
    )
    assert second.provider_session_id == first.provider_session_id
    assert "proof.txt" in second.output["content"]
    thread = second.provider_session_id
    cumulative = second.session_metadata["codex_thread_usage"][thread]["input_tokens"]
    # the resumed run reports its own usage, not the thread's running total
    assert 0 < second.token_usage["input_tokens"] < cumulative
