"""`backup` and `restore` (core.ops.backup): a seeded database round-trips exactly, with
the files its rows name (uploads, exports), each checked by size and SHA-256.

These run pg_dump and pg_restore against the real server, so they need committed data
(transaction=True) and a database of their own to restore into, dropped afterwards.
"""

import hashlib
import json
import re
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.db.connections import owner_connection
from core.files import StoredFile
from core.ops import backup, health
from documents.models import DocumentType
from documents.services import document_create, document_version_create, project_create
from exports.services import export_create
from tests.databases import connected_to
from tests.storages import point_storages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]


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


@pytest.mark.slow
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


@pytest.fixture
def document_and_export(tenant_a):
    """An uploaded document (default storage) and a completed export (exports storage)."""
    project = project_create(tenant=tenant_a, name="Backed up")
    document = document_create(tenant=tenant_a, title="Notes", text="The bytes to keep.")
    document_version_create(
        tenant=tenant_a, project=project, document_type=DocumentType.ABOUT, content="# About"
    )
    export = export_create(tenant=tenant_a, project=project, format="markdown")
    assert export.status == "completed"
    return document, export


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_storages(settings, folder: Path) -> tuple[Path, Path]:
    """Empty storage folders, as on the machine a backup is restored to."""
    point_storages(settings, default=folder / "default", exports=folder / "exports")
    return folder / "default", folder / "exports"


def test_a_backup_holds_the_uploaded_and_exported_files_and_restore_puts_them_back(
    tmp_path, settings, backup_role_configured, restored_name, document_and_export
):
    document, export = document_and_export
    dump, output = run_backup(tmp_path / "backups")
    manifest = json.loads(backup.manifest_path(dump).read_text())
    assert manifest["files"] == {
        "default": {
            document.storage_key: {"sha256": document.sha256, "size_bytes": document.size_bytes}
        },
        "exports": {export.storage_key: {"sha256": export.sha256, "size_bytes": export.size_bytes}},
    }
    assert f"Files: 2 in {backup.files_path(dump)} (default 1, exports 1)" in output

    default, exports = new_storages(settings, tmp_path / "restored")
    out = StringIO()
    call_command("restore", dump, database=restored_name, stdout=out)

    assert sha256_of(default / document.storage_key) == document.sha256
    assert sha256_of(exports / export.storage_key) == export.sha256
    assert (
        "Files: 2 put back into the storages; all 2 files the rows name are there with their "
        "size and SHA-256." in out.getvalue()
    )


@pytest.mark.parametrize(
    ("damage", "message"), [("missing", "is missing from"), ("corrupted", "the file is damaged")]
)
def test_restore_refuses_a_backup_whose_file_is_missing_or_damaged_naming_it(
    tmp_path, settings, backup_role_configured, restored_name, document_and_export, damage, message
):
    _, export = document_and_export
    dump, _ = run_backup(tmp_path / "backups")
    held = backup.files_path(dump) / "exports" / export.storage_key
    if damage == "missing":
        held.unlink()
    else:
        data = bytearray(held.read_bytes())
        data[0] ^= 0xFF
        held.write_bytes(bytes(data))
    default, exports = new_storages(settings, tmp_path / "restored")

    with pytest.raises(CommandError, match=re.escape(f"exports:{export.storage_key}")) as failed:
        call_command("restore", dump, database=restored_name)

    assert message in str(failed.value)
    assert "Nothing was changed" in str(failed.value)
    with backup.restore_role().connect("postgres") as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [restored_name])
        assert found.fetchone() is None
    assert not default.exists() and not exports.exists()


def test_restore_fails_naming_every_file_a_restored_row_names_that_is_not_there(
    tmp_path, settings, backup_role_configured, restored_name, document_and_export
):
    document, export = document_and_export
    dump, _ = run_backup(tmp_path / "backups")
    # As a backup made before backups held files: the rows restore, their files do not.
    manifest = json.loads(backup.manifest_path(dump).read_text())
    del manifest["files"]
    backup.manifest_path(dump).write_text(json.dumps(manifest))
    new_storages(settings, tmp_path / "restored")
    out = StringIO()

    with pytest.raises(CommandError, match="2 files a row names are missing or differ"):
        call_command("restore", dump, database=restored_name, stdout=out)

    problems = [line for line in out.getvalue().splitlines() if line.startswith("file: ")]
    assert problems == [
        f"file: default:{document.storage_key} (named by documents row {document.pk}) is missing",
        f"file: exports:{export.storage_key} (named by exports row {export.pk}) is missing",
    ]


def test_a_backup_refuses_a_stored_file_that_is_not_what_its_row_says(
    tmp_path, backup_role_configured, document_and_export, file_storages
):
    document, _ = document_and_export
    (file_storages.media / document.storage_key).write_bytes(b"changed behind the row")
    with pytest.raises(CommandError, match=re.escape(f"default:{document.storage_key}")) as failed:
        run_backup(tmp_path / "backups")
    assert "has 22 bytes, the row says 18" in str(failed.value)
    assert list((tmp_path / "backups").iterdir()) == []


def test_every_model_that_names_a_stored_file_declares_it_for_the_backup():
    naming = {model for model in apps.get_models() if hasattr(model, "storage_key")}
    declared = {
        model for model in naming if isinstance(getattr(model, "STORED_FILE", None), StoredFile)
    }
    assert naming == declared
    assert {model._meta.db_table for model in naming} == {"documents", "exports"}


def test_a_storage_that_is_not_local_is_named_not_copied_and_its_objects_are_checked(
    tmp_path, settings, backup_role_configured, restored_name, tenant_a
):
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    project = project_create(tenant=tenant_a, name="Exported to an object store")
    document_version_create(
        tenant=tenant_a, project=project, document_type=DocumentType.ABOUT, content="# About"
    )
    export = export_create(tenant=tenant_a, project=project, format="markdown")
    err = StringIO()
    out = StringIO()
    call_command("backup", output_dir=tmp_path / "backups", stdout=out, stderr=err)
    dump = Path(out.getvalue().splitlines()[-1])
    manifest = json.loads(backup.manifest_path(dump).read_text())
    assert manifest["storages_not_in_backup"] == ["exports"]
    assert "exports" not in manifest["files"]
    assert "Storage 'exports' is not local: its files are not in this backup." in err.getvalue()

    # The object store keeps the export (its own backup's job): restore checks it is there.
    call_command("restore", dump, database=restored_name, stdout=StringIO())
    storages["exports"].delete(export.storage_key)
    drop_database(restored_name)
    out = StringIO()
    with pytest.raises(CommandError, match="1 files a row names are missing or differ"):
        call_command("restore", dump, database=restored_name, stdout=out)
    assert f"file: exports:{export.storage_key} (named by exports row {export.pk}) is missing" in (
        out.getvalue()
    )
