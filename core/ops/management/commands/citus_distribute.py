"""`manage.py citus_distribute [--dry-run]`: distribute this database on its Citus coordinator."""

from django.core.management.base import CommandError

from core.jobs import SystemJobCommand
from core.ops.citus import DistributionRefused, DistributionSummary, distribute_database


class Command(SystemJobCommand):
    help = (
        "Make the global tables reference tables and distribute every tenant table by "
        "tenant_id, co-located, in one transaction (docs/operations.md, 'Scaling out with "
        "Citus'). Refuses, changing nothing, without Citus or when already distributed."
    )

    def run(self, *, dry_run: bool, **options) -> DistributionSummary:
        try:
            return distribute_database(dry_run=dry_run)
        except DistributionRefused as refusal:
            raise CommandError(f"{refusal} Nothing was changed.") from refusal
