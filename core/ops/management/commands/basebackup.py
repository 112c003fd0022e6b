"""`basebackup`: a base backup for point-in-time recovery (core.ops.pitr).

The last line printed is the base backup's folder, so scripts can take it with `tail -1`.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.ops import backup, pitr


class Command(BaseCommand):
    help = "Copy the running server's data folder (pg_basebackup) for `pitr` to start from."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--output-dir",
            type=Path,
            default=None,
            help="Folder to make the base backup in (default: BASE_BACKUP_ROOT, var/basebackups).",
        )

    def handle(self, *args, output_dir: Path | None, **options) -> None:
        try:
            folder = pitr.base_backup(
                role=backup.backup_role(),
                folder=output_dir or Path(settings.BASE_BACKUP_ROOT),
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from error
        base = pitr.read_base_backup(folder)
        self.stdout.write(
            f"Base backup finished at {base.finished_at.isoformat()}: `pitr` can recover "
            "to any later time the WAL archive covers."
        )
        if base.archive_mode == "off":
            self.stderr.write(
                "WAL archiving is off on this server, so this base backup recovers only to "
                "its own end. Turn it on (EMBEDDED_DB_WAL_ARCHIVE=true for the embedded "
                "server, docs/operations.md 'Point-in-time recovery')."
            )
        self.stdout.write(str(folder))
