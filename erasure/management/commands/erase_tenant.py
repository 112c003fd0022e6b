"""`manage.py erase_tenant SLUG --requested-by NAME [--yes]`: offboard a tenant, erasing
every row and file of it (docs/operations.md, "Offboarding a tenant").

There is no undo short of a backup, so it erases only when confirmed: `--yes`, or the
slug typed again on a terminal. Without a terminal and without `--yes` (a script, a
pipe, CI) it refuses, changing nothing. An unknown slug is refused the same way. At the
end it prints the receipt: its id and the counts per table, never any content.
"""

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from erasure.models import ErasureReceipt
from erasure.services import erase_tenant

OPTION_OF_FIELD = {"slug": "SLUG", "tenant": "SLUG", "requested_by": "--requested-by"}


class Command(BaseCommand):
    help = (
        "Erase a tenant: every row of it in every table (its memberships, retention "
        "policies and runs, audit events and the tenant itself included; users stay), "
        "then its uploaded and exported files, and write an erasure receipt. Cannot be "
        "undone; backups still hold the tenant until they expire."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="the slug of the tenant to erase")
        parser.add_argument(
            "--requested-by",
            required=True,
            help="who asked for the erasure (a name or ticket), recorded on the receipt",
        )
        parser.add_argument(
            "--yes", action="store_true", help="erase without asking (needed without a terminal)"
        )

    def handle(self, *args: Any, slug: str, requested_by: str, yes: bool, **options: Any) -> None:
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError(
                    f"Nothing was erased: no terminal to confirm erasing tenant {slug!r} on. "
                    "Confirm with --yes."
                )
            answer = input(
                f"Erase tenant {slug!r}, all its rows and files, for good? "
                "Type its slug again to go on: "
            )
            if answer.strip() != slug:
                raise CommandError("Nothing was erased.")
        try:
            receipt = erase_tenant(slug=slug, requested_by=requested_by)
        except ValidationError as error:
            raise CommandError(_refusal(error)) from error
        self._report(receipt)

    def _report(self, receipt: ErasureReceipt) -> None:
        self.stdout.write(f"Erasure receipt {receipt.pk}")
        self.stdout.write(f"  tenant        {receipt.tenant_id}")
        self.stdout.write(f"  slug sha256   {receipt.subject_sha256}")
        self.stdout.write(f"  requested by  {receipt.requested_by}")
        self.stdout.write(f"  completed at  {receipt.completed_at.isoformat()}")
        for table, count in sorted(receipt.rows_touched.items()):
            self.stdout.write(f"  {table:<28}{count:>8}")
        rows = sum(count for table, count in receipt.rows_touched.items() if table != "files")
        files = receipt.rows_touched.get("files", 0)
        self.stdout.write(self.style.SUCCESS(f"Erased {rows} rows and {files} files."))


def _refusal(error: ValidationError) -> str:
    if not hasattr(error, "message_dict"):
        return " ".join(error.messages)
    return "; ".join(
        f"{OPTION_OF_FIELD.get(field, field)}: {' '.join(messages)}"
        for field, messages in error.message_dict.items()
    )
