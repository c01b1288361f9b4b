"""GET /api/v1/audit: the audit log of control actions (staff only), cursor-paginated.

Views only parse, call the selector (`sessions.audit.audit_list`) and serialize. A caller
who is not staff gets 403 `permission_denied`; there is no write endpoint (append-only).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_project.api import error_responses, page_parameters, paginated, request_user
from asm_project.pagination import CreatedCursorPagination
from sessions.audit import audit_list

TAG = "audit"


class AuditEntrySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor = serializers.CharField(help_text="`user:<id>`, `system` or a named system part.")
    action = serializers.CharField(help_text="e.g. `session.pause`, `run.submit`, `admin.change`.")
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    outcome = serializers.CharField(help_text="`ok` or the error code the action failed with.")
    detail = serializers.JSONField()


class AuditListApi(APIView):
    """GET /api/v1/audit: audit entries, newest first; staff only."""

    class FilterSerializer(serializers.Serializer[Any]):
        actor = serializers.CharField(required=False)
        action = serializers.CharField(required=False)
        object_type = serializers.CharField(required=False)
        object = serializers.CharField(required=False)
        since = serializers.DateTimeField(required=False)

        class Meta:
            ref_name = "AuditListFilter"

    @extend_schema(
        operation_id="audit_list",
        tags=[TAG],
        summary="List audit entries",
        description=(
            "Control actions (who, when, what, outcome), newest first unless "
            "`ordering=created_at`. Staff only. Cursor-paginated: follow `next`/`previous`."
        ),
        parameters=[
            OpenApiParameter("actor", OpenApiTypes.STR, description="e.g. `user:3`, `system`."),
            OpenApiParameter("action", OpenApiTypes.STR, description="e.g. `run.cancel`."),
            OpenApiParameter("object_type", OpenApiTypes.STR, description="e.g. `run`."),
            OpenApiParameter("object", OpenApiTypes.STR, description="The object's id."),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Inclusive lower bound."),
            *page_parameters(),
        ],
        responses={200: paginated(AuditEntrySerializer, "PaginatedAuditList")}
        | error_responses(400, 403),
    )
    def get(self, request: Request) -> Response:
        if not request_user(request).is_staff:
            raise PermissionDenied("Only staff may read the audit log")
        filters = AuditListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = dict(filters.validated_data)
        entries = audit_list(object_id=data.pop("object", None), **data)
        paginator = CreatedCursorPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(AuditEntrySerializer(page, many=True).data)
