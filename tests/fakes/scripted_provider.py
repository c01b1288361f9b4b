"""A scripted fake provider for executor-level tests: `execute` runs a per-test script
(`Script`); every call's context and every cancel are recorded. `ok()` builds a result."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runs.providers.base import CancelToken, Capability, Emit, ProviderResult, RunContext

Script = Callable[[RunContext, Emit, CancelToken], ProviderResult]


def ok(**fields: Any) -> ProviderResult:
    fields.setdefault("output", {"content": "ok"})
    fields.setdefault("token_usage", {})
    return ProviderResult(**fields)


class FakeProvider:
    """A Provider whose `execute` runs `script`; records calls and cancels."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        name: str = "fake",
        capabilities: Sequence[Capability] = (),
    ) -> None:
        self.name = name
        self._script: Script = script or (lambda _ctx, _emit, _token: ok())
        self._capabilities = list(capabilities)
        self.calls: list[RunContext] = []
        self.cancelled: list[uuid.UUID] = []

    def capabilities(self) -> list[Capability]:
        return list(self._capabilities)

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        self.calls.append(context)
        return self._script(context, emit, cancel_token)

    def cancel(self, run_id: uuid.UUID) -> None:
        self.cancelled.append(run_id)

    def validate_config(self) -> None:
        return None

    def validate_adapter_opts(self, opts: Mapping[str, Any] | None) -> None:
        return None
