"""Run endpoints: submit, list, read, cancel, long-poll wait, one-shot, providers (one APIView
each), and the session cancel (it cancels the session's runs too).

Views only parse, call one service or selector, and serialize. Sessions are fetched through
`session_get_for_user`, runs through `run_get_for_user` (another owner's object is a 404).
`RunWaitApi` is an async view: a waiter holds no thread while it waits.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_core.lifecycle import RUN_TERMINAL, RunStatus
from asm_project.api import (
    AsyncAPIView,
    enum_choices,
    error_responses,
    json_storable,
    page_parameters,
    paginated,
    request_user,
)
from asm_project.pagination import OldestFirstCursorPagination
from runs.bootstrap import provider_health, provider_registry
from runs.health import provider_health_list
from runs.models import Run
from runs.selectors import (
    run_get_for_user,
    run_list_for_session,
    run_queue_position,
    run_wait_for_user,
)
from runs.services import run_cancel, run_once, run_submit, session_cancel_with_runs
from sessions.api import SESSION_PATH_PARAM, SessionTransitionApi, transition_schema
from sessions.selectors import session_get_for_user

TAG = "runs"

RUN_PATH_PARAM = OpenApiParameter(
    "run_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The run id."
)
INPUT_HELP = (
    '`{"prompt": "..."}` or `{"messages": [{"role", "content"}, ...]}` (a bare string is a prompt).'
)
OPTIONS_HELP = (
    "Run options (architecture section 5.1): `timeout_ms`, `max_attempts`, `adapter_opts` "
    "(the provider's own; the echo provider's: `delay_ms`, `chunk_words`, `repeat`, `usage`, "
    "`tool_calls`, `fail`, `hang`), `required_capabilities`, `optional_capabilities`, "
    "`routing` (provider `router` only: `prefer`, `exclude`, `max_attempts`, `strategy`, "
    "`weights`, `required_capabilities`; docs/routing.md), `policy` (limits, tool rules and "
    "`on_violation`; docs/policies.md). "
    "Unknown keys are a 400."
)


class RunOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    session_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=enum_choices(RunStatus))
    provider = serializers.CharField()
    routed_provider = serializers.CharField(help_text="The provider routing chose (if any).")
    input = serializers.JSONField()
    output = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(
        allow_null=True, help_text="`{code, message, ...}` when the run failed."
    )
    token_usage = serializers.DictField()
    cost_usd = serializers.DecimalField(
        max_digits=14, decimal_places=6, coerce_to_string=False, allow_null=True
    )
    turn_count = serializers.IntegerField()
    options = serializers.DictField()
    metadata = serializers.DictField(help_text="Routing, policy and workspace records.")
    idempotency_key = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    waiting_reason = serializers.CharField(
        help_text="Why a pending run is not running yet (empty when nothing holds it)."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="1 for the next run to start in its session, 2 after it, ...; null unless "
        "pending."
    )
    cancel_requested_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "Run"

    def get_queue_position(self, run: Run) -> int | None:
        return run_queue_position(run=run)


# --------------------------------------------------------------------------- session's runs


class RunListApi(APIView):
    """GET /api/v1/sessions/{id}/runs: the session's runs, oldest first."""

    @extend_schema(
        operation_id="sessions_runs_list",
        tags=[TAG],
        summary="List a session's runs",
        description="Oldest first; cursor-paginated (follow `next`).",
        parameters=[
            SESSION_PATH_PARAM,
            *page_parameters(default_size=100, newest_first=False),
        ],
        responses={200: paginated(RunOutputSerializer, "PaginatedRunList")}
        | error_responses(400, 404),
    )
    def get(self, request: Request, session_id: uuid.UUID) -> Response:
        session = session_get_for_user(session_id=session_id, user=request_user(request))
        paginator = OldestFirstCursorPagination()
        page = paginator.paginate_queryset(
            run_list_for_session(session_id=session.id), request, view=self
        )
        return paginator.get_paginated_response(RunOutputSerializer(page, many=True).data)


