"""`restore FILE --database NAME`: a dump into a new or empty database, verified (core.ops.backup).

Prints every table's row count and checksum against the backup's manifest, puts the
backup's files back, and exits non-zero on any difference or on a file a row names that
is missing or not its size and SHA-256.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.db.connections import owner_role_name, runtime_role_name
from core.ops import backup


class Command(BaseCommand):
    help = "Restore a dump made by `backup` into a new database and verify every table."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path, help="The .dump file written by `backup`.")
        parser.add_argument(
            "--database", required=True, help="Name of the new (or empty) database."
        )

    def handle(self, *args, file: Path, database: str, **options) -> None:
        try:
            report = backup.restore(
                dump=file,
                dbname=database,
                owner=owner_role_name(),
                runtime_role=runtime_role_name(),
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from error
        checks = report.tables
        width = max(len(check.table) for check in checks)
        for check in checks:
            found = check.found or {"rows": "-", "checksum": "missing"}
            expected = check.expected
            verdict = (
                "ok"
                if check.ok
                else f"MISMATCH (backup: {expected['rows']} rows, {expected['checksum']})"
            )
            self.stdout.write(
                f"{check.table:<{width}}  {found['rows']:>8}  {found['checksum']}  {verdict}"
            )
        bad = [check.table for check in checks if not check.ok]
        for problem in report.file_problems:
            self.stdout.write(f"file: {problem}")
        if bad or report.file_problems:
            raise CommandError(
                f"{len(bad)} tables differ from the backup ({', '.join(bad) or 'none'}) and "
                f"{len(report.file_problems)} files a row names are missing or differ "
                f"(listed above). Database {database!r} was left for inspection; drop it "
                "before trying again."
            )
        self.stdout.write(
            f"Files: {report.files_restored} put back into the storages; all "
            f"{report.files_checked} files the rows name are there with their size and SHA-256."
        )
        self.stdout.write(f"Restored {file} into {database!r}: {len(checks)} tables verified.")
