from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.health import quota_note
        from core.health_notes import register_health_note

        register_health_note("usage_quotas", quota_note)
