"""Agent manifest endpoints: list, create, retrieve, update, delete (one APIView each).

Access: every authenticated user may READ manifests (they are deployment configuration,
not anyone's data); only staff may create, change or delete them (others: 403
`permission_denied`). Views only parse, call one service or selector (`sessions.agents`),
and serialize; validation is the service's (a bad manifest is 400 `validation_error`
naming the field, a taken `agent_id` 409 `already_exists`, an unknown one 404 `not_found`).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_project.api import error_responses, json_storable
from sessions.agents import (
    agent_create,
    agent_delete,
    agent_get,
    agent_list,
    agent_manifest,
    agent_update,
)
from sessions.models import Agent

TAG = "agents"

AGENT_PATH_PARAM = OpenApiParameter(
    "agent_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The agent's `agent_id`."
)
CAPABILITIES_HELP = (
    'Capability requirements: type names (`"tool"`) or `{"type", "name"?}` objects; unioned '
    "with the run's own."
)


class StaffWritesOthersRead(permissions.BasePermission):
    """Reads for any authenticated user; writes for staff only."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(user.is_staff)


class AgentOutputSerializer(serializers.Serializer[Any]):
    agent_id = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField()
    description = serializers.CharField()
    provider = serializers.CharField(help_text="Default provider of the agent's runs ('': none).")
    routing = serializers.JSONField(
        allow_null=True, help_text="Default `options.routing` (runs then go to `router`)."
    )
    required_capabilities = serializers.ListField(child=serializers.JSONField())
    optional_capabilities = serializers.ListField(child=serializers.JSONField())
    default_policy = serializers.JSONField(
        allow_null=True, help_text="The agent's policy layer (the `options.policy` shape)."
    )
    system_prompt = serializers.CharField(
        help_text="Given to the provider when the session's context has no `system_prompt`."
    )
    default_options = serializers.DictField(help_text="Merged under each run's own options.")
    metadata = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Agent"

    def to_representation(self, instance: Agent) -> dict[str, Any]:
        data = agent_manifest(instance)
        data["created_at"] = instance.created_at
        data["updated_at"] = instance.updated_at
        out: dict[str, Any] = super().to_representation(data)
        return out


class AgentListOutputSerializer(serializers.Serializer[Any]):
    results = AgentOutputSerializer(many=True)

    class Meta:
        ref_name = "AgentList"


class AgentInputSerializer(serializers.Serializer[Any]):
    """Types only; the service checks the manifest as a whole."""

    agent_id = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=50, required=False, default="1")
    description = serializers.CharField(required=False, allow_blank=True)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=100)
    routing = serializers.JSONField(required=False, allow_null=True, validators=[json_storable])
    required_capabilities = serializers.ListField(
        child=serializers.JSONField(), required=False, help_text=CAPABILITIES_HELP
    )
    optional_capabilities = serializers.ListField(
        child=serializers.JSONField(), required=False, help_text=CAPABILITIES_HELP
    )
    default_policy = serializers.JSONField(
        required=False, allow_null=True, validators=[json_storable]
    )
    system_prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    default_options = serializers.DictField(required=False, validators=[json_storable])
    metadata = serializers.DictField(required=False, validators=[json_storable])

    class Meta:
        ref_name = "AgentInput"


class AgentListApi(APIView):
    """GET /api/v1/agents: every manifest, by agent_id."""

    permission_classes = [StaffWritesOthersRead]

    @extend_schema(
        operation_id="agents_list",
        tags=[TAG],
        summary="List agent manifests",
        description="Every manifest, sorted by `agent_id`. Any authenticated user may read.",
        responses={200: AgentListOutputSerializer} | error_responses(),
    )
    def get(self, request: Request) -> Response:
        return Response(AgentListOutputSerializer({"results": list(agent_list())}).data)


class AgentCreateApi(APIView):
    """POST /api/v1/agents (staff)."""

    permission_classes = [StaffWritesOthersRead]

    @extend_schema(
        operation_id="agents_create",
        tags=[TAG],
        summary="Create an agent manifest (staff)",
        request=AgentInputSerializer,
        responses={201: AgentOutputSerializer} | error_responses(400, 403, 409),
    )
    def post(self, request: Request) -> Response:
        body = AgentInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agent = agent_create(**body.validated_data)
        return Response(AgentOutputSerializer(agent).data, status=status.HTTP_201_CREATED)


class AgentDetailApi(APIView):
    """GET /api/v1/agents/{agent_id}."""

    permission_classes = [StaffWritesOthersRead]

    @extend_schema(
        operation_id="agents_retrieve",
        tags=[TAG],
        summary="Get an agent manifest",
        parameters=[AGENT_PATH_PARAM],
        responses={200: AgentOutputSerializer} | error_responses(404),
    )
    def get(self, request: Request, agent_id: str) -> Response:
        return Response(AgentOutputSerializer(agent_get(agent_id)).data)


class AgentUpdateApi(APIView):
    """PATCH (some fields) or PUT (the whole manifest) /api/v1/agents/{agent_id} (staff)."""

    permission_classes = [StaffWritesOthersRead]

    @extend_schema(
        operation_id="agents_partial_update",
        tags=[TAG],
        summary="Change some fields of an agent manifest (staff)",
        parameters=[AGENT_PATH_PARAM],
        request=AgentInputSerializer(partial=True),
        responses={200: AgentOutputSerializer} | error_responses(400, 403, 404, 409),
    )
    def patch(self, request: Request, agent_id: str) -> Response:
        body = AgentInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        return Response(AgentOutputSerializer(agent_update(agent_id, **body.validated_data)).data)

    @extend_schema(
        operation_id="agents_update",
        tags=[TAG],
        summary="Replace an agent manifest (staff)",
        description="Fields left out take their defaults.",
        parameters=[AGENT_PATH_PARAM],
        request=AgentInputSerializer,
        responses={200: AgentOutputSerializer} | error_responses(400, 403, 404, 409),
    )
    def put(self, request: Request, agent_id: str) -> Response:
        body = AgentInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        defaults: dict[str, Any] = {
            "description": "",
            "provider": "",
            "routing": None,
            "required_capabilities": [],
            "optional_capabilities": [],
            "default_policy": None,
            "system_prompt": "",
            "default_options": {},
            "metadata": {},
        }
        agent = agent_update(agent_id, **{**defaults, **body.validated_data})
        return Response(AgentOutputSerializer(agent).data)


class AgentDeleteApi(APIView):
    """DELETE /api/v1/agents/{agent_id} (staff)."""

    permission_classes = [StaffWritesOthersRead]

    @extend_schema(
        operation_id="agents_destroy",
        tags=[TAG],
        summary="Delete an agent manifest (staff)",
        description="Sessions naming it keep working, with settings defaults.",
        parameters=[AGENT_PATH_PARAM],
        request=None,
        responses={204: None} | error_responses(403, 404),
    )
    def delete(self, request: Request, agent_id: str) -> Response:
        agent_delete(agent_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
