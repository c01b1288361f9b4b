"""WebSocket routes (mounted by `asm_project/asgi.py` under the origin and auth middleware)."""

from django.urls import URLPattern, re_path

from events.consumers import SessionEventsConsumer

websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^ws/sessions/(?P<session_id>[^/]+)/events/?$", SessionEventsConsumer.as_asgi()),
]
