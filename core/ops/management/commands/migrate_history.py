"""`manage.py migrate_history` (`make migrate-history`): applied migrations in the order they
were applied, with the time, from django_migrations."""

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections


class Command(BaseCommand):
    help = "Applied migrations, oldest first, with the time each was applied."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--app", help="only this app's migrations")

    def handle(self, *args, app: str | None = None, **options) -> None:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(
                "SELECT to_char(applied AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
                "|| ' UTC', app, name FROM django_migrations "
                "WHERE %(app)s::text IS NULL OR app = %(app)s ORDER BY applied, id",
                {"app": app},
            )
            rows = cursor.fetchall()
        if not rows:
            self.stdout.write("No migration is applied" + (f" for {app}." if app else "."))
            return
        width = max(len(row[1]) for row in rows)
        for applied, label, name in rows:
            self.stdout.write(f"{applied}  {label.ljust(width)}  {name}")
        self.stdout.write(f"{len(rows)} applied migration(s).")
