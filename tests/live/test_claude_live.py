"""Live smoke test of the claude provider against the real Anthropic API (opt-in).

Skipped unless ANTHROPIC_API_KEY is set. It costs a few cents of tokens. Run it with::

    ANTHROPIC_API_KEY=sk-ant-... .venv/bin/python -m pytest tests/live/test_claude_live.py -m live

Optional: ASM_CLAUDE_MODEL picks the model (default: the adapter's DEFAULT_MODEL),
ANTHROPIC_BASE_URL points at a proxy.
"""

from __future__ import annotations

from runs.providers import RunContext
from runs.providers.claude import ClaudeProvider
from tests.live.support import live_context, live_marks, run_live

pytestmark = live_marks("ANTHROPIC_API_KEY")


def add(a: int, b: int) -> int:
    """The tool the model is asked to use."""
    return a + b


def _context(prompt: str) -> RunContext:
    return live_context(prompt, adapter_opts={"max_tokens": 256, "max_turns": 4})


def test_text_and_tool_round_trip() -> None:
    provider = ClaudeProvider(
        tools=[
            {
                "name": "add",
                "description": "Add two integers and return the sum.",
                "input_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
                "callable": "tests.live.test_claude_live.add",
            }
        ]
    )
    provider.validate_config()  # the key is set: a bad configuration here is a failure

    result, rec = run_live(provider, _context("Reply with exactly the word: pong"))
    assert "pong" in result.output["content"].lower()
    assert rec.of("message_streamed")
    assert result.token_usage["input_tokens"] > 0
    assert result.token_usage["output_tokens"] > 0
    assert result.model

    result, rec = run_live(
        provider, _context("Use the add tool to add 1234 and 4321, then reply with the sum only.")
    )
    completed = rec.of("tool_call_completed")
    assert completed, "the model did not call the tool"
    assert completed[0]["tool_output"] == 5555
    assert "5555" in result.output["content"]
    assert result.output["turns"] >= 2
