from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "core.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from core.ops import checks  # noqa: F401  (registers the system checks)
