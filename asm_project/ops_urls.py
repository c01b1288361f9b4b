"""Operations routes: liveness, readiness, metrics (views in `asm_project.ops`)."""

from django.urls import URLPattern, URLResolver, path

from asm_project import ops

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]
