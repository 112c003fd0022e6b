"""Point-in-time recovery: WAL archiving, base backups and `manage.py pitr` (docs/operations.md).

A dump (core.ops.backup) restores the moment it was taken; point-in-time recovery restores
any moment since a base backup: the server copies every finished WAL segment into an
archive (`archive_command`), `base_backup` copies the data folder while the server runs
(`pg_basebackup`), and `recover` puts that copy into a new data folder and replays the
archive up to a target time. PostgreSQL does the replay only when the folder holds
`recovery.signal` and `restore_command` says how to fetch archived segments: without
them a copied base backup starts as an ordinary server holding only the base backup and
the log says no more than "redo done". `recovery_target_action` defaults to pause (a
read-only server waiting for pg_wal_replay_resume()), so it is set to promote, and the
result is checked before it is handed over: promoted, writable, amcheck clean.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from core.db.connections import one_row
from core.ops.backup import BackupError, Role, client_program, run_program

logger = logging.getLogger(__name__)

# A WAL segment's name: timeline, log and segment numbers, 8 hex digits each.
WAL_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
BASE_BACKUP_INFO = "basebackup.json"
# The copy of the data folder inside a base backup's folder.
BASE_BACKUP_DATA = "data"
# What `recover` adds to the new folder's postgresql.auto.conf (read after every other
# configuration file, so these win over the copied postgresql.conf and its includes).
RECOVERY_CONF_HEADER = "# Point-in-time recovery (manage.py pitr, core/pitr.py)."
# A recovered server must not copy its new timeline into the archive it came from.
RECOVERED_SETTINGS = {"archive_mode": "off"}
# The recovered server listens only on a socket in a private folder, on this port.
VERIFY_PORT = 5432
# The server's log lines that tell how the recovery went, shown by `manage.py pitr`.
RECOVERY_LOG_LINES = (
    "starting point-in-time recovery",
    "consistent recovery state",
    "recovery stopping",
    "selected new timeline",
    "archive recovery complete",
)


def _shell_path(path: Path) -> str:
    # `%` starts a placeholder in archive_command and restore_command; `%%` is a `%`.
    return shlex.quote(str(path)).replace("%", "%%")


def archive_command(archive: Path) -> str:
    """Copy segment %p to `archive`/%f; never overwrite, exit non-zero on any failure.

    PostgreSQL retries a segment until the command succeeds and only then recycles it,
    so a failure costs disk in pg_wal, never data. A segment already archived with the
    same bytes (the server retries after a crash between copy and bookkeeping) succeeds;
    other bytes under the same name fail: two servers must never share an archive. The
    copy is written under a temporary name, flushed, then linked: `ln` refuses an
    existing name, so a half-copied segment never carries a real name.
    """
    folder = _shell_path(archive)
    return (
        f'f={folder}/%f; if test -e "$f"; then cmp -s %p "$f"; '
        f'else cp %p "$f.partial" && sync "$f.partial" && ln "$f.partial" "$f" '
        f'&& rm "$f.partial"; fi'
    )


def restore_command(archive: Path) -> str:
    """Fetch archived segment %f to %p; non-zero when it is not there (end of archive)."""
    return f"cp {_shell_path(archive)}/%f %p"


def archive_settings(archive: Path) -> dict[str, str]:
    """The server settings that archive every WAL segment into `archive` (unquoted)."""
    return {
        "archive_mode": "on",
        "archive_command": archive_command(archive),
        # A quiet server would keep its last commits in a half-filled segment, out of
        # the archive, indefinitely: switch to the next segment after 5 minutes.
        "archive_timeout": "5min",
    }


def conf_string(value: str) -> str:
    """`value` as a quoted postgresql.conf string (quotes doubled, backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def archived_segments(archive: Path) -> list[str]:
    if not archive.is_dir():
        return []
    return sorted(path.name for path in archive.iterdir() if WAL_SEGMENT.match(path.name))


def _server_user() -> str | None:
    from core.ops import embedded

    return embedded.system_user()


def _give_to_server_user(folder: Path) -> None:
    """As root, hand `folder` and all it holds to the user the server runs as."""
    from core.ops import embedded

    user = embedded.prepare_for_system_user(folder)
    if user is None:
        return
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            shutil.chown(os.path.join(root, name), user, user)


# --- Base backups ---------------------------------------------------------------


def base_backup(*, role: Role, folder: Path) -> Path:
    """A base backup of the server `role` reaches, in a new folder under `folder`.

    The role needs the REPLICATION attribute (the embedded server's superuser has it).
    The folder holds `data/` (pg_basebackup's plain copy with the WAL it needs and its
    backup_manifest) and `basebackup.json` (when it started and finished, by the
    server's clock: recovery can target any time after `finished_at`).
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"base-{stamp}"
    target.mkdir(parents=True)
    try:
        with role.connect("postgres", autocommit=True) as conn:
            (started_at,) = one_row(conn.execute("SELECT clock_timestamp()"))
            (archive_mode,) = one_row(conn.execute("SHOW archive_mode"))
            (server_version,) = one_row(conn.execute("SHOW server_version"))
            conninfo, env = role.client_env("postgres")
            run_program(
                [client_program("pg_basebackup"), "--dbname", conninfo]
                + ["--pgdata", str(target / BASE_BACKUP_DATA), "--wal-method=stream"]
                + ["--checkpoint=fast", "--no-password"],
                env,
            )
            (finished_at,) = one_row(conn.execute("SELECT clock_timestamp()"))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    info = {
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "server_version": server_version,
        "archive_mode": archive_mode,
    }
    (target / BASE_BACKUP_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return target


@dataclass(frozen=True)
class BaseBackup:
    folder: Path
    finished_at: datetime
    archive_mode: str


def read_base_backup(folder: Path) -> BaseBackup:
    info_file = folder / BASE_BACKUP_INFO
    if not (folder / BASE_BACKUP_DATA / "PG_VERSION").is_file() or not info_file.is_file():
        raise BackupError(
            f"{folder} is not a base backup made by `manage.py basebackup` (it needs "
            f"{BASE_BACKUP_DATA}/PG_VERSION and {BASE_BACKUP_INFO})."
        )
    try:
        info = json.loads(info_file.read_text())
        finished_at = datetime.fromisoformat(info["finished_at"])
    except (OSError, ValueError, KeyError) as error:
        raise BackupError(f"{info_file} is unreadable: {error}") from error
    return BaseBackup(folder, finished_at, info.get("archive_mode", ""))


def newest_base_backup(root: Path, *, before: datetime) -> BaseBackup:
    """The base backup under `root` that finished last, at or before `before`."""
    found = []
    for folder in sorted(root.glob("base-*")) if root.is_dir() else []:
        try:
            found.append(read_base_backup(folder))
        except BackupError:
            logger.warning("skipping %s: not a complete base backup", folder)
    usable = [backup for backup in found if backup.finished_at <= before]
    if not usable:
        raise BackupError(
            f"No base backup under {root} finished before {before.isoformat()}: take one "
            "with `make basebackup` (it covers times after it finishes), or name one with "
            "--base-backup. Nothing was changed."
        )
    return max(usable, key=lambda backup: backup.finished_at)


# --- Recovery -------------------------------------------------------------------


def parse_target_time(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset; a time without one is refused, not guessed."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise BackupError(
            f"{text!r} is not a time: give it in ISO 8601 with its UTC offset, e.g. "
            "2026-12-01T10:15:00Z or 2026-12-01 11:15:00+01:00. Nothing was changed."
        ) from error
    if value.tzinfo is None:
        raise BackupError(
            f"{text!r} has no UTC offset: add one (Z for UTC, or e.g. +01:00), so the "
            "recovery stops where you mean. Nothing was changed."
        )
    return value


@dataclass(frozen=True)
class Recovery:
    """What `recover` did and found on the recovered server."""

    data_dir: Path
    base_backup: Path
    target: datetime
    timeline: int
    last_replayed: datetime | None
    databases: tuple[str, ...]
    indexes_checked: int
    tables_checked: int
    log: tuple[str, ...]


def _refuse_bad_input(*, base: BaseBackup, archive: Path, target: datetime, data_dir: Path) -> None:
    if target < base.finished_at:
        raise BackupError(
            f"The target time {target.isoformat()} is before the base backup {base.folder} "
            f"finished ({base.finished_at.isoformat()}): a base backup recovers only to later "
            "times. Pick a later time or an older base backup. Nothing was changed."
        )
    if target > datetime.now(UTC):
        raise BackupError(
            f"The target time {target.isoformat()} is in the future. Nothing was changed."
        )
    if not archived_segments(archive):
        raise BackupError(
            f"{archive} holds no archived WAL segment: without the archive a base backup "
            "recovers only to its own end. Turn archiving on (EMBEDDED_DB_WAL_ARCHIVE=true, "
            "or archive_mode and archive_command on your server, docs/operations.md 'Point-in-time "
            "recovery') and take a base backup after it. Nothing was changed."
        )
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(
            f"{data_dir} exists and is not an empty folder: recovery writes only into a new "
            "data folder. Name another one. Nothing was changed."
        )


def _write_recovery_settings(data_dir: Path, archive: Path, target: datetime) -> None:
    settings = {
        "restore_command": restore_command(archive.resolve()),
        "recovery_target_time": target.isoformat(),
        "recovery_target_action": "promote",
        **RECOVERED_SETTINGS,
    }
    with (data_dir / "postgresql.auto.conf").open("a") as handle:
        handle.write(f"\n{RECOVERY_CONF_HEADER}\n")
        for name, value in settings.items():
            handle.write(f"{name} = {conf_string(value)}\n")
    (data_dir / "standby.signal").unlink(missing_ok=True)
    (data_dir / "recovery.signal").touch()


def _log_lines(log: Path) -> tuple[str, ...]:
    try:
        return tuple(log.read_text(errors="replace").splitlines())
    except OSError:
        return ()


def _connect(socket_dir: str, user: str, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=socket_dir,
        port=VERIFY_PORT,
        user=user,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


def _wait_for_promotion(socket_dir: str, user: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(socket_dir, user) as conn:
                (in_recovery,) = one_row(conn.execute("SELECT pg_is_in_recovery()"))
        except psycopg.OperationalError:
            in_recovery = True  # not accepting connections yet, or it died: the log says
        if not in_recovery:
            return
        fatal = [line for line in _log_lines(log) if "FATAL" in line or "PANIC" in line]
        if fatal:
            raise BackupError("Recovery failed: " + " | ".join(fatal[-3:]))
        if time.monotonic() > deadline:
            raise BackupError(f"The recovered server was not promoted within {timeout:.0f} s.")
        time.sleep(0.2)


AMCHECK_INDEXES = (
    "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND i.indisvalid "
    "AND i.indisready AND c.relpersistence <> 't'"
)
AMCHECK_TABLES = (
    "SELECT oid FROM pg_class WHERE relkind IN ('r', 'm', 't') AND relpersistence <> 't'"
)


def _verify(socket_dir: str, user: str) -> tuple[int, datetime | None, tuple[str, ...], int, int]:
    """Promoted, writable and amcheck clean; the timeline, last replayed commit, counts."""
    with _connect(socket_dir, user) as conn:
        in_recovery, wal_file, last_replayed = one_row(
            conn.execute(
                "SELECT pg_is_in_recovery(), pg_walfile_name(pg_current_wal_lsn()),"
                " pg_last_xact_replay_timestamp()"
            )
        )
        if in_recovery:
            raise BackupError("The recovered server is still in recovery.")
        with conn.transaction(force_rollback=True):
            # Needs a transaction id: a server still read-only would refuse it.
            conn.execute("CREATE TEMPORARY TABLE pitr_writable (x int)")
            conn.execute("INSERT INTO pitr_writable VALUES (1)")
        databases = tuple(
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
            )
        )
    indexes = tables = 0
    for dbname in databases:
        with _connect(socket_dir, user, dbname) as conn, conn.transaction(force_rollback=True):
            # Rolled back: the check leaves no extension behind.
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            for (oid,) in conn.execute(AMCHECK_INDEXES).fetchall():
                conn.execute("SELECT bt_index_check(%s, true)", [oid])
                indexes += 1
            for (oid,) in conn.execute(AMCHECK_TABLES).fetchall():
                corrupt = conn.execute(
                    "SELECT blkno, offnum, msg FROM verify_heapam(%s) LIMIT 3", [oid]
                ).fetchall()
                if corrupt:
                    (name,) = one_row(conn.execute("SELECT %s::regclass::text", [oid]))
                    raise BackupError(f"amcheck: {dbname}.{name} is corrupt: {corrupt}")
                tables += 1
    return int(wal_file[:8], 16), last_replayed, databases, indexes, tables


def _empty(folder: Path, *, created: bool) -> None:
    if created:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def recover(
    *,
    base_backup: Path | None,
    base_backup_root: Path,
    archive: Path,
    target: datetime,
    data_dir: Path,
    superuser: str,
    timeout: float = 600,
) -> Recovery:
    """Recover a base backup plus the archive to `target` into the new `data_dir`.

    Refuses (BackupError, nothing changed) a target before the base backup finished or
    in the future, an empty archive, and a data folder that exists and is not empty.
    The base backup is checked against its manifest (pg_verifybackup) and copied; the
    copy gets restore_command, recovery_target_time, recovery_target_action = promote and
    recovery.signal, and starts on a private socket. Once it is promoted it must take a
    write and pass amcheck (every btree index with its heap, every table); it is then
    stopped, ready to be started as a server. Should anything fail, the new folder is
    emptied again and the error quotes the server's log.
    """
    data_dir = data_dir.absolute()
    base = (
        read_base_backup(base_backup)
        if base_backup
        else newest_base_backup(base_backup_root, before=target)
    )
    _refuse_bad_input(base=base, archive=archive, target=target, data_dir=data_dir)
    run_program([client_program("pg_verifybackup"), "--quiet", base.folder / BASE_BACKUP_DATA])
    created = not data_dir.exists()
    started = False
    scratch = Path(tempfile.mkdtemp(prefix="pitr-"))  # short: a socket path has a limit
    log = scratch / "recovery.log"
    pg_ctl = client_program("pg_ctl")
    user = _server_user()
    try:
        shutil.copytree(base.folder / BASE_BACKUP_DATA, data_dir, dirs_exist_ok=True)
        (data_dir / "backup_manifest").unlink(missing_ok=True)
        _write_recovery_settings(data_dir, archive, target)
        data_dir.chmod(0o700)
        # Only this process reaches the private socket; the copied pg_hba.conf may ask
        # for passwords this command does not have.
        hba = scratch / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        scratch.chmod(0o700)
        _give_to_server_user(scratch)
        _give_to_server_user(data_dir)
        options = shlex.join(
            ["-k", str(scratch), "-p", str(VERIFY_PORT), "-c", "listen_addresses="]
            + ["-c", f"hba_file={hba}"]
        )
        started = True
        run_program(
            [pg_ctl, "start", "-w", "-t", str(int(timeout)), "-D", data_dir]
            + ["-l", log, "-o", options],
            user=user,
        )
        _wait_for_promotion(str(scratch), superuser, log, timeout)
        timeline, last_replayed, databases, indexes, tables = _verify(str(scratch), superuser)
        run_program([pg_ctl, "stop", "-w", "-m", "fast", "-D", data_dir], user=user)
        started = False
    except BaseException as error:
        lines = _log_lines(log)
        if started:
            subprocess.run(  # noqa: S603 (pg_ctl, no shell)
                [str(pg_ctl), "stop", "-w", "-m", "immediate", "-D", str(data_dir)],
                capture_output=True,
                user=user,
            )
        _empty(data_dir, created=created)
        shutil.rmtree(scratch, ignore_errors=True)
        # psycopg.Error: a check that failed on the server (amcheck raises on corruption).
        if isinstance(error, BackupError | psycopg.Error):
            detail = [line for line in lines if "FATAL" in line or "recovery" in line]
            raise BackupError(
                f"{error}\nThe new data folder {data_dir} was emptied again. Server log:\n"
                + "\n".join(detail[-10:])
            ) from error
        raise
    lines = _log_lines(log)
    shutil.rmtree(scratch, ignore_errors=True)
    return Recovery(
        data_dir=data_dir,
        base_backup=base.folder,
        target=target,
        timeline=timeline,
        last_replayed=last_replayed,
        databases=databases,
        indexes_checked=indexes,
        tables_checked=tables,
        log=tuple(line for line in lines if any(word in line for word in RECOVERY_LOG_LINES)),
    )
