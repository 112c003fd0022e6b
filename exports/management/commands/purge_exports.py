"""`purge_exports`: delete the files of expired exports and mark the rows expired."""

from django.core.management.base import BaseCommand

from exports.services import exports_purge_expired


class Command(BaseCommand):
    help = (
        "Delete the files of exports past their expiry and mark them expired, across all "
        "tenants (a logged row-level security bypass). Safe to run repeatedly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report what would be purged without changing rows or files.",
        )

    def handle(self, *args, dry_run: bool, **options) -> None:
        summary = exports_purge_expired(dry_run=dry_run)
        verb = "Would expire" if dry_run else "Expired"
        delete = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {summary.expired} export(s); {delete} {summary.files_deleted} file(s), "
            f"{summary.files_missing} already missing, {summary.files_kept} kept "
            "(still used by a live export)."
        )
