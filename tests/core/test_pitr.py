"""Point-in-time recovery for real (core.ops.pitr, `manage.py basebackup` and `pitr`).

A throwaway server from the embedded binaries (tests/postgres_servers.py) archives its WAL
with the project's own archive_command; `basebackup` copies it, rows A are committed,
the time is noted, rows B are committed, and `pitr` recovers to that time into a new
data folder: the recovered server, started again, holds exactly rows A, is promoted and
takes writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import environ
import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from core.ops import embedded, pitr
from tests.postgres_servers import PORT, data_folder, running_server, server_user

pytestmark = pytest.mark.slow

ARCHIVE_SECONDS = 60
ROWS_PER_BATCH = 1000


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the server's user can reach (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="pitr-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700)
    user = server_user()
    if user:
        shutil.chown(path, user, user)
    return path


def connect(socket_dir: str) -> psycopg.Connection:
    return psycopg.connect(
        host=socket_dir, port=PORT, user="postgres", dbname="postgres", autocommit=True
    )


def wait_until_archived(archive: Path, segment: str) -> None:
    deadline = time.monotonic() + ARCHIVE_SECONDS
    while not (archive / segment).exists():
        assert time.monotonic() < deadline, f"{segment} was not archived"
        time.sleep(0.1)


def base_backup_of(socket_dir: str, output: Path) -> Path:
    out = StringIO()
    backup_role = {"USER": "postgres", "PASSWORD": "", "HOST": socket_dir, "PORT": str(PORT)}
    with override_settings(DATABASE_BACKUP=backup_role):
        call_command("basebackup", output_dir=output, stdout=out)
    print(out.getvalue(), end="")
    return Path(out.getvalue().splitlines()[-1])


def test_recovery_to_a_time_holds_exactly_the_rows_committed_before_it(folder):
    archive = private_folder(folder / "archive")
    recovered = folder / "recovered"
    with (
        data_folder() as data,
        running_server(data, settings=pitr.archive_settings(archive)) as socket_dir,
    ):
        with connect(socket_dir) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, batch text NOT NULL)")
        base = base_backup_of(socket_dir, folder / "basebackups")
        with connect(socket_dir) as conn:
            conn.execute(
                "INSERT INTO items SELECT g, 'A' FROM generate_series(1, %s::int) g",
                [ROWS_PER_BATCH],
            )
            (target,) = conn.execute("SELECT clock_timestamp()").fetchone()
            # Rows B commit strictly after the target, even on a coarse clock.
            time.sleep(0.01)
            conn.execute(
                "INSERT INTO items SELECT g, 'B' FROM generate_series(%s::int, %s::int) g",
                [ROWS_PER_BATCH + 1, 2 * ROWS_PER_BATCH],
            )
            # B's commit must reach the archive: recovery stops at the first commit past
            # the target, and fails if the archive ends before it.
            (segment,) = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        wait_until_archived(archive, segment)

    out = StringIO()
    call_command(
        "pitr",
        target_time=target.isoformat(),
        data_dir=recovered,
        base_backup=base,
        archive=archive,
        stdout=out,
    )
    print(out.getvalue(), end="")
    assert out.getvalue().splitlines()[-1] == str(recovered)
    assert "promoted, writable, amcheck clean" in out.getvalue()
    assert (recovered / "postgresql.auto.conf").read_text().count("recovery_target_time") == 1

    with running_server(recovered) as socket_dir, connect(socket_dir) as conn:
        rows = conn.execute("SELECT batch, count(*) FROM items GROUP BY batch").fetchall()
        (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        conn.execute("INSERT INTO items VALUES (%s, 'C')", [3 * ROWS_PER_BATCH])
        (written,) = conn.execute("SELECT count(*) FROM items WHERE batch = 'C'").fetchone()
    print(f"recovered: {rows}, in recovery: {in_recovery}, rows written after: {written}")
    assert rows == [("A", ROWS_PER_BATCH)]
    assert in_recovery is False
    assert written == 1


def test_a_recovery_the_archive_cannot_reach_fails_quoting_the_log_and_leaves_no_folder(folder):
    archive = private_folder(folder / "archive")
    with (
        data_folder() as data,
        running_server(data, settings=pitr.archive_settings(archive)) as socket_dir,
    ):
        base = base_backup_of(socket_dir, folder / "basebackups")
        with connect(socket_dir) as conn:
            conn.execute("CREATE TABLE items (id int)")
            (target,) = conn.execute("SELECT clock_timestamp()").fetchone()
        # No segment switch: what came after the base backup never reaches the archive.
    with pytest.raises(CommandError) as failed:
        call_command(
            "pitr",
            target_time=target.isoformat(),
            data_dir=folder / "recovered",
            base_backup=base,
            archive=archive,
        )
    assert "recovery ended before configured recovery target was reached" in str(failed.value)
    assert "was emptied again" in str(failed.value)
    assert not (folder / "recovered").exists()


def fake_base_backup(root: Path, finished_at: datetime) -> Path:
    """A folder shaped like a base backup: the checks that refuse bad input read no more."""
    base = root / "base-fake"
    (base / pitr.BASE_BACKUP_DATA).mkdir(parents=True)
    (base / pitr.BASE_BACKUP_DATA / "PG_VERSION").write_text("18\n")
    info = {"finished_at": finished_at.isoformat(), "archive_mode": "on"}
    (base / pitr.BASE_BACKUP_INFO).write_text(json.dumps(info))
    return base


@pytest.fixture
def archive_with_a_segment(folder) -> Path:
    archive = folder / "archive"
    archive.mkdir()
    (archive / "000000010000000000000001").write_bytes(b"\0")
    return archive


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("yesterday at noon", "is not a time"),
        ("2026-12-01T10:15:00", "has no UTC offset"),
        ((datetime.now(UTC) - timedelta(hours=2)).isoformat(), "is before the base backup"),
        ((datetime.now(UTC) + timedelta(hours=2)).isoformat(), "is in the future"),
    ],
)
def test_a_bad_target_time_is_refused_and_nothing_is_made(
    folder, archive_with_a_segment, target, message
):
    base = fake_base_backup(folder, datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(CommandError, match=message):
        call_command(
            "pitr",
            target_time=target,
            data_dir=folder / "recovered",
            base_backup=base,
            archive=archive_with_a_segment,
        )
    assert not (folder / "recovered").exists()


def test_an_empty_or_missing_archive_is_refused(folder):
    base = fake_base_backup(folder, datetime.now(UTC) - timedelta(hours=1))
    (folder / "empty").mkdir()
    for archive in (folder / "empty", folder / "missing"):
        with pytest.raises(CommandError, match="holds no archived WAL segment"):
            call_command(
                "pitr",
                target_time=datetime.now(UTC).isoformat(),
                data_dir=folder / "recovered",
                base_backup=base,
                archive=archive,
            )
    assert not (folder / "recovered").exists()


def test_a_data_folder_that_is_not_empty_is_refused_and_left_as_it_was(
    folder, archive_with_a_segment
):
    base = fake_base_backup(folder, datetime.now(UTC) - timedelta(hours=1))
    existing = folder / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="exists and is not an empty folder"):
        call_command(
            "pitr",
            target_time=datetime.now(UTC).isoformat(),
            data_dir=existing,
            base_backup=base,
            archive=archive_with_a_segment,
        )
    assert [path.name for path in existing.iterdir()] == ["keep.txt"]
    assert (existing / "keep.txt").read_text() == "mine"


def test_without_a_base_backup_before_the_target_it_says_to_take_one(
    folder, archive_with_a_segment, settings
):
    settings.BASE_BACKUP_ROOT = folder / "none-here"
    with pytest.raises(CommandError, match="No base backup under .* finished before"):
        call_command(
            "pitr",
            target_time=datetime.now(UTC).isoformat(),
            data_dir=folder / "recovered",
            archive=archive_with_a_segment,
        )


def run_archive_command(archive: Path, wal: Path) -> int:
    command = pitr.archive_command(archive).replace("%p", str(wal)).replace("%f", wal.name)
    return subprocess.run(["sh", "-c", command], capture_output=True).returncode


def test_the_archive_command_never_overwrites_a_segment_and_fails_instead(folder):
    archive = folder / "archive"
    archive.mkdir()
    segment = folder / "000000010000000000000002"
    segment.write_bytes(b"first")
    assert run_archive_command(archive, segment) == 0
    # The server retries a segment it archived before a crash: same bytes succeed.
    assert run_archive_command(archive, segment) == 0
    segment.write_bytes(b"other server")
    assert run_archive_command(archive, segment) != 0
    assert (archive / segment.name).read_bytes() == b"first"
    assert sorted(path.name for path in archive.iterdir()) == [segment.name]


def test_the_embedded_server_archives_its_wal_when_switched_on(folder):
    archive = folder / "wal-archive"
    server = embedded.ensure_running(folder, wal_archive=archive)
    try:
        with embedded._connect(server.socket_dir, "postgres") as conn:
            shown = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("archive_mode", "archive_command")
            }
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
            (segment,) = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert shown == {
            "archive_mode": "on",
            "archive_command": pitr.archive_command(archive),
        }
        wait_until_archived(archive, segment)
    finally:
        embedded.stop(folder)


def test_make_pitr_without_time_and_data_prints_its_usage():
    result = subprocess.run(
        ["make", "--no-print-directory", "pitr"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "usage: make pitr TIME=<ISO 8601 time with offset" in result.stderr


def test_the_setting_gives_the_embedded_server_its_archive_folder(settings, monkeypatch):
    settings.EMBEDDED_DB_WAL_ARCHIVE = True
    settings.WAL_ARCHIVE_ROOT = environ.Path("/srv/wal-archive")  # as env.path() gives it
    asked = {}

    def ensure_running(base_dir, **options):
        asked.update(options)
        return embedded.EmbeddedServer(
            settings.DATABASES["default"]["HOST"], Path(), postmaster_pid=os.getpid()
        )

    monkeypatch.setattr(embedded, "ensure_running", ensure_running)
    # As in a process that has not joined a server yet: start() then calls ensure_running.
    monkeypatch.setattr(embedded, "_joined", None)
    embedded.start()
    assert asked["wal_archive"] == Path("/srv/wal-archive")
    settings.EMBEDDED_DB_WAL_ARCHIVE = False
    monkeypatch.setattr(embedded, "_joined", None)
    embedded.start()
    assert asked["wal_archive"] is None
