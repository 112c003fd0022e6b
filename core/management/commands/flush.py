"""`flush`, run as the owner role: TRUNCATE is the owner's right, not the runtime role's.

Django's TransactionTestCase calls it after every test.
"""

from django.core.management.commands import flush

from core.db.connections import owner_connection


class Command(flush.Command):
    def handle(self, **options):
        with owner_connection(options["database"]):
            return super().handle(**options)
