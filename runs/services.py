"""Run lifecycle services. `run_create` stores a `pending` run; execution is the executor's.

Invariants:
- A run's input is `{"messages": [{role, content}, ...]}` or `{"prompt": "..."}` (a bare
  string is accepted as a prompt); anything else is `validation_error` and stores nothing.
- An idempotency key is unique per session (database constraint). Creating with a key that
  is already used returns the existing run when input, provider and options are the same,
  and raises `already_exists` (HTTP 409) when they differ; a concurrent duplicate resolves
  the same way after the constraint rejects it.
- No event is written for run creation (as in the seed: the log starts at `message_sent`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from django.db import IntegrityError, transaction

from asm_core.errors import AsmError, session_not_found
from runs.models import Run
from sessions.models import Session


class RunCreated(NamedTuple):
    run: Run
    created: bool


def normalize_input(value: object) -> dict[str, Any]:
    """Validate a run input and return it in its stored shape."""
    if isinstance(value, str):
        value = {"prompt": value}
    if not isinstance(value, Mapping):
        raise AsmError(
            "validation_error",
            "input must be an object with 'messages' or 'prompt'",
            {"field": "input"},
        )
    if "messages" in value:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise AsmError(
                "validation_error", "input.messages must be a non-empty list", {"field": "input"}
            )
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "content" not in m:
                raise AsmError(
                    "validation_error",
                    f"input.messages[{i}] must be an object with 'role' and 'content'",
                    {"field": f"input.messages[{i}]"},
                )
            if "role" in m and not isinstance(m["role"], str):
                raise AsmError(
                    "validation_error",
                    f"input.messages[{i}].role must be a string",
                    {"field": f"input.messages[{i}].role"},
                )
        return dict(value)
    prompt = value.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return dict(value)
    raise AsmError(
        "validation_error",
        "input must have 'messages' (a non-empty list) or 'prompt' (a non-empty string)",
        {"field": "input"},
    )


def run_create(
    *,
    session_id: uuid.UUID,
    input: object,
    provider: str = "",
    options: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 1,
    run_id: uuid.UUID | None = None,
) -> RunCreated:
    """Store a `pending` run in the session (or return the idempotent replay)."""
    payload = normalize_input(input)
    opts = dict(options or {})
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise AsmError("validation_error", "max_attempts must be >= 1", {"field": "max_attempts"})
    if not Session.objects.filter(id=session_id).exists():
        raise session_not_found(session_id)
    if idempotency_key is not None:
        replay = _idempotent_replay(session_id, idempotency_key, payload, provider, opts)
        if replay is not None:
            return RunCreated(replay, False)
    try:
        with transaction.atomic():
            run = Run.objects.create(
                id=run_id or uuid.uuid4(),
                session_id=session_id,
                input=payload,
                provider=provider,
                options=opts,
                idempotency_key=idempotency_key,
                max_attempts=max_attempts,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        replay = _idempotent_replay(session_id, idempotency_key, payload, provider, opts)
        if replay is None:
            raise
        return RunCreated(replay, False)
    return RunCreated(run, True)


def _idempotent_replay(
    session_id: uuid.UUID, key: str, payload: dict[str, Any], provider: str, opts: dict[str, Any]
) -> Run | None:
    existing = Run.objects.filter(session_id=session_id, idempotency_key=key).first()
    if existing is None:
        return None
    if (existing.input, existing.provider, existing.options) != (payload, provider, opts):
        raise AsmError(
            "already_exists",
            "This Idempotency-Key was already used with a different request",
            {"idempotency_key": key, "run_id": str(existing.id)},
        )
    return existing
