"""`manage.py purge_deleted [--days N] [--apply]`: remove long soft-deleted projects."""

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from documents.services import documents_sweep_orphan_files, projects_purge_deleted

DEFAULT_DAYS = 30


class Command(BaseCommand):
    help = (
        "Delete projects soft-deleted more than N days ago, with their versions, agent "
        "executions and exports, in every tenant, and the uploaded files no knowledge "
        "document points to any more. A dry run unless --apply is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            help=f"Purge projects deleted more than this many days ago (>= 0, default "
            f"{DEFAULT_DAYS}).",
        )
        parser.add_argument(
            "--apply", action="store_true", help="Delete them (default: only list them)."
        )

    def handle(self, *args, days: int, apply: bool, **options) -> None:
        if days < 0:
            raise CommandError(f"--days must be 0 or more, not {days}.")
        try:
            summary = projects_purge_deleted(older_than=timedelta(days=days), apply=apply)
            sweep = documents_sweep_orphan_files(dry_run=not apply)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        verb = "Deleted" if apply else "Would delete"
        self.stdout.write(
            f"{verb} {summary.total_projects} project(s) soft-deleted before "
            f"{summary.cutoff.isoformat()}."
        )
        for slug, count in summary.projects_by_tenant.items():
            self.stdout.write(f"  tenant {slug}: {count} project(s)")
        for label, count in sorted(summary.rows_by_model.items()):
            self.stdout.write(f"  {label}: {count} row(s)")
        self.stdout.write(
            f"{verb} {sweep.files_deleted} orphaned upload file(s) in "
            f"{len(sweep.orphan_folders)} folder(s) without a document "
            f"({sweep.recent_folders_kept} recent folder(s) kept)."
        )
        if options["verbosity"] > 1:
            for folder in sweep.orphan_folders:
                self.stdout.write(f"  {folder}")
        if not apply:
            self.stdout.write("Dry run: nothing was deleted. Run again with --apply to delete.")
        else:
            self.stdout.write(self.style.SUCCESS("Done."))
