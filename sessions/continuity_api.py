"""Continuity endpoints: compact a session's transcript, fork a session (docs/continuity.md).

One APIView per operation; views only parse, call one service and serialize. The session is
fetched through `session_get_for_user` first (another owner's session is a 404, as in
`sessions/api.py`); errors are the usual envelope.
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_project.api import error_responses, request_user
from events.api import EventOutputSerializer
from events.publish import event_json
from sessions.api import SESSION_PATH_PARAM, TAG, SessionOutputSerializer
from sessions.compaction import (
    DEFAULT_KEEP_MESSAGES,
    MAX_KEEP_MESSAGES,
    MAX_SUMMARY_CHARS,
    session_compact,
)
from sessions.fork import session_fork
from sessions.selectors import session_get_for_user


class SessionCompactApi(APIView):
    """POST /api/v1/sessions/{id}/compact `{keep_messages?, summary?}`."""

    class InputSerializer(serializers.Serializer[Any]):
        keep_messages = serializers.IntegerField(
            required=False,
            min_value=0,
            max_value=MAX_KEEP_MESSAGES,
            help_text=f"Newest messages kept verbatim (default {DEFAULT_KEEP_MESSAGES}).",
        )
        summary = serializers.CharField(
            required=False,
            max_length=MAX_SUMMARY_CHARS,
            help_text="Your summary of what is compacted; default: an extractive summary.",
        )

        class Meta:
            ref_name = "SessionCompactInput"

    class OutputSerializer(serializers.Serializer[Any]):
        compacted = serializers.BooleanField(help_text="False: nothing (more) to compact.")
        event = EventOutputSerializer(allow_null=True, help_text="The session_compacted event.")

        class Meta:
            ref_name = "SessionCompactOutput"

    @extend_schema(
        operation_id="sessions_compact",
        tags=[TAG],
        summary="Compact a session's transcript",
        description=(
            "Writes a `session_compacted` event: a summary of the session's transcript up to "
            "a message boundary (never between a tool call and its result), keeping the "
            "newest `keep_messages` messages verbatim. Continuation runs then start from "
            "it. 201 with the event; 200 with `compacted: false` when there is nothing "
            "(more) to compact."
        ),
        parameters=[SESSION_PATH_PARAM],
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer} | error_responses(400, 404),
    )
    def post(self, request: Request, session_id: uuid.UUID) -> Response:
        body = SessionCompactApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = request_user(request)
        session = session_get_for_user(session_id=session_id, user=user)
        result = session_compact(session_id=session.id, actor=user, **body.validated_data)
        if result.event is None:
            return Response({"compacted": False, "event": None})
        return Response(
            {"compacted": True, "event": event_json(result.event)},
            status=status.HTTP_201_CREATED,
        )


class SessionForkApi(APIView):
    """POST /api/v1/sessions/{id}/fork `{at_sequence}` -> 201 the new session."""

    class InputSerializer(serializers.Serializer[Any]):
        at_sequence = serializers.IntegerField(
            min_value=0, help_text="Copy the source's events 1..at_sequence."
        )

        class Meta:
            ref_name = "SessionForkInput"

    @extend_schema(
        operation_id="sessions_fork",
        tags=[TAG],
        summary="Fork a session",
        description=(
            "A new `pending` session (same owner and agent, `parent_session_id` = this one) "
            "whose events 1..at_sequence are copies of this session's, followed by "
            "`session_forked`. With a workspace snapshot at or before that point, the fork "
            "gets a workspace checked out at it. This session is not changed. An "
            "`at_sequence` past the last event is a 400."
        ),
        parameters=[SESSION_PATH_PARAM],
        request=InputSerializer,
        responses={201: SessionOutputSerializer} | error_responses(400, 404),
    )
    def post(self, request: Request, session_id: uuid.UUID) -> Response:
        body = SessionForkApi.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = request_user(request)
        session = session_get_for_user(session_id=session_id, user=user)
        fork = session_fork(
            session_id=session.id, at_sequence=body.validated_data["at_sequence"], actor=user
        )
        return Response(SessionOutputSerializer(fork).data, status=status.HTTP_201_CREATED)
