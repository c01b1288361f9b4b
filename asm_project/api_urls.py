"""REST API routes under /api/v1/ (filled in by the API views)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
