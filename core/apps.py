from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _grant_runtime_privileges(sender, using, **kwargs) -> None:
    """After every migrate (run as the owner), let the runtime role use the new tables."""
    from django.db import connections

    from core.db.connections import owner_role_name, runtime_role_name
    from core.db.roles import grant_runtime_privileges, role_exists

    runtime = runtime_role_name()
    if not runtime or runtime == owner_role_name():
        return
    with connections[using].cursor() as cursor:
        if role_exists(cursor, runtime):
            grant_runtime_privileges(cursor, runtime)


class CoreConfig(AppConfig):
    name = "core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import lookups  # noqa: F401  (registers the lookups)
        from core.db.replicas import watch_primary_writes

        post_migrate.connect(_grant_runtime_privileges, sender=self)
        # Where replicas are set, a write on the primary pins the reads that follow it.
        connection_created.connect(watch_primary_writes, dispatch_uid="core.db.replicas")
