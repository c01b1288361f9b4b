"""The SSE stream route under /api/v1/ (filled in by the streaming views)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
