"""URL wiring. Each surface lives with its app; this file only mounts them.

- `/api/v1/` REST API (`asm_project.api_urls`), the SSE stream (`events.stream_urls`),
  the OpenAPI schema and docs page;
- `/healthz`, `/readyz`, `/metrics` (`asm_project.ops`);
- `/admin/` the operator admin and console.
WebSocket routes are in `events/routing.py`, mounted by `asm_project/asgi.py`.
"""

from django.contrib import admin
from django.urls import include, path

handler404 = "asm_project.errors.handler404"
handler500 = "asm_project.errors.handler500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("events.stream_urls")),
    path("api/v1/", include("asm_project.api_urls")),
    path("", include("asm_project.ops_urls")),
]
