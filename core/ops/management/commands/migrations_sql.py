"""`migrations_sql DIR`: every migration's SQL, one file each, for squawk (`make lint`)."""

import inspect
import io
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader

from core.db.connections import owner_connection

SQUAWK_CONFIG = ".squawk.toml"


def project_migrations() -> list[tuple[str, str]]:
    """(app label, name) of every migration whose file lives in this project, in order.

    Third-party and Django's own migrations are not ours to change, so not linted; they
    are installed under sys.prefix, which may itself be in the project (.venv).
    """
    loader = MigrationLoader(None, ignore_no_migrations=True)
    base, installed = Path(settings.BASE_DIR).resolve(), Path(sys.prefix).resolve()
    ours = []
    for key, migration in loader.disk_migrations.items():
        path = Path(inspect.getfile(type(migration))).resolve()
        if path.is_relative_to(base) and not path.is_relative_to(installed):
            ours.append(key)
    return sorted(ours)


def accepted_rules() -> dict[str, list[str]]:
    """Rules .squawk.toml accepts for one migration only, by "app.name".

    squawk's own configuration can only exclude a rule everywhere or a file entirely;
    its `squawk-ignore-file` comment, written here at the top of that migration's SQL,
    accepts a finding where it is explained and nowhere else.
    """
    path = Path(settings.BASE_DIR) / SQUAWK_CONFIG
    if not path.exists():
        return {}
    config = tomllib.loads(path.read_text())
    return {
        label: list(entry.get("accepted_rules", []))
        for label, entry in config.get("migrations", {}).items()
    }


@contextmanager
def scratch_database() -> Iterator[None]:
    """The default connection on a database of its own, migrated, dropped afterwards.

    Some operations read the catalog to write their SQL (core.db.partitions rebuilds a
    table from its live definition), so sqlmigrate needs a migrated database. A scratch
    one, made and dropped by the owner role as the test databases are, lets `make lint`
    run on a fresh clone and never depends on, or touches, the database the app uses.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    name, test = connection.settings_dict["NAME"], connection.settings_dict["TEST"]
    # The process id: two lint runs at once each get their own.
    connection.settings_dict["TEST"] = {**test, "NAME": f"migrations_sql_{os.getpid()}"}
    try:
        with owner_connection():
            connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
            try:
                yield
            finally:
                connection.creation.destroy_test_db(name, verbosity=0)
    finally:
        connection.settings_dict["TEST"] = test


class Command(BaseCommand):
    help = (
        "Write the SQL of every migration of this project's apps (sqlmigrate) to "
        "DIR/<app>/<migration>.sql, for squawk to lint. Made in a scratch database that "
        "the owner role creates, migrates and drops."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("directory", type=Path, help="Where to write the files.")

    def handle(self, *args, directory: Path, **options) -> None:
        accepted = accepted_rules()
        migrations = project_migrations()
        for stale in directory.glob("*/*.sql"):
            stale.unlink()  # a migration renamed or removed leaves no file behind
        with scratch_database():
            for app_label, name in migrations:
                out = io.StringIO()
                # A migration without SQL says so on stderr; its file is then just empty.
                call_command(
                    "sqlmigrate", app_label, name, stdout=out, stderr=io.StringIO(), no_color=True
                )
                rules = accepted.pop(f"{app_label}.{name}", [])
                header = f"-- squawk-ignore-file {', '.join(rules)}\n" if rules else ""
                target = directory / app_label / f"{name}.sql"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(header + out.getvalue())
        if accepted:
            # An entry for a migration that no longer exists would accept nothing; say so.
            raise CommandError(f"{SQUAWK_CONFIG} names unknown migrations: {', '.join(accepted)}")
        self.stdout.write(f"Wrote the SQL of {len(migrations)} migrations to {directory}.")
