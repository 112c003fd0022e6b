"""`backup`: a custom-format dump of the database, with a checksum manifest (core.ops.backup).

The last line printed is the dump's path, so scripts can take it with `tail -1`.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from core.ops import backup


class Command(BaseCommand):
    help = "Dump the database (every tenant's rows) with a manifest of per-table checksums."

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
        self.stdout.write(
            f"{len(manifest['tables'])} tables, {rows} rows, {manifest['size_bytes']} bytes; "
            f"sha256 {manifest['sha256']}; manifest {backup.manifest_path(dump)}"
        )
        self.stdout.write(str(dump))
