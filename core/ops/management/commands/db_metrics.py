"""`manage.py db_metrics` (`make db-metrics`): sizes, cache hits, connections, dead tuples
and the top statements of the database (core.ops.metrics), as settings.DATABASE_METRICS."""

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from core.ops.backup import BackupError, _role
from core.ops.metrics import write_report


class Command(BaseCommand):
    help = (
        "Table and index sizes, cache hit ratio, connections by state, dead tuples and "
        "last autovacuum, and the top statements by total time (pg_stat_statements)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--limit", type=int, default=15, help="rows per section (default 15, at least 1)"
        )

    def handle(self, *args, limit: int, **options) -> None:
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, got {limit}.")
        database = connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]
        try:
            role = _role(settings.DATABASE_METRICS, "No role to read the statistics as.")
            with role.connect(database) as conn:
                write_report(conn, self.stdout, limit=limit)
        except (BackupError, psycopg.OperationalError) as error:
            raise CommandError(f"Cannot read the database's statistics: {error}") from error