class RunSubmitApi(APIView):
    """POST /api/v1/sessions/{id}/runs: queue a run (202); an idempotent replay is a 200."""

    class InputSerializer(serializers.Serializer[Any]):
        input = serializers.JSONField(help_text=INPUT_HELP, validators=[json_storable])
        provider = serializers.CharField(
            required=False, help_text="A registered provider (default: the configured one)."
        )
        options = serializers.DictField(
            required=False, help_text=OPTIONS_HELP, validators=[json_storable]
        )

        class Meta:
            ref_name = "RunSubmitInput"

    class HeaderSerializer(serializers.Serializer[Any]):
        idempotency_key = serializers.CharField(max_length=255, required=False)

        class Meta:
            ref_name = "RunSubmitHeaders"

    @extend_schema(
        operation_id="sessions_runs_create",
        tags=[TAG],
        summary="Submit a run",
        description=(
            "Queues the run and returns at once (202, status `pending`); a worker executes "
            "it. A `pending` session is activated first. With `Idempotency-Key`, the same key "
            "and body again return the same run (200); the same key with another body is a "
            "409 `already_exists`."
        ),
        parameters=[
            SESSION_PATH_PARAM,
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Optional, at most 255 characters, unique per session.",
            ),
        ],
        request=InputSerializer,
        responses={
            202: RunOutputSerializer,
            200: RunOutputSerializer,
        }
        | error_responses(400, 404, 409),
    )
    def post(self, request: Request, session_id: uuid.UUID) -> Response:
        body = RunSubmitApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        headers = RunSubmitApi.HeaderSerializer(
            data={} if key is None else {"idempotency_key": key}
        )
        headers.is_valid(raise_exception=True)
        user = request_user(request)
        session = session_get_for_user(session_id=session_id, user=user)
        created = run_submit(
            session_id=session.id,
            idempotency_key=headers.validated_data.get("idempotency_key"),
            actor=user,
            **body.validated_data,
        )
        return Response(
            RunOutputSerializer(created.run).data,
            status=status.HTTP_202_ACCEPTED if created.created else status.HTTP_200_OK,
        )


@transition_schema(
    "cancel",
    "active|paused -> cancelled (`session_cancelled`); its pending and running runs are "
    "cancelled first",
)
class SessionCancelApi(SessionTransitionApi):
    """POST /api/v1/sessions/{id}/cancel: cancel the session and its unfinished runs."""

    service = staticmethod(session_cancel_with_runs)


# --------------------------------------------------------------------------- one run


class RunDetailApi(APIView):
    """GET /api/v1/runs/{id}."""

    @extend_schema(
        operation_id="runs_retrieve",
        tags=[TAG],
        summary="Get a run",
        parameters=[RUN_PATH_PARAM],
        responses={200: RunOutputSerializer} | error_responses(404),
    )
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = run_get_for_user(run_id=run_id, user=request_user(request))
        return Response(RunOutputSerializer(run).data)


class RunCancelApi(APIView):
    """POST /api/v1/runs/{id}/cancel: 202 when cancelling; 200 (unchanged) when finished."""

    @extend_schema(
        operation_id="runs_cancel",
        tags=[TAG],
        summary="Cancel a run",
        description=(
            "A pending run is cancelled at once; a running one is signalled and ends "
            "`cancelled` shortly (poll it or use `/wait`). Both answer 202. A finished run is "
            "returned unchanged with 200."
        ),
        parameters=[RUN_PATH_PARAM],
        request=None,
        responses={
            202: RunOutputSerializer,
            200: RunOutputSerializer,
        }
        | error_responses(404),
    )
    def post(self, request: Request, run_id: uuid.UUID) -> Response:
        user = request_user(request)
        run = run_get_for_user(run_id=run_id, user=user)
        finished = run.status in RUN_TERMINAL
        run = run_cancel(run_id=run.id, actor=user)
        return Response(
            RunOutputSerializer(run).data,
            status=status.HTTP_200_OK if finished else status.HTTP_202_ACCEPTED,
        )


class RunWaitApi(AsyncAPIView):
    """GET /api/v1/runs/{id}/wait?timeout=S: long-poll until the run is finished."""

    class FilterSerializer(serializers.Serializer[Any]):
        timeout = serializers.FloatField(min_value=0, max_value=60, default=30)

        class Meta:
            ref_name = "RunWaitFilter"

    @extend_schema(
        operation_id="runs_wait",
        tags=[TAG],
        summary="Wait for a run to finish",
        description=(
            "Blocks up to `timeout` seconds (default 30, at most 60) until the run is "
            "terminal, then returns it; after the timeout it returns the run as it is (check "
            "`status`). The server holds no thread while waiting."
        ),
        parameters=[
            RUN_PATH_PARAM,
            OpenApiParameter(
                "timeout", OpenApiTypes.NUMBER, description="Seconds, 0-60 (default 30)."
            ),
        ],
        responses={200: RunOutputSerializer} | error_responses(400, 404),
    )
    async def get(self, request: Request, run_id: uuid.UUID) -> HttpResponse:
        filters = RunWaitApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        run = await run_wait_for_user(
            run_id=run_id, user=request_user(request), timeout_s=filters.validated_data["timeout"]
        )
        return self.respond(await sync_to_async(_run_data)(run))


