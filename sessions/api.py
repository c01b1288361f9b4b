"""Session endpoints: create, list, read, and the lifecycle transitions (one APIView each).

Views only parse, call one service or selector, and serialize. Every session is fetched
through `session_get_for_user` (another owner's session is a 404). Cancelling a session
also cancels its runs, so `SessionCancelApi` lives with the runs (`runs/api.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_core.lifecycle import SessionStatus
from asm_project.api import (
    enum_choices,
    error_responses,
    json_storable,
    page_parameters,
    paginated,
    request_user,
)
from asm_project.pagination import CreatedCursorPagination
from runs.usage import session_usage
from runs.usage_api import UsageTotalsSerializer
from sessions.models import Session
from sessions.selectors import session_get_for_user, session_list
from sessions.services import (
    session_activate,
    session_complete,
    session_create,
    session_fail,
    session_pause,
    session_resume,
)

TAG = "sessions"
USAGE_ATTR = "_asm_usage"


def usage_attach(sessions: list[Session]) -> None:
    """Compute the usage totals of these sessions at once (for a list page)."""
    totals = session_usage([s.id for s in sessions])
    for session in sessions:
        setattr(session, USAGE_ATTR, totals[session.id])


def _with_context_field(fields: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`fields` plus a `context` object field, placed before `metadata` (a name a serializer
    cannot declare: DRF serializers have a `context` attribute of their own)."""
    out: dict[str, Any] = {}
    for name, field in fields.items():
        if name == "metadata":
            out["context"] = serializers.DictField(**kwargs)
        out[name] = field
    return out


class SessionOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    agent_id = serializers.CharField()
    status = serializers.ChoiceField(choices=enum_choices(SessionStatus))
    parent_session_id = serializers.UUIDField(allow_null=True)
    owner_id = serializers.IntegerField(allow_null=True)
    metadata = serializers.DictField()
    tags = serializers.ListField(child=serializers.CharField())
    last_sequence = serializers.IntegerField(
        help_text="The session's highest event sequence number (0: no events)."
    )
    usage = serializers.SerializerMethodField(
        help_text="Token and cost totals of the session's runs (runs.usage)."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Session"

    @extend_schema_field(UsageTotalsSerializer)
    def get_usage(self, session: Session) -> dict[str, Any]:
        attached: dict[str, Any] | None = getattr(session, USAGE_ATTR, None)
        return attached if attached is not None else session_usage([session.id])[session.id]

    def get_fields(self) -> dict[str, Any]:
        return _with_context_field(super().get_fields())


SESSION_PATH_PARAM = OpenApiParameter(
    "session_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The session id."
)


class SessionListApi(APIView):
    """GET /api/v1/sessions: the caller's sessions (staff: everyone's), cursor-paginated."""

    class FilterSerializer(serializers.Serializer[Any]):
        status = serializers.ChoiceField(choices=enum_choices(SessionStatus), required=False)
        agent_id = serializers.CharField(required=False)
        tag = serializers.CharField(required=False)

        class Meta:
            ref_name = "SessionListFilter"

    @extend_schema(
        operation_id="sessions_list",
        tags=[TAG],
        summary="List sessions",
        description=(
            "Your sessions (staff see all), newest first unless `ordering=created_at`. "
            "Cursor-paginated: follow `next`/`previous`."
        ),
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=[s.value for s in SessionStatus]),
            OpenApiParameter("agent_id", OpenApiTypes.STR),
            OpenApiParameter("tag", OpenApiTypes.STR, description="Sessions with this tag."),
            *page_parameters(),
        ],
        responses={200: paginated(SessionOutputSerializer, "PaginatedSessionList")}
        | error_responses(400),
    )
    def get(self, request: Request) -> Response:
        filters = SessionListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        sessions = session_list(user=request_user(request), **filters.validated_data)
        paginator = CreatedCursorPagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        usage_attach(page or [])  # one query for the page's usage totals
        return paginator.get_paginated_response(SessionOutputSerializer(page, many=True).data)


