"""`backup` and `restore` (core.ops.backup): a seeded database round-trips exactly.

These run pg_dump and pg_restore against the real server, so they need committed data
(transaction=True) and a database of their own to restore into, dropped afterwards.
"""

import json
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.db.connections import owner_connection
from core.ops import backup, health
from tests.databases import connected_to
from tests.storages import point_storages

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def file_storages(tmp_path, settings):
    """The seed's uploads and exports, and the health check's probe file, stay in tmp."""
    point_storages(settings, default=tmp_path / "default", exports=tmp_path / "exports")


@pytest.fixture
def backup_role_configured():
    if not settings.DATABASE_BACKUP.get("USER"):
        pytest.skip("no backup role: set DATABASE_BACKUP_URL as docs/operations.md 'Backups' says")


def drop_database(name: str) -> None:
    # As the restore role (the superuser on the embedded server): FORCE must be allowed to
    # end a runtime-role session still closing on that database.
    with backup.restore_role().connect("postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def restored_name():
    name = f"{connection.settings_dict['NAME']}_restored"
    drop_database(name)
    yield name
    drop_database(name)


def run_backup(folder: Path) -> tuple[Path, str]:
    out = StringIO()
    call_command("backup", output_dir=folder, stdout=out)
    output = out.getvalue()
    return Path(output.splitlines()[-1]), output


def test_a_seeded_database_round_trips_with_equal_rows_and_checksums(
    tmp_path, backup_role_configured, restored_name
):
    call_command("seed", stdout=StringIO())
    dump, _ = run_backup(tmp_path / "backups")
    manifest = json.loads(backup.manifest_path(dump).read_text())
    assert manifest["tables"]["document_versions"]["rows"] > 0
    assert manifest["tables"]["chunks"]["rows"] > 0

    out = StringIO()
    call_command("restore", dump, database=restored_name, stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[-1] == (
        f"Restored {dump} into {restored_name!r}: {len(manifest['tables'])} tables verified."
    )
    for table, expected in manifest["tables"].items():
        (line,) = [line for line in lines if line.split()[0] == table]
        assert line.split() == [table, str(expected["rows"]), expected["checksum"], "ok"]
    with connected_to(restored_name):
        call_command("migrate", check=True, verbosity=0)
        results = {result.check.key: result.error for result in health.run_checks()}
    assert results == {name: None for name in results}


def test_the_last_line_of_a_backup_is_the_dump_beside_its_manifest(
    tmp_path, backup_role_configured
):
    dump, output = run_backup(tmp_path)
    assert dump.parent == tmp_path and dump.suffix == ".dump" and dump.is_file()
    manifest = json.loads(backup.manifest_path(dump).read_text())
    assert manifest["sha256"] in output
    assert manifest["dump"] == dump.name


def test_a_backup_role_subject_to_row_level_security_is_refused_before_dumping(tmp_path, settings):
    # The owner is subject to FORCE ROW LEVEL SECURITY: its dump would hold no tenant rows.
    settings.DATABASE_BACKUP = {
        key: settings.DATABASE_OWNER[key] for key in ("USER", "PASSWORD", "HOST", "PORT")
    }
    with pytest.raises(CommandError, match="is subject to row-level security"):
        run_backup(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_restore_refuses_a_database_that_is_not_empty(tmp_path, backup_role_configured):
    dump, _ = run_backup(tmp_path)
    with pytest.raises(CommandError, match="exists and is not empty"):
        call_command("restore", dump, database=connection.settings_dict["NAME"])


def test_restore_refuses_a_damaged_dump(tmp_path, backup_role_configured, restored_name):
    dump, _ = run_backup(tmp_path)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="does not match its manifest's SHA-256"):
        call_command("restore", dump, database=restored_name)


def test_health_fails_on_a_database_without_the_leakproof_marks(restored_name):
    # template0 is pristine: no extension, no marks, as a careless restore would leave.
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{restored_name}" TEMPLATE template0')
    with connected_to(restored_name), pytest.raises(health.ServiceUnavailable) as failed:
        health.LeakproofMarks().run()
    assert str(failed.value).startswith(
        "Unavailable: LEAKPROOF marks missing on arraycontains(anyarray, anyarray), "
        "arrayoverlap(anyarray, anyarray), jsonb_contains(jsonb, jsonb), "
        "texticlike(text, text), ts_match_vq(tsvector, tsquery)"
    )


def test_make_restore_without_file_and_database_prints_its_usage():
    result = subprocess.run(
        ["make", "--no-print-directory", "restore"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "usage: make restore FILE=var/backups/<name>.dump DB=<new database name>" in (
        result.stderr
    )
