"""`flush`, run as the owner role: TRUNCATE is the owner's right, not the runtime role's.

Django's TransactionTestCase calls it after every test (--no-input). Django empties the
tables of managed models only; a flush without questions also empties the worker's queue
(procrastinate's tables, unmanaged models), so no job outlives the rows it names. Asked
on a terminal, the queue is left alone: empty it with procrastinate's own tools.
"""

from django.core.management.commands import flush
from django.db import connections

from core.db.connections import owner_connection

QUEUE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


class Command(flush.Command):
    def handle(self, **options):
        with owner_connection(options["database"]):
            result = super().handle(**options)
            if not options["interactive"]:
                self.empty_queue(options["database"])
            return result

    def empty_queue(self, using: str) -> None:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            if cursor.fetchone()[0]:
                cursor.execute(f"TRUNCATE {', '.join(QUEUE_TABLES)}")
