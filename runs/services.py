"""Run lifecycle services: create, submit, cancel, wait, one-shot (the library API).

`run_create` stores a `pending` run; `run_submit` also queues it for a worker (on commit);
execution is the executor's (`runs.executor`), scheduling the drain's (`runs.scheduling`).

Invariants:
- A run's input is `{"messages": [{role, content}, ...]}` or `{"prompt": "..."}` (a bare
  string is accepted as a prompt); anything else is `validation_error` and stores nothing.
- An idempotency key is unique per session (database constraint). Creating with a key that
  is already used returns the existing run when input, provider and options are the same,
  and raises `already_exists` (HTTP 409) when they differ; a concurrent duplicate resolves
  the same way after the constraint rejects it.
- No event is written for run creation (as in the seed: the log starts at `message_sent`).
- Cancel: a pending run ends `cancelled` at once with `run_cancelled` and never reaches a
  provider; a running run gets `cancel_requested_at` and, on commit, a cancel signal its
  worker polls; the executor then ends it `cancelled`. A terminal run is left unchanged.
- Signals (`runs.signals`, after commit): `run_submitted` for a queued run (not a replay),
  `run_finished` for a run cancelled while queued. Submit is traced (`asm.run.submit`).
- Submit and cancel are audited (`sessions.audit.audited`); secrets in a run's input and
  options are masked before they are stored (asm_core.redaction), so no provider, event or
  API response sees them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from asm_core.errors import AsmError, run_not_found, session_not_found
from asm_core.event_types import EventType
from asm_core.lifecycle import (
    RUN_TERMINAL,
    SESSION_TERMINAL,
    RunStatus,
    SessionStatus,
    check_run_transition,
)
from asm_project.logging import settings_redactor
from events.models import Event
from events.services import event_append
from runs.bootstrap import provider_registry
from runs.continuation import continuation_options
from runs.coordination import coordinator
from runs.dispatch import drain_enqueue
from runs.models import Run
from runs.policies import policy_parse, policy_sources, policy_stack
from runs.providers.base import parse_requirement
from runs.routing import ROUTER_NAME, routing_options_validate
from runs.signals import run_finished, run_submitted, signal_send_on_commit
from runs.telemetry import span_scope, span_traceparent
from sessions.agents import agent_manifest_for, agent_request_matches, agent_run_defaults
from sessions.audit import audited
from sessions.models import Session
from sessions.services import (
    Actor,
    actor_metadata,
    session_activate,
    session_cancel,
    session_complete,
    session_create,
    session_fail,
    session_lock,
)
from sessions.workspaces.options import workspace_option_validate


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
    session_locked: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> RunCreated:
    """Store a `pending` run in the session (or return the idempotent replay).

    ``session_locked``: the caller holds the session's row lock in this transaction (so
    the session exists; `run_submit` does), which saves a query.
    """
    redactor = settings_redactor()  # secrets are never stored (docs/audit-and-logs.md)
    payload = redactor.redact(normalize_input(input))
    opts = redactor.redact(dict(options or {}))
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise AsmError("validation_error", "max_attempts must be >= 1", {"field": "max_attempts"})
    if not session_locked and not Session.objects.filter(id=session_id).exists():
        raise session_not_found(session_id)
    if idempotency_key is not None:
        replay = _idempotent_replay(session_id, idempotency_key, payload, provider, opts)
        if replay is not None:
            return RunCreated(replay, False)
    try:
        # A savepoint only where a duplicate idempotency key is the expected IntegrityError
        # (the caller's transaction survives it); fresh ids cannot collide.
        with transaction.atomic(savepoint=idempotency_key is not None):
            run = Run.objects.create(
                id=run_id or uuid.uuid4(),
                session_id=session_id,
                input=payload,
                provider=provider,
                options=opts,
                idempotency_key=idempotency_key,
                max_attempts=max_attempts,
                metadata=dict(metadata or {}),
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


# --------------------------------------------------------------------------- submit and cancel
#: Run options this build understands. Others are refused rather than silently ignored.
RUN_OPTION_KEYS = frozenset(
    {
        "timeout_ms",
        "max_attempts",
        "adapter_opts",
        "required_capabilities",
        "optional_capabilities",
        "policy",
        "routing",
        "continuation",
        "continuation_opts",
        "workspace",
    }
)


def validate_run_options(options: object, provider: str) -> dict[str, Any]:
    """Check `options` and the provider's `adapter_opts`; return the options to store."""
    chosen = provider_registry().get(provider)  # an unknown provider is refused first
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise AsmError("validation_error", "options must be an object", {"field": "options"})
    unknown = sorted(set(options) - RUN_OPTION_KEYS)
    if unknown:
        raise AsmError(
            "validation_error",
            f"Unsupported run option(s): {', '.join(unknown)}",
            {"field": "options", "unsupported": unknown, "supported": sorted(RUN_OPTION_KEYS)},
        )
    for key, low, high in (("timeout_ms", 1, 7 * 24 * 3600 * 1000), ("max_attempts", 1, 10)):
        value = options.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
        ):
            raise AsmError(
                "validation_error",
                f"options.{key} must be an integer from {low} to {high}",
                {"field": f"options.{key}"},
            )
    for key in ("required_capabilities", "optional_capabilities"):
        value = options.get(key)
        if value is not None and not isinstance(value, list):
            raise AsmError(
                "validation_error", f"options.{key} must be a list", {"field": f"options.{key}"}
            )
    chosen.validate_adapter_opts(options.get("adapter_opts"))
    for key in ("required_capabilities", "optional_capabilities"):
        for entry in options.get(key) or ():
            parse_requirement(entry)
    if options.get("policy") is not None:
        policy_parse(options["policy"], field="options.policy")
    if options.get("routing") is not None:
        _validate_routing(options["routing"], provider)
    continuation_options(options)  # `continuation`, `continuation_opts` (runs.continuation)
    workspace_option_validate(options)  # `workspace` (sessions.workspaces.options)
    return dict(options)


