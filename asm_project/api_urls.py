"""REST API routes under /api/v1/ (docs/api.md). The SSE stream is in `events.stream_urls`.

Each operation is its own APIView (`sessions/api.py`, `runs/api.py`, `events/api.py`). Two
paths carry two operations each (list and create); their route classes below combine the
two views, each of which keeps its own handler, serializers and schema.

Anything else under /api/v1/ is a 404 in the error envelope (whatever DEBUG says).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from asm_core.errors import AsmError
from asm_project.errors import error_response
from events.api import EventListApi
from runs.api import (
    ProviderListApi,
    RunCancelApi,
    RunDetailApi,
    RunListApi,
    RunOnceApi,
    RunSubmitApi,
    RunWaitApi,
    SessionCancelApi,
)
from runs.usage_api import UsageApi
from sessions.agent_api import (
    AgentCreateApi,
    AgentDeleteApi,
    AgentDetailApi,
    AgentListApi,
    AgentUpdateApi,
)
from sessions.api import (
    SessionActivateApi,
    SessionCompleteApi,
    SessionCreateApi,
    SessionDetailApi,
    SessionFailApi,
    SessionListApi,
    SessionPauseApi,
    SessionResumeApi,
)
from sessions.audit_api import AuditListApi
from sessions.continuity_api import SessionCompactApi, SessionForkApi


class SessionsRoute(SessionListApi, SessionCreateApi):
    """/sessions: GET lists (`SessionListApi`), POST creates (`SessionCreateApi`)."""


class SessionRunsRoute(RunListApi, RunSubmitApi):
    """/sessions/{id}/runs: GET lists (`RunListApi`), POST submits (`RunSubmitApi`)."""


class AgentsRoute(AgentListApi, AgentCreateApi):
    """/agents: GET lists (`AgentListApi`), POST creates (`AgentCreateApi`)."""


class AgentRoute(AgentDetailApi, AgentUpdateApi, AgentDeleteApi):
    """/agents/{agent_id}: GET, PATCH/PUT, DELETE (`AgentDetailApi`, `AgentUpdateApi`,
    `AgentDeleteApi`)."""


@csrf_exempt  # else an unsafe method is refused by CSRF (an HTML 403) before the 404
def api_not_found(request: HttpRequest, unmatched: str = "") -> HttpResponse:
    return error_response(AsmError("not_found", f"No API endpoint at {request.path}"))


urlpatterns: list[URLPattern | URLResolver] = [
    path("sessions", SessionsRoute.as_view(), name="session-list"),
    path("sessions/<uuid:session_id>", SessionDetailApi.as_view(), name="session-detail"),
    path(
        "sessions/<uuid:session_id>/activate",
        SessionActivateApi.as_view(),
        name="session-activate",
    ),
    path("sessions/<uuid:session_id>/pause", SessionPauseApi.as_view(), name="session-pause"),
    path("sessions/<uuid:session_id>/resume", SessionResumeApi.as_view(), name="session-resume"),
    path(
        "sessions/<uuid:session_id>/complete",
        SessionCompleteApi.as_view(),
        name="session-complete",
    ),
    path("sessions/<uuid:session_id>/fail", SessionFailApi.as_view(), name="session-fail"),
    path("sessions/<uuid:session_id>/compact", SessionCompactApi.as_view(), name="session-compact"),
    path("sessions/<uuid:session_id>/fork", SessionForkApi.as_view(), name="session-fork"),
    path("sessions/<uuid:session_id>/cancel", SessionCancelApi.as_view(), name="session-cancel"),
    path("sessions/<uuid:session_id>/runs", SessionRunsRoute.as_view(), name="session-runs"),
    path("sessions/<uuid:session_id>/events", EventListApi.as_view(), name="session-events"),
    path("runs/<uuid:run_id>", RunDetailApi.as_view(), name="run-detail"),
    path("runs/<uuid:run_id>/cancel", RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<uuid:run_id>/wait", RunWaitApi.as_view(), name="run-wait"),
    path("run", RunOnceApi.as_view(), name="run-once"),
    path("providers", ProviderListApi.as_view(), name="provider-list"),
    path("agents", AgentsRoute.as_view(), name="agent-list"),
    path("agents/<path:agent_id>", AgentRoute.as_view(), name="agent-detail"),
    path("usage", UsageApi.as_view(), name="usage"),
    path("audit", AuditListApi.as_view(), name="audit-list"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^(?P<unmatched>.*)$", api_not_found, name="api-not-found"),
]
