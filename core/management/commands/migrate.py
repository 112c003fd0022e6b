"""`migrate`, run as the owner role (section 7): the runtime role cannot change the schema.

A migration that waited MIGRATION_LOCK_TIMEOUT for a lock (core.db.operations) ends
with a message that says what happened and what to do, not a driver traceback.

On a Citus coordinator, the worker's queue (procrastinate's migrations) is migrated first
with Citus's DDL propagation off: its tables, types and functions stay on the coordinator
(core.ops.distribution, COORDINATOR_TABLES), and its first migration's
`CREATE EXTENSION IF NOT EXISTS plpgsql`, a no-op here, would otherwise be sent to every
worker, where the owner does not own plpgsql and it fails.
"""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import OperationalError, connections
from psycopg import errors

from core.db.backend.base import CITUS_PRESENT_SQL
from core.db.connections import owner_connection

QUEUE_APP = "procrastinate"


class Command(migrate.Command):
    def handle(self, *args, **options):
        with owner_connection(options["database"]):
            try:
                if not options["app_label"] and self._on_citus(options["database"]):
                    self._migrate_queue_locally(**options)
                return super().handle(*args, **options)
            except OperationalError as error:
                if not isinstance(error.__cause__, errors.LockNotAvailable):
                    raise
                raise CommandError(
                    "The migration being applied gave up after waiting "
                    f"{settings.MIGRATION_LOCK_TIMEOUT} (MIGRATION_LOCK_TIMEOUT) for a lock "
                    "that another session holds; it was rolled back, and the migrations "
                    "before it stay applied. Find the blocking session (pg_stat_activity, "
                    "pg_locks), then run migrate again, at a quieter moment or with a longer "
                    f"MIGRATION_LOCK_TIMEOUT. ({error})"
                ) from error

    def _on_citus(self, using: str) -> bool:
        with connections[using].cursor() as cursor:
            cursor.execute(f"SELECT {CITUS_PRESENT_SQL}")
            return bool(cursor.fetchone()[0])

    def _migrate_queue_locally(self, **options) -> None:
        with connections[options["database"]].cursor() as cursor:
            cursor.execute("SET citus.enable_ddl_propagation TO off")
        try:
            super().handle(**{**options, "app_label": QUEUE_APP, "migration_name": None})
        finally:
            with connections[options["database"]].cursor() as cursor:
                cursor.execute("RESET citus.enable_ddl_propagation")