def _run_data(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = RunOutputSerializer(run).data
    return data


# --------------------------------------------------------------------------- one-shot


class RunOnceApi(APIView):
    """POST /api/v1/run: the one-shot (session, run, wait, finish the session)."""

    class InputSerializer(serializers.Serializer[Any]):
        input = serializers.JSONField(help_text=INPUT_HELP, validators=[json_storable])
        provider = serializers.CharField(required=False)
        agent_id = serializers.CharField(
            required=False, max_length=200, help_text="Default: the provider's name."
        )
        options = serializers.DictField(
            required=False, help_text=OPTIONS_HELP, validators=[json_storable]
        )
        timeout = serializers.FloatField(
            required=False,
            min_value=0,
            max_value=60,
            default=60,
            help_text="Seconds to wait for the run, 0-60 (default 60).",
        )

        class Meta:
            ref_name = "RunOnceInput"

    class OutputSerializer(serializers.Serializer[Any]):
        session_id = serializers.UUIDField()
        run_id = serializers.UUIDField()
        status = serializers.ChoiceField(
            choices=enum_choices(RunStatus),
            help_text="Not terminal when the timeout passed first (the session stays active).",
        )
        output = serializers.JSONField(allow_null=True)
        error = serializers.JSONField(allow_null=True)
        token_usage = serializers.DictField()
        events_count = serializers.IntegerField()

        class Meta:
            ref_name = "RunOnceResult"

    @extend_schema(
        operation_id="run_once",
        tags=[TAG],
        summary="One-shot: run a prompt and wait for the result",
        description=(
            "Creates a session, submits one run, waits for it (up to `timeout` seconds) and "
            "completes or fails the session. The request blocks while the run executes."
        ),
        request=InputSerializer,
        responses={200: OutputSerializer} | error_responses(400),
    )
    def post(self, request: Request) -> Response:
        body = RunOnceApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        result = run_once(owner=request_user(request), timeout_s=data.pop("timeout"), **data)
        return Response(RunOnceApi.OutputSerializer(result).data)


# --------------------------------------------------------------------------- providers


class ProviderOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    capabilities = serializers.ListField(
        child=serializers.DictField(), help_text="`{type, name, enabled, description}` each."
    )
    available = serializers.BooleanField(help_text="False when its configuration is bad.")
    problem = serializers.CharField(allow_null=True, help_text="Why it is unavailable.")
    cooldown_until = serializers.DateTimeField(
        allow_null=True,
        help_text="Until when routing skips it after failures (null: not cooling down).",
    )
    consecutive_failures = serializers.IntegerField(
        help_text="Retryable failures in a row (a success resets it)."
    )
    last_failure_at = serializers.DateTimeField(allow_null=True)
    last_error_code = serializers.CharField(allow_null=True)

    class Meta:
        ref_name = "Provider"


class ProviderListOutputSerializer(serializers.Serializer[Any]):
    results = ProviderOutputSerializer(many=True)

    class Meta:
        ref_name = "ProviderList"


class ProviderListApi(APIView):
    """GET /api/v1/providers: the registered providers and their state."""

    @extend_schema(
        operation_id="providers_list",
        tags=["providers"],
        summary="List providers",
        description=(
            "Every registered provider, sorted by name (`router` routes among the others), "
            "with its health as every worker sees it: `consecutive_failures` (retryable "
            "failures in a row), `cooldown_until` (routing skips it until then; null: not "
            "cooling down), `last_failure_at`, `last_error_code`."
        ),
        responses={200: ProviderListOutputSerializer} | error_responses(),
    )
    def get(self, request: Request) -> Response:
        providers = provider_health_list(provider_registry(), provider_health())
        return Response(ProviderListOutputSerializer({"results": providers}).data)
