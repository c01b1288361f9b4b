from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Export spans when an OTLP endpoint is configured (web and worker processes both
        set Django up; docs/telemetry.md). Unset: nothing happens and tracing is a no-op."""
        from django.conf import settings

        from runs.telemetry import TelemetryNotInstalledError, telemetry_configure

        try:
            telemetry_configure(
                endpoint=settings.OTEL_EXPORTER_OTLP_ENDPOINT,
                traces_endpoint=settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                service_name=settings.OTEL_SERVICE_NAME,
            )
        except TelemetryNotInstalledError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
