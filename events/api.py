"""The event log over HTTP: GET /api/v1/sessions/{id}/events (replay and polling).

The same read path as the WebSocket and SSE backfill (`events.selectors.event_list`), the
same JSON form (`events.publish.event_json`). The session is fetched through
`session_get_for_user` (another owner's session is a 404).

Polling recipe: call with `after=<next_after of the previous page>` until `results` is empty
and `next_after == latest_sequence`.
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_core.event_types import EventType
from asm_project.api import enum_choices, error_responses, request_user
from events.publish import event_json
from events.selectors import event_list, latest_sequence
from sessions.selectors import session_get_for_user

EVENT_TYPES = sorted(t.value for t in EventType)


class EventOutputSerializer(serializers.Serializer[Any]):
    """The public event JSON (`events.publish.event_json`); documents the shape only."""

    id = serializers.UUIDField()
    session_id = serializers.UUIDField()
    run_id = serializers.UUIDField(allow_null=True)
    sequence_number = serializers.IntegerField(help_text="1, 2, 3, ... per session.")
    type = serializers.ChoiceField(choices=enum_choices(EventType))
    metadata = serializers.DictField()
    provider = serializers.CharField()
    timestamp = serializers.DateTimeField()

    class Meta:
        ref_name = "Event"

    def get_fields(self) -> dict[str, Any]:
        # `data` is a name a serializer cannot declare (it is the serializer's own output).
        payload = serializers.DictField(help_text="The type's payload (docs/event-types.md).")
        return {**super().get_fields(), "data": payload}


class EventPageSerializer(serializers.Serializer[Any]):
    results = EventOutputSerializer(many=True)
    latest_sequence = serializers.IntegerField(
        help_text="The session's highest sequence number when the page was read."
    )
    next_after = serializers.IntegerField(
        help_text="Pass as `after` for the next page: the last result's sequence number, "
        "or the given `after` (0 if none) when there are no results."
    )

    class Meta:
        ref_name = "EventPage"


class EventListApi(APIView):
    """GET /api/v1/sessions/{id}/events: a page of the session's log, ascending."""

    class FilterSerializer(serializers.Serializer[Any]):
        after = serializers.IntegerField(min_value=0, required=False)
        before = serializers.IntegerField(min_value=0, required=False)
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
        type = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_TYPES), required=False
        )
        run_id = serializers.UUIDField(required=False)

        class Meta:
            ref_name = "EventListFilter"

    @extend_schema(
        operation_id="sessions_events_list",
        tags=["events"],
        summary="List a session's events",
        description=(
            "Events in ascending sequence order. `after` and `before` are strict bounds; "
            "`limit` keeps the oldest N that match."
        ),
        parameters=[
            OpenApiParameter(
                "session_id",
                OpenApiTypes.UUID,
                OpenApiParameter.PATH,
                description="The session id.",
            ),
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Only events with a larger sequence number."
            ),
            OpenApiParameter(
                "before",
                OpenApiTypes.INT,
                description="Only events with a smaller sequence number.",
            ),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-1000, default 100."),
            OpenApiParameter(
                "type",
                OpenApiTypes.STR,
                many=True,
                explode=True,
                enum=EVENT_TYPES,
                description="Only these types (repeat the parameter for several).",
            ),
            OpenApiParameter("run_id", OpenApiTypes.UUID, description="Only this run's events."),
        ],
        responses={200: EventPageSerializer} | error_responses(400, 404),
    )
    def get(self, request: Request, session_id: uuid.UUID) -> Response:
        filters = EventListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        query = filters.validated_data
        session = session_get_for_user(session_id=session_id, user=request_user(request))
        events = event_list(
            session_id=session.id,
            after=query.get("after"),
            before=query.get("before"),
            limit=query["limit"],
            types=query.get("type"),
            run_id=query.get("run_id"),
        )
        return Response(
            {
                "results": [event_json(e) for e in events],
                "latest_sequence": latest_sequence(session_id=session.id),
                "next_after": events[-1].sequence_number if events else query.get("after", 0),
            }
        )
