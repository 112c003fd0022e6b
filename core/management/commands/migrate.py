"""`migrate`, run as the owner role (section 7): the runtime role cannot change the schema.

A migration that waited MIGRATION_LOCK_TIMEOUT for a lock (core.db.operations) ends
with a message that says what happened and what to do, not a driver traceback.
"""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import OperationalError
from psycopg import errors

from core.db.connections import owner_connection


class Command(migrate.Command):
    def handle(self, *args, **options):
        with owner_connection(options["database"]):
            try:
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
