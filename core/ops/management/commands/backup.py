"""`backup`: a custom-format dump of the database and the local storages' files, with a
checksum manifest (core.ops.backup).

The last line printed is the dump's path, so scripts can take it with `tail -1`.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from core.ops import backup


class Command(BaseCommand):
    help = (
        "Dump the database (every tenant's rows) and copy the files its rows name, with a "
        "manifest of per-table checksums and per-file SHA-256."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--output-dir",
            type=Path,
            default=None,
            help="Folder for the dump and its manifest (default: BACKUP_ROOT, var/backups).",
        )

    def handle(self, *args, output_dir: Path | None, **options) -> None:
        dbname = connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]
        try:
            dump = backup.backup(dbname=dbname, folder=output_dir or Path(settings.BACKUP_ROOT))
        except backup.BackupError as error:
            raise CommandError(str(error)) from error
        manifest = backup.read_manifest(dump)
        rows = sum(table["rows"] for table in manifest["tables"].values())
        files = {alias: len(entries) for alias, entries in manifest["files"].items()}
        self.stdout.write(
            f"{len(manifest['tables'])} tables, {rows} rows, {manifest['size_bytes']} bytes; "
            f"sha256 {manifest['sha256']}; manifest {backup.manifest_path(dump)}"
        )
        self.stdout.write(
            f"Files: {sum(files.values())} in {backup.files_path(dump)} "
            f"({', '.join(f'{alias} {count}' for alias, count in files.items()) or 'none'})"
        )
        for alias in manifest["storages_not_in_backup"]:
            self.stderr.write(
                f"Storage {alias!r} is not local: its files are not in this backup. Back it "
                "up with its own means (versioning, snapshots; docs/operations.md 'Backups')."
            )
        self.stdout.write(str(dump))
