"""`purge_exports`: delete the files of expired exports and mark the rows expired, and
sweep the folders of exports that no longer exist."""

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from exports.services import ORPHAN_GRACE, exports_purge_expired

GRACE = f"{ORPHAN_GRACE // timedelta(minutes=1)} minutes"


class Command(BaseCommand):
    help = (
        "Delete the files of exports past their expiry and mark them expired, then delete "
        "the folders of exports that no longer exist (deleted or rolled back) once untouched "
        f"for {GRACE}, across all tenants (a logged row-level security bypass). "
        "Safe to run repeatedly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report what would be purged without changing rows or files.",
        )

    def handle(self, *args, dry_run: bool, **options) -> None:
        try:
            summary = exports_purge_expired(dry_run=dry_run)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        verb = "Would expire" if dry_run else "Expired"
        delete = "would delete" if dry_run else "deleted"
        sweep = "Would sweep" if dry_run else "Swept"
        self.stdout.write(
            f"{verb} {summary.expired} export(s); {delete} {summary.files_deleted} file(s), "
            f"{summary.files_missing} already missing, {summary.files_kept} kept "
            "(still used by a live export)."
        )
        self.stdout.write(
            f"{sweep} {summary.orphans_deleted} orphaned folder(s) "
            f"({summary.orphan_files_deleted} file(s)) of exports that no longer exist; "
            f"{summary.orphans_kept} kept (changed within the last {GRACE})."
        )