class SessionCreateApi(APIView):
    """POST /api/v1/sessions: a new `pending` session owned by the caller."""

    class InputSerializer(serializers.Serializer[Any]):
        agent_id = serializers.CharField(max_length=200)
        metadata = serializers.DictField(required=False, validators=[json_storable])
        tags = serializers.ListField(child=serializers.CharField(), required=False)
        parent_session_id = serializers.UUIDField(required=False, allow_null=True)

        class Meta:
            ref_name = "SessionCreateInput"

        def get_fields(self) -> dict[str, Any]:
            return _with_context_field(
                super().get_fields(), required=False, validators=[json_storable]
            )

    @extend_schema(
        operation_id="sessions_create",
        tags=[TAG],
        summary="Create a session",
        request=InputSerializer,
        responses={201: SessionOutputSerializer} | error_responses(400, 404),
    )
    def post(self, request: Request) -> Response:
        body = SessionCreateApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = request_user(request)
        data = dict(body.validated_data)
        if data.get("parent_session_id") is not None:
            session_get_for_user(session_id=data["parent_session_id"], user=user)  # yours, or 404
        session = session_create(owner=user, actor=user, **data)
        return Response(SessionOutputSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailApi(APIView):
    """GET /api/v1/sessions/{id}."""

    @extend_schema(
        operation_id="sessions_retrieve",
        tags=[TAG],
        summary="Get a session",
        parameters=[SESSION_PATH_PARAM],
        responses={200: SessionOutputSerializer} | error_responses(404),
    )
    def get(self, request: Request, session_id: uuid.UUID) -> Response:
        session = session_get_for_user(session_id=session_id, user=request_user(request))
        return Response(SessionOutputSerializer(session).data)


# --------------------------------------------------------------------------- transitions


class SessionTransitionApi(APIView):
    """Base of the transition endpoints: POST /api/v1/sessions/{id}/<verb> -> the session.

    A subclass names its service; the session is fetched with `session_get_for_user` first,
    so another owner's session is a 404 and never reaches the service.
    """

    service: ClassVar[Callable[..., Session]]

    def post(self, request: Request, session_id: uuid.UUID) -> Response:
        user = request_user(request)
        session = session_get_for_user(session_id=session_id, user=user)
        updated = type(self).service(session_id=session.id, actor=user, **self.arguments(request))
        return Response(SessionOutputSerializer(updated).data)

    def arguments(self, request: Request) -> dict[str, Any]:
        """Extra keyword arguments for the service, from the request body (none by default)."""
        return {}


def transition_schema(verb: str, moves: str) -> Callable[[Any], Any]:
    """The schema of a transition endpoint (a class decorator for its view)."""
    return extend_schema_view(
        post=extend_schema(
            operation_id=f"sessions_{verb}",
            tags=[TAG],
            summary=f"{verb.capitalize()} a session",
            description=f"{moves}. Any other current status is a 409 `invalid_transition`.",
            parameters=[SESSION_PATH_PARAM],
            request=None,
            responses={200: SessionOutputSerializer} | error_responses(404, 409),
        )
    )


@transition_schema("activate", "pending -> active (`session_started`)")
class SessionActivateApi(SessionTransitionApi):
    service = staticmethod(session_activate)


@transition_schema("pause", "active -> paused (`session_paused`)")
class SessionPauseApi(SessionTransitionApi):
    service = staticmethod(session_pause)


@transition_schema("resume", "paused -> active (`session_resumed`)")
class SessionResumeApi(SessionTransitionApi):
    service = staticmethod(session_resume)


@transition_schema("complete", "active|paused -> completed (`session_completed`)")
class SessionCompleteApi(SessionTransitionApi):
    service = staticmethod(session_complete)


class SessionFailApi(SessionTransitionApi):
    """POST /api/v1/sessions/{id}/fail `{error_code?, error_message?}`."""

    service = staticmethod(session_fail)

    class InputSerializer(serializers.Serializer[Any]):
        error_code = serializers.CharField(
            required=False, max_length=100, help_text="Default `unknown_error`."
        )
        error_message = serializers.CharField(
            required=False, help_text="Default: the code's default message."
        )

        class Meta:
            ref_name = "SessionFailInput"

    @extend_schema(
        operation_id="sessions_fail",
        tags=[TAG],
        summary="Fail a session",
        description=(
            "active|paused -> failed (`session_failed {error_code, error_message}`). Any "
            "other current status is a 409 `invalid_transition`. The body may be empty."
        ),
        parameters=[SESSION_PATH_PARAM],
        request=InputSerializer,
        responses={200: SessionOutputSerializer} | error_responses(400, 404, 409),
    )
    def post(self, request: Request, session_id: uuid.UUID) -> Response:
        return super().post(request, session_id)

    def arguments(self, request: Request) -> dict[str, Any]:
        body = SessionFailApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return dict(body.validated_data)
