"""ASGI entry point: Django for HTTP (API, SSE, admin), Channels for WebSockets.

`websocket`: origin check (`ws_auth.origin_validator`: Channels' allowed-hosts check, except
that non-browser clients without an `Origin` pass) -> credentials (`ws_auth.ws_auth_stack`:
token header, `?token=`, or the login cookie) -> `events.routing.websocket_urlpatterns`.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")

# Django is set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from asm_project.ws_auth import origin_validator, ws_auth_stack  # noqa: E402
from events.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validator(ws_auth_stack(URLRouter(websocket_urlpatterns))),
    }
)
