"""`manage.py partitions --ahead N [--retain-months N]`: agent_executions' monthly partitions."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.services import execution_history_retain, execution_partitions_ensure


class Command(BaseCommand):
    help = (
        "Create agent_executions' monthly partitions from this month to N months ahead "
        "(idempotent), and with --retain-months remove whole months of run history older "
        "than the last N months (docs/operations.md, 'Partitions and retention'). Runs as "
        "the owner."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--ahead", type=int, default=3, help="months to create after this one (default 3)"
        )
        parser.add_argument(
            "--retain-months",
            type=int,
            help="keep this many months, this one included; remove the older ones",
        )

    def handle(self, *args, ahead: int, retain_months: int | None, **options) -> None:
        try:
            created = execution_partitions_ensure(ahead=ahead)
            removed = (
                execution_history_retain(months=retain_months) if retain_months is not None else {}
            )
        except ValidationError as error:
            raise CommandError(
                " ".join(
                    f"--{k.replace('_', '-')}: {' '.join(v)}" for k, v in error.message_dict.items()
                )
            ) from error
        self.stdout.write(f"created: {', '.join(created) or 'none (all present)'}")
        if retain_months is not None:
            shown = ", ".join(f"{table} {count}" for table, count in sorted(removed.items()))
            self.stdout.write(f"removed: {shown or 'nothing older than the months kept'}")
