"""`purge_exports [--dry-run]`: delete the files of expired exports and mark the rows
expired, fail the builds that died, and sweep the folders of exports that no longer exist."""

from typing import Any

from core.jobs import JobSummary, SystemJobCommand
from exports.services import exports_purge_expired


class Command(SystemJobCommand):
    help = (
        "Delete the files of exports past their expiry and mark them expired, mark failed "
        "the exports left pending or running past EXPORT_BUILD_LEASE_SECONDS (a build that "
        "died), then delete the folders of exports that no longer exist (deleted or rolled "
        "back) once untouched for ORPHAN_FILE_GRACE_SECONDS, across all tenants (a logged "
        "row-level security bypass). Safe to run repeatedly; --dry-run changes nothing."
    )

    def run(self, *, dry_run: bool, **options: Any) -> JobSummary:
        return exports_purge_expired(dry_run=dry_run)
