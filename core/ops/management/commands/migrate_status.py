"""`manage.py migrate_status` (`make migrate-status`): applied and pending migrations per app."""

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader


def migration_status(using: str = DEFAULT_DB_ALIAS) -> dict[str, dict[str, list[str]]]:
    """Per app label, in order: {"applied": [...], "pending": [...], "unknown": [...]}.

    "unknown" are migrations the database records as applied that no file defines any
    more (a renamed or deleted migration).
    """
    loader = MigrationLoader(connections[using], ignore_no_migrations=True)
    applied = set(loader.applied_migrations)
    status: dict[str, dict[str, list[str]]] = {}
    for app, name in _in_order(loader):
        entry = status.setdefault(app, {"applied": [], "pending": [], "unknown": []})
        entry["applied" if (app, name) in applied else "pending"].append(name)
    for app, name in sorted(applied - set(loader.graph.nodes)):
        status.setdefault(app, {"applied": [], "pending": [], "unknown": []})["unknown"].append(
            name
        )
    return dict(sorted(status.items()))


def _in_order(loader: MigrationLoader) -> list[tuple[str, str]]:
    """Every migration on disk, each after the ones it depends on."""
    seen: dict[tuple[str, str], None] = {}
    for leaf in sorted(loader.graph.leaf_nodes()):
        for node in loader.graph.forwards_plan(leaf):
            seen.setdefault(node, None)
    return list(seen)


class Command(BaseCommand):
    help = "Applied and pending migrations of each app, from the database's migration history."

    def handle(self, *args, **options) -> None:
        status = migration_status(options.get("database", DEFAULT_DB_ALIAS))
        width = max(len(app) for app in status)
        pending = 0
        for app, entry in status.items():
            latest = entry["applied"][-1] if entry["applied"] else "none"
            self.stdout.write(
                f"{app.ljust(width)}  {len(entry['applied']):3} applied, "
                f"{len(entry['pending'])} pending  (last applied: {latest})"
            )
            for name in entry["pending"]:
                self.stdout.write(f"{' ' * width}  pending: {name}")
            for name in entry["unknown"]:
                self.stdout.write(f"{' ' * width}  applied but no such file: {name}")
            pending += len(entry["pending"])
        if pending:
            self.stdout.write(
                self.style.WARNING(f"{pending} migration(s) not applied: run `make migrate`.")
            )
        else:
            self.stdout.write(self.style.SUCCESS("Every migration is applied."))
