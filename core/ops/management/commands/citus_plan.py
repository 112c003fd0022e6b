"""`manage.py citus_plan`: the statements that distribute this schema on a Citus coordinator."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from core.ops.distribution import citus_plan, distribution_problems, read_tables


class Command(BaseCommand):
    help = (
        "Print, from the catalog, the statements that make the global tables reference "
        "tables and distribute every tenant table by tenant_id (docs/operations.md, 'Scaling out')."
    )

    def handle(self, *args, **options) -> None:
        with connection.cursor() as cursor:
            tables = read_tables(cursor)
        # A plan for a schema Citus would refuse is worse than none.
        if problems := distribution_problems(tables):
            raise CommandError(
                "The schema is not ready to distribute by tenant_id:\n  " + "\n  ".join(problems)
            )
        for statement in citus_plan(tables):
            self.stdout.write(statement)
