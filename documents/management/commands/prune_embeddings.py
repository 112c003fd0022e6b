"""`manage.py prune_embeddings [--dry-run]`."""

from typing import Any

from core.jobs import SystemJobCommand
from documents.services import PruneSummary, embeddings_prune


class Command(SystemJobCommand):
    help = (
        "Delete the vectors of embedding models a tenant no longer keeps (neither searched, "
        "kept for a rollback, nor backfilled), in batches, and drop the index of a model no "
        "tenant keeps. A system job over every tenant. --dry-run lists what would go."
    )

    def run(self, *, dry_run: bool, **options: Any) -> PruneSummary:
        return embeddings_prune(dry_run=dry_run)
