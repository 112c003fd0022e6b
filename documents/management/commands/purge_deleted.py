"""`manage.py purge_deleted [--days N] [--dry-run]`: remove long soft-deleted projects."""

from typing import Any

from core.files import OrphanSweep
from core.jobs import JobSummary, SystemJobCommand, days_argument
from documents.services import documents_sweep_orphan_files, projects_purge_deleted


class Command(SystemJobCommand):
    help = (
        "Delete projects soft-deleted more than N days ago (default: the "
        "PURGE_DELETED_PROJECTS_AFTER_DAYS setting), with their versions, agent executions "
        "and exports, in every tenant, and the uploaded files no knowledge document points "
        "to any more. --dry-run lists what would go."
    )
    options_of_fields = {"older_than": "--days", "grace": "ORPHAN_FILE_GRACE_SECONDS"}

    def add_job_arguments(self, parser) -> None:
        parser.add_argument(
            "--days",
            type=days_argument,
            help="Purge projects deleted more than this many days ago (0 or more; default "
            "the PURGE_DELETED_PROJECTS_AFTER_DAYS setting).",
        )

    def run(self, *, dry_run: bool, **options: Any) -> list[JobSummary]:
        return [
            projects_purge_deleted(older_than=options["days"], dry_run=dry_run),
            documents_sweep_orphan_files(dry_run=dry_run),
        ]

    def details(self, summaries: list[JobSummary]) -> list[str]:
        return [
            folder
            for summary in summaries
            if isinstance(summary, OrphanSweep)
            for folder in summary.orphan_folders
        ]
