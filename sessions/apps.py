from django.apps import AppConfig


class AgentSessionsConfig(AppConfig):
    name = "sessions"
    label = "agent_sessions"
    verbose_name = "Agent sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sessions.audit import audit_connect_admin

        audit_connect_admin()
