"""The SSE stream route under /api/v1/ (`events.sse`)."""

from django.urls import URLPattern, URLResolver, path

from events.sse import session_events_stream

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "sessions/<str:session_id>/events/stream",
        session_events_stream,
        name="session-events-stream",
    ),
]
