"""What the provider tests (unit and live) run an adapter with: a recording `Emit` and a
`RunContext` for a new run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from asm_core.event_types import validate_event
from asm_core.usage import merge_token_usage
from runs.providers import RunContext

__all__ = ["Recorder", "run_context"]


class Recorder:
    """An `Emit` that validates every event against its payload schema and keeps it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: Mapping[str, Any]) -> None:
        payload = dict(data)
        validate_event(type_, payload)
        self.events.append((type_, payload))

    @property
    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t == type_]

    def usage_total(self) -> dict[str, Any]:
        """The `token_usage_updated` increments merged into one total."""
        total: dict[str, Any] = {}
        for data in self.of("token_usage_updated"):
            total = merge_token_usage(total, data)
        return total


def run_context(
    prompt: str = "hello",
    *,
    input: Mapping[str, Any] | None = None,
    adapter_opts: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    session_id: uuid.UUID | None = None,
    session_context: Mapping[str, Any] | None = None,
    session_metadata: Mapping[str, Any] | None = None,
    provider_session_id: str | None = None,
) -> RunContext:
    """The context of a new run (a fresh run id; a fresh session id unless given).

    Its input is ``{"prompt": prompt}`` unless `input` is given; `adapter_opts`, when given,
    go into ``options["adapter_opts"]``.
    """
    opts = dict(options or {})
    if adapter_opts is not None:
        opts["adapter_opts"] = adapter_opts
    return RunContext.build(
        run_id=uuid.uuid4(),
        session_id=session_id or uuid.uuid4(),
        input=input if input is not None else {"prompt": prompt},
        options=opts,
        session_context=session_context,
        session_metadata=session_metadata,
        provider_session_id=provider_session_id,
    )