def _validate_routing(routing: object, provider: str) -> None:
    """`options.routing` is for the `router` provider only and is checked strictly."""
    if provider != ROUTER_NAME:
        raise AsmError(
            "validation_error",
            f"options.routing applies only to provider {ROUTER_NAME!r} (this run: {provider!r})",
            {"field": "options.routing"},
        )
    routable = [n for n in provider_registry().names() if n != ROUTER_NAME]
    routing_options_validate(routing, registered=routable)


@audited(
    "run.submit",
    "session",
    "session_id",
    result_detail=lambda c: {"run_id": str(c.run.id), "created": c.created},
)
def run_submit(
    *,
    session_id: uuid.UUID,
    input: object,
    provider: str | None = None,
    options: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: Actor = None,
) -> RunCreated:
    """Queue a run in the session and, on commit, ask a worker to drain the session.

    A `pending` session is activated first (`session_started`). A finished session takes no
    runs (`invalid_operation`). At most `ASM_MAX_QUEUED_RUNS` runs wait per session
    (`max_runs_exceeded`). Bad input or options change nothing. The session's agent
    manifest, if any, supplies defaults (`sessions.agents.agent_run_defaults`).
    """
    with span_scope("asm.run.submit", {"asm.session_id": str(session_id)}) as span:
        payload = settings_redactor().redact(normalize_input(input))
        with transaction.atomic():
            session = session_lock(session_id)
            applied = agent_run_defaults(
                agent_manifest_for(session.agent_id),
                provider=provider,
                options=options,
                session_context=session.context,
            )
            name = applied.provider or settings.ASM_DEFAULT_PROVIDER
            opts = validate_run_options(applied.options, name)
            replay = idempotency_key is not None and (
                Run.objects.filter(session_id=session_id, idempotency_key=idempotency_key).first()
            )
            if (
                replay
                and replay.input == payload
                and agent_request_matches(replay.metadata, provider=provider, options=options)
            ):
                # The same request, whatever the manifest says now.
                span.set_attribute("asm.run_id", str(replay.id))
                return RunCreated(replay, False)
            if not replay:
                # Every policy layer the run will be held to is valid (the agent's is checked
                # where manifests are edited); a bad one refuses the run here, not at execution.
                policy_stack(
                    policy_sources(
                        default=settings.ASM_DEFAULT_POLICY,
                        session_context=session.context,
                        options=opts,
                    )
                )
                if session.status in SESSION_TERMINAL:
                    raise AsmError(
                        "invalid_operation",
                        f"The session is {session.status}; it takes no new runs",
                        {"session_id": str(session_id), "status": session.status},
                    )
                if session.status == SessionStatus.PENDING:
                    session_activate(session_id=session_id, actor=actor)
                queued = _pending_count(session_id)
                if queued >= settings.ASM_MAX_QUEUED_RUNS:
                    raise AsmError(
                        "max_runs_exceeded",
                        f"Maximum queued runs limit ({settings.ASM_MAX_QUEUED_RUNS}) reached "
                        f"for this session",
                        {"limit": settings.ASM_MAX_QUEUED_RUNS, "queued": queued},
                    )
            created = run_create(
                session_id=session_id,
                input=payload,
                provider=name,
                options=opts,
                idempotency_key=idempotency_key,
                max_attempts=int(opts.get("max_attempts", 1)),
                session_locked=True,
                metadata=_run_metadata(applied.metadata, span_traceparent(span)),
            )
            if created.created:
                drain_enqueue(session_id)
                signal_send_on_commit(run_submitted, Run, run=created.run)
        span.set_attributes(
            {
                "asm.run_id": str(created.run.id),
                "asm.provider": created.run.provider,
                "asm.run.created": created.created,
            }
        )
    return created


