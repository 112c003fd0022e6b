"""`manage.py partitions [--ahead N] [--retain-months N] [--dry-run]`: the monthly
partitions of agent_executions, the audit trail and the search log."""

from typing import Any

from agents.services import (
    PartitionsSummary,
    execution_history_retain,
    execution_partitions_ensure,
)
from core.jobs import SystemJobCommand


class Command(SystemJobCommand):
    help = (
        "Create the monthly partitions of agent_executions, the audit trail and the search "
        "log (search_queries) from this month to N months ahead "
        "(idempotent), and with --retain-months remove whole months of run history older "
        "than the last N months (docs/operations.md, 'Partitions and retention'). Runs as "
        "the owner. --dry-run does it in a transaction it rolls back and reports what it did."
    )
    options_of_fields = {"ahead": "--ahead", "retain_months": "--retain-months"}

    def add_job_arguments(self, parser) -> None:
        parser.add_argument(
            "--ahead", type=int, default=3, help="months to create after this one (default 3)"
        )
        parser.add_argument(
            "--retain-months",
            type=int,
            help="keep this many months, this one included; remove the older ones",
        )

    def run(self, *, dry_run: bool, **options: Any) -> PartitionsSummary:
        ahead: int = options["ahead"]
        retain_months: int | None = options["retain_months"]
        created = execution_partitions_ensure(ahead=ahead, dry_run=dry_run)
        removed = (
            execution_history_retain(months=retain_months, dry_run=dry_run)
            if retain_months is not None
            else None
        )
        return PartitionsSummary(dry_run=dry_run, created=created, removed=removed)
