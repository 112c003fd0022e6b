"""`manage.py erase_user EMAIL --requested-by NAME [--dry-run]`."""

from __future__ import annotations

from typing import Any

from core.jobs import JobSummary, SystemJobCommand
from erasure.services import erase_user
from erasure.services._common import ErasureSummary


class Command(SystemJobCommand):
    help = (
        "Erase a person everywhere (docs/security.md, 'Erasure'): their account, "
        "memberships and grants; in every tenant their messages and decisions, their "
        "review notes, their runs' inputs and outputs, the versions they or their runs "
        "wrote (redacted), the exports of those and their own exports, and their uploads "
        "where the tenant's settings say so; their audit events keep no values. Writes one "
        "erasure receipt per tenant and one for the account, and prints them."
    )
    options_of_fields = {"email": "EMAIL", "requested_by": "--requested-by"}

    def add_job_arguments(self, parser) -> None:
        parser.add_argument(
            "email",
            metavar="EMAIL",
            help="The person's e-mail address, or their id (a receipt's subject).",
        )
        parser.add_argument(
            "--requested-by",
            required=True,
            help="Who asked for the erasure (a name or an address); kept on the receipts.",
        )

    def run(self, *, dry_run: bool, **options: Any) -> list[JobSummary]:
        receipts = erase_user(
            email=options["email"], requested_by=options["requested_by"], dry_run=dry_run
        )
        return [ErasureSummary(dry_run=dry_run, receipt=receipt) for receipt in receipts]
