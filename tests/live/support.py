"""What the live smoke tests share: the opt-in marks, the usable-or-skip check, the run
context and one run with the checks every successful run must pass."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import pytest

from asm_core.errors import AsmError
from runs.providers import CancelToken, Provider, ProviderResult, RunContext
from tests.fakes.recorder import Recorder, run_context

__all__ = ["SYSTEM_PROMPT", "live_context", "live_marks", "run_live", "usable"]

SYSTEM_PROMPT = "You are a terse test fixture. Answer in one line."

P = TypeVar("P", bound=Provider)


def live_marks(*keys: str) -> list[pytest.MarkDecorator]:
    """A live test module's `pytestmark`: marked `live`, skipped unless one of the
    environment variables `keys` (the provider's credentials) is set."""
    return [
        pytest.mark.live,
        pytest.mark.skipif(
            not any(os.environ.get(key) for key in keys),
            reason=f"live test: set {' or '.join(keys)} to run",
        ),
    ]


def usable(provider: P) -> P:
    """`provider` once its configuration checks out; else the test is skipped (e.g. its CLI
    is not installed here)."""
    try:
        provider.validate_config()
    except AsmError as exc:
        pytest.skip(f"live test: {provider.name} is not usable here: {exc.message}")
    return provider


def live_context(prompt: str, *, adapter_opts: dict[str, Any], **kwargs: Any) -> RunContext:
    """A new run of `prompt` in a session whose system prompt asks for one-line answers."""
    return run_context(
        prompt,
        adapter_opts=adapter_opts,
        session_context={"system_prompt": SYSTEM_PROMPT},
        **kwargs,
    )


def run_live(provider: Provider, context: RunContext) -> tuple[ProviderResult, Recorder]:
    """Run one prompt and check what every successful run reports: a reply, the
    `message_received` event and output tokens (every event fits its schema: `Recorder`)."""
    rec = Recorder()
    result = provider.execute(context, rec, CancelToken())
    assert result.output["content"], "the reply is empty"
    assert rec.of("message_received"), "no message_received event"
    assert rec.usage_total().get("output_tokens", 0) > 0, "no output tokens reported"
    return result, rec
