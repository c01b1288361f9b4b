"""Operations routes: liveness, readiness, metrics."""

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness (database, Redis, broker) is `/readyz`."""
    return JsonResponse({"status": "ok"})


urlpatterns: list[URLPattern | URLResolver] = [path("healthz", healthz, name="healthz")]
