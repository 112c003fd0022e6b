"""`pitr --target-time TIME --data-dir NEW`: point-in-time recovery (core.ops.pitr).

Recovers a base backup plus the WAL archive to TIME into a new data folder, promotes it,
checks it (writable, amcheck) and stops it; prints how to serve from it.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.ops import backup, embedded, pitr


class Command(BaseCommand):
    help = "Recover a base backup and the WAL archive to a time, into a new data folder."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--target-time",
            required=True,
            help="ISO 8601 time with its UTC offset, e.g. 2026-12-01T10:15:00Z: every "
            "transaction committed up to it is recovered, none after.",
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            required=True,
            help="New (or empty) folder for the recovered server's data.",
        )
        parser.add_argument(
            "--base-backup",
            type=Path,
            default=None,
            help="Folder made by `basebackup` (default: the newest under BASE_BACKUP_ROOT "
            "that finished before the target time).",
        )
        parser.add_argument(
            "--archive",
            type=Path,
            default=None,
            help="Folder of archived WAL segments (default: WAL_ARCHIVE_ROOT, var/wal-archive).",
        )
        parser.add_argument(
            "--superuser",
            default=embedded.SUPERUSER,
            help="A superuser of the backed-up server, for the checks (default: postgres).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=600,
            help="Seconds to wait for the recovery to finish (default 600).",
        )

    def handle(self, *args, target_time: str, data_dir: Path, **options) -> None:
        try:
            recovery = pitr.recover(
                base_backup=options["base_backup"],
                base_backup_root=Path(settings.BASE_BACKUP_ROOT),
                archive=options["archive"] or Path(settings.WAL_ARCHIVE_ROOT),
                target=pitr.parse_target_time(target_time),
                data_dir=data_dir,
                superuser=options["superuser"],
                timeout=options["timeout"],
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from error
        for line in recovery.log:
            self.stdout.write(f"  server: {line}")
        replayed = recovery.last_replayed.isoformat() if recovery.last_replayed else "none"
        self.stdout.write(
            f"Recovered {recovery.base_backup} to {recovery.target.isoformat()} "
            f"(last transaction replayed: {replayed}) on timeline {recovery.timeline}: "
            f"promoted, writable, amcheck clean ({recovery.indexes_checked} indexes, "
            f"{recovery.tables_checked} tables in {', '.join(recovery.databases)})."
        )
        self.stdout.write(
            "The server is stopped; its WAL archiving is off (archive_mode in "
            "postgresql.auto.conf). To serve from it with the embedded server: make db-stop, "
            f"move var/pgdata aside, move {recovery.data_dir} to var/pgdata, then any "
            f"command. Elsewhere: pg_ctl start -D {recovery.data_dir}."
        )
        self.stdout.write(str(recovery.data_dir))
