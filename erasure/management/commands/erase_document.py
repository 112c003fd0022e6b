"""`manage.py erase_document ID --requested-by NAME [--tenant SLUG] [--dry-run]`."""

from __future__ import annotations

from typing import Any

from core.jobs import SystemJobCommand
from erasure.services import erase_document
from erasure.services._common import ErasureSummary


class Command(SystemJobCommand):
    help = (
        "Erase a knowledge document everywhere (docs/security.md, 'Erasure'): its file, "
        "row, chunks and embeddings; the sources that cited it keep their row without the "
        "content; the runs that used it lose their input and output, the versions they "
        "wrote are redacted, the exports holding those are removed with their files. "
        "Writes an erasure receipt and prints it."
    )
    options_of_fields = {"document": "ID", "tenant": "--tenant", "requested_by": "--requested-by"}

    def add_job_arguments(self, parser) -> None:
        parser.add_argument("document_id", metavar="ID", help="The knowledge document's id.")
        parser.add_argument(
            "--requested-by",
            required=True,
            help="Who asked for the erasure (a name or an address); kept on the receipt.",
        )
        parser.add_argument(
            "--tenant",
            metavar="SLUG",
            help="The document's tenant: refused when it is another one (a safety check).",
        )

    def run(self, *, dry_run: bool, **options: Any) -> ErasureSummary:
        receipt = erase_document(
            document_id=options["document_id"],
            requested_by=options["requested_by"],
            tenant_slug=options["tenant"],
            dry_run=dry_run,
        )
        return ErasureSummary(dry_run=dry_run, receipt=receipt)
