"""Live smoke test of the amp provider against the real Amp CLI and Amp's server (opt-in).

Skipped unless AMP_API_KEY is set (an Amp access token: ampcode.com/settings). It spends a
little of the account's Amp credit. It needs the real CLI: ``amp`` on PATH, ``~/.amp/bin/amp``
or ASM_AMP_BIN (e.g. ``npm pack @ampcode/cli-linux-x64@0.0.1790142911-g7618fb`` and point
ASM_AMP_BIN at ``package/amp``). Run it with::

    AMP_API_KEY=sgamp_... ASM_AMP_BIN=/path/to/amp \\
        .venv/bin/python -m pytest tests/live/test_amp_live.py -m live -p no:cacheprovider

Optional: AMP_URL (another Amp server), ASM_AMP_MODE (e.g. ``low`` for a cheap model).
"""

from __future__ import annotations

from pathlib import Path

from runs.providers import RunContext
from runs.providers.amp import AmpProvider, is_thread_id
from tests.live.support import live_context, live_marks, run_live, usable

pytestmark = live_marks("AMP_API_KEY")


def _context(prompt: str, workspace: Path, thread_id: str | None = None) -> RunContext:
    return live_context(
        prompt,
        adapter_opts={"workspace": str(workspace), "labels": ["asm-live-test"]},
        provider_session_id=thread_id,
    )


def test_reply_and_continue_the_thread(tmp_path: Path) -> None:
    provider = usable(AmpProvider())
    first, _ = run_live(provider, _context("Reply with exactly the word: pong", tmp_path))
    assert "pong" in first.output["content"].lower()
    assert is_thread_id(first.provider_session_id)

    second, _ = run_live(
        provider,
        _context("Repeat your previous reply, in upper case.", tmp_path, first.provider_session_id),
    )
    assert second.provider_session_id == first.provider_session_id
    assert "PONG" in second.output["content"]