def _run_metadata(agent: Mapping[str, Any] | None, trace: Mapping[str, str]) -> dict[str, Any]:
    """A submitted run's metadata: the agent manifest's record, and when tracing the W3C
    trace context of its submit span (its execution's span links back to it)."""
    metadata: dict[str, Any] = {}
    if agent:
        metadata["agent"] = agent
    if trace:
        metadata["trace"] = dict(trace)
    return metadata


@audited("run.cancel", "run", "run_id")
def run_cancel(*, run_id: uuid.UUID, actor: Actor = None) -> Run:
    """Cancel a run: a pending one at once; a running one by signalling its worker.

    Cancelling a finished run, or cancelling twice, changes nothing.
    """
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if run is None:
            raise run_not_found(run_id)
        if run.status == RunStatus.PENDING:
            check_run_transition(run.status, RunStatus.CANCELLED)
            run.status, run.ended_at = RunStatus.CANCELLED, timezone.now()
            run.error = {"code": "cancelled", "message": "Run was cancelled before it started"}
            run.waiting_reason = ""
            run.save(update_fields=["status", "ended_at", "error", "waiting_reason"])
            signal_send_on_commit(run_finished, Run, run=run, status=run.status)
            event_append(
                session_id=run.session_id,
                type=EventType.RUN_CANCELLED,
                data={"reason": "cancelled while queued"},
                run_id=run.id,
                metadata=actor_metadata(actor),
                provider=run.provider,
            )
        elif run.status == RunStatus.RUNNING and run.cancel_requested_at is None:
            run.cancel_requested_at = timezone.now()
            run.save(update_fields=["cancel_requested_at"])
            transaction.on_commit(partial(coordinator().cancel_send, run.id))
    return run


def session_cancel_with_runs(*, session_id: uuid.UUID, actor: Actor = None) -> Session:
    """Cancel the session's pending and running runs, then the session itself."""
    with transaction.atomic():
        session_lock(session_id)
        for run_id in Run.objects.filter(
            session_id=session_id, status__in=[RunStatus.PENDING, RunStatus.RUNNING]
        ).values_list("id", flat=True):
            run_cancel(run_id=run_id, actor=actor)
        return session_cancel(session_id=session_id, actor=actor)


# --------------------------------------------------------------------------- waiting
def run_wait(*, run_id: uuid.UUID, timeout_s: float, poll_s: float = 0.05) -> Run:
    """Return the run once it is terminal, or as it is when `timeout_s` has passed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        run = Run.objects.filter(id=run_id).first()
        if run is None:
            raise run_not_found(run_id)
        if run.status in RUN_TERMINAL or time.monotonic() >= deadline:
            return run
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def run_once(
    *,
    input: object,
    provider: str | None = None,
    agent_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout_s: float = 60.0,
    owner: User | None = None,
    context: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The seed's one-shot (spec 5.6): session, run, wait, then complete or fail the session.

    Unlike the seed it keeps `workspace`, `policy` and `routing` in the result (None until
    those features are enabled for the run). If the run is not finished within `timeout_s`
    the result says so (`status` is not terminal) and the session stays active.
    """
    applied = agent_run_defaults(  # checked up front: a bad request creates no session
        agent_manifest_for(agent_id) if agent_id else None,
        provider=provider,
        options=options,
        session_context=context,
    )
    name = applied.provider or settings.ASM_DEFAULT_PROVIDER
    validate_run_options(applied.options, name)
    normalize_input(input)
    session = session_create(
        agent_id=agent_id or name, owner=owner, context=context, metadata=metadata
    )
    try:
        created = run_submit(
            session_id=session.id, input=input, provider=provider, options=options, actor=owner
        )
    except AsmError as exc:
        session_fail(
            session_id=session.id, error_code=exc.code, error_message=exc.message, actor=owner
        )
        raise
    run = run_wait(run_id=created.run.id, timeout_s=timeout_s)
    if run.status == RunStatus.COMPLETED:
        session_complete(session_id=session.id, actor=owner)
    elif run.status in RUN_TERMINAL:
        error = run.error or {}
        session_fail(
            session_id=session.id,
            error_code=error.get("code") or run.status,
            error_message=error.get("message"),
            actor=owner,
        )
    return {
        "session_id": session.id,
        "run_id": run.id,
        "status": run.status,
        "output": run.output,
        "error": run.error,
        "token_usage": run.token_usage,
        "events_count": Event.objects.filter(session_id=session.id).count(),
        "workspace": run.metadata.get("workspace"),
        "policy": run.metadata.get("policy"),
        "routing": run.metadata.get("routing"),
    }


_PENDING_SQL = (
    f"SELECT COUNT(*) FROM {Run._meta.db_table} WHERE session_id = %s AND status = 'pending'"  # noqa: S608
)


def _pending_count(session_id: uuid.UUID) -> int:
    """The session's pending runs (hand-written: once per submit)."""
    conn = connections[router.db_for_read(Run)]
    with conn.cursor() as cursor:
        cursor.execute(_PENDING_SQL, [Run._meta.pk.get_db_prep_value(session_id, conn)])
        return int(cursor.fetchone()[0])
