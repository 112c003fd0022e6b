"""`migrate`, run as the owner role (section 7): the runtime role cannot change the schema."""

from django.core.management.commands import migrate

from core.db import owner_connection


class Command(migrate.Command):
    def handle(self, *args, **options):
        with owner_connection(options["database"]):
            return super().handle(*args, **options)
