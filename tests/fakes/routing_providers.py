"""Providers for the routing tests: scriptable fakes, and classes the registry can import.

- `RouteFake`: a Provider with a name, capabilities and a behaviour set by attributes
  (reply text streamed word by word, fail with a code after N chunks, wait on the cancel
  token first, a config problem). It records the runs it executed and the cancels it got.
- `AlphaProvider` / `BetaProvider`: importable (`ASM_PROVIDERS`) fakes for the service-level
  tests: alpha has no `tool:bash`, beta has it (the seed's "codex over preferred amp").
- `FlakyEchoProvider` (`flaky`): the echo provider, except that a prompt containing
  `[flaky-down]` makes it stream one chunk and then fail with `provider_unavailable`
  (retryable). The two-worker health test registers it in real worker processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from asm_core.errors import AsmError
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.echo import EchoProvider

FLAKY_TRIGGER = "[flaky-down]"


def caps(*specs: str) -> list[Capability]:
    """`caps("tool:bash", "streaming")` -> capabilities (`type:name`, or a bare type)."""
    out = []
    for spec in specs:
        type_, _, name = spec.partition(":")
        out.append(Capability(type_, name or type_))
    return out


class RouteFake:
    """A scriptable provider (module docstring)."""

    def __init__(
        self,
        name: str,
        capabilities: Sequence[Capability] = (),
        *,
        reply: str | None = None,
        fail: str | None = None,
        fail_after_chunks: int = 0,
        wait_s: float = 0.0,
        problem: str | None = None,
    ) -> None:
        self.name = name
        self._capabilities = list(capabilities)
        self.reply = reply if reply is not None else f"{name} says hi"
        self.fail, self.fail_after_chunks = fail, fail_after_chunks
        self.wait_s = wait_s
        self.problem = problem
        self.calls: list[RunContext] = []
        self.cancelled: list[uuid.UUID] = []

    def capabilities(self) -> list[Capability]:
        return list(self._capabilities)

    def validate_config(self) -> None:
        if self.problem:
            raise AsmError("validation_error", f"{self.name}: {self.problem}")

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        return None

    def cancel(self, run_id: uuid.UUID) -> None:
        self.cancelled.append(run_id)

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        self.calls.append(context)
        if self.wait_s and cancel_token.wait(self.wait_s):
            raise AsmError("cancelled", "Run was cancelled")
        words = self.reply.split(" ")
        for k, word in enumerate(words, start=1):
            if self.fail and k > self.fail_after_chunks:
                break
            delta = word if k == len(words) else word + " "
            emit("message_streamed", {"delta": delta, "content": delta})
        if self.fail:
            raise AsmError(self.fail, f"{self.name} failed")
        emit("message_received", {"content": self.reply, "role": "assistant"})
        emit("token_usage_updated", {"input_tokens": 1, "output_tokens": len(words)})
        return ProviderResult(
            output={"content": self.reply},
            token_usage={"input_tokens": 1, "output_tokens": len(words)},
            stop_reason="end_turn",
            model=f"{self.name}-model",
            provider_session_id=f"{self.name}-thread",
        )


class AlphaProvider(RouteFake):
    name = "alpha"

    def __init__(self) -> None:
        super().__init__("alpha", caps("streaming", "tool:read"))


class BetaProvider(RouteFake):
    name = "beta"

    def __init__(self) -> None:
        super().__init__("beta", caps("streaming", "tool:bash"))


class FlakyEchoProvider(EchoProvider):
    """`echo` that fails (retryably) after one chunk when the prompt says `[flaky-down]`."""

    name = "flaky"

    def capabilities(self) -> list[Capability]:
        return [Capability(CapabilityType.STREAMING, "streaming")]

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        if any(FLAKY_TRIGGER in m["content"] for m in context.messages):
            emit("message_streamed", {"delta": "partial ", "content": "partial "})
            raise AsmError("provider_unavailable", "flaky: upstream is down")
        return super().execute(context, emit, cancel_token)
