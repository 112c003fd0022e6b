"""Backups that restore: `manage.py backup` and `manage.py restore` (docs/operations.md).

A backup is a custom-format `pg_dump` plus a manifest: the dump's SHA-256 and, for every
table, its row count and a content checksum, all taken in the one snapshot the dump
reads. Row-level security is the trap: a role subject to it dumps tenant tables as
empty and exits 0 (with --enable-row-security), so the backup role must be a superuser
or have BYPASSRLS, and the command refuses any other before it dumps a row.

Files: every file a row names (models declaring STORED_FILE, core.files) in a local
storage (FileSystemStorage: uploads under MEDIA_ROOT, exports under EXPORTS_ROOT) is
copied into `<dump>.files/<storage alias>/<key>`, its SHA-256 and size in the manifest.
Files are copied once before the snapshot and then those the snapshot adds, so a file
deleted with its row while the backup runs is still in it; files no snapshot row names
are left out. Storages that are not local are named in the manifest, not copied: they
need their own backup (docs/operations.md, 'Backups').

Restore goes into a new (or empty) database only: it checks the dump and every file
against the manifest, restores the dump, re-grants the runtime role, re-applies the
LEAKPROOF marks (pg_dump does not carry changes to built-in functions), and compares
every table's count and checksum with the manifest. It puts the files back into the
configured storages (never over a file with other bytes) and checks that every file a
restored row names is there with the row's size and SHA-256. Any difference is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages
from django.utils._os import safe_join
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.db.connections import ensure_database_server, one_row
from core.files import stored_files
from core.ops import leakproof

logger = logging.getLogger(__name__)

# Order-independent and constant in memory: the XOR of every row's 64-bit hash.
TABLE_FINGERPRINT = (
    "SELECT count(*), coalesce(bit_xor(('x' || left(md5(t::text), 16))::bit(64)::bigint), 0) "
    "FROM {table} AS t"
)


class BackupError(Exception):
    """A backup or restore that cannot be done safely; the message says what to do."""


@dataclass(frozen=True)
class Role:
    """Where and as whom to connect for a backup or restore, from settings.DATABASE_BACKUP."""

    params: dict

    def connect(self, dbname: str, **kwargs) -> psycopg.Connection:
        return psycopg.connect(**{**self.params, "dbname": dbname}, **kwargs)

    def client_env(self, dbname: str) -> tuple[str, dict]:
        """A conninfo for pg_dump/pg_restore, and the environment carrying the password
        (never on the command line, where `ps` shows it)."""
        params = {key: value for key, value in self.params.items() if key != "password"}
        env = {**os.environ, "PGPASSWORD": str(self.params.get("password") or "")}
        return make_conninfo(**params, dbname=dbname), env


def _role(config: dict, missing: str) -> Role:
    if not config.get("USER"):
        raise BackupError(missing)
    # These connections bypass the database backend, which would otherwise start it.
    ensure_database_server()
    params = {
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
        "user": config["USER"],
        "password": config.get("PASSWORD") or None,
        "connect_timeout": 10,
        **config.get("OPTIONS", {}),
    }
    return Role({key: value for key, value in params.items() if value is not None})


def backup_role() -> Role:
    return _role(
        settings.DATABASE_BACKUP,
        "No backup role is configured. Set DATABASE_BACKUP_URL to a role with BYPASSRLS "
        "that can read every table (docs/operations.md, 'Backups').",
    )


def restore_role() -> Role:
    return _role(settings.DATABASE_RESTORE, "No owner role is configured (DATABASE_OWNER_URL).")


def client_program(name: str) -> str:
    """pg_dump or pg_restore: the embedded server's own, else POSTGRES_BIN_DIR or PATH."""
    folder = settings.POSTGRES_BIN_DIR
    found = shutil.which(name, path=str(folder)) if folder else shutil.which(name)
    if not found:
        raise BackupError(
            f"{name} was not found. Install the PostgreSQL 18 client programs, or set "
            "POSTGRES_BIN_DIR to the folder that holds them."
        )
    return found


def run_program(command: list, env: dict | None = None, *, user: str | None = None) -> None:
    """Run a PostgreSQL program (found by client_program), as `user` if given; a
    BackupError with the end of its output if it fails."""
    result = subprocess.run(  # noqa: S603 (no shell)
        [str(part) for part in command], capture_output=True, text=True, env=env, user=user
    )
    if result.returncode != 0:
        raise BackupError(
            f"{Path(command[0]).name} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )


def _refuse_if_rows_hidden(conn: psycopg.Connection) -> None:
    sees_all, name = one_row(
        conn.execute(
            "SELECT rolsuper OR rolbypassrls, rolname FROM pg_roles WHERE rolname = current_user"
        )
    )
    if not sees_all:
        raise BackupError(
            f"The backup role {name!r} is subject to row-level security: a dump would miss "
            "every tenant's rows. Use a superuser or a role with BYPASSRLS "
            "(DATABASE_BACKUP_URL, docs/operations.md, 'Backups'). Nothing was written."
        )


def table_fingerprints(conn: psycopg.Connection) -> dict[str, dict]:
    """Row count and content checksum of every table of the public schema.

    Run inside a transaction. A role with BYPASSRLS or superuser sees every row as it
    is; the owner (restoring a DATABASE_URL set-up) sees them through its system bypass
    policy, switched on for this transaction only.
    """
    conn.execute("SET LOCAL TIME ZONE 'UTC'")  # timestamptz text must not depend on the session
    conn.execute("SELECT set_config('app.rls_bypass', 'on', true)")
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY 1"
        )
    ]
    fingerprints = {}
    for table in tables:
        rows, checksum = one_row(
            conn.execute(sql.SQL(TABLE_FINGERPRINT).format(table=sql.Identifier(table)))
        )
        fingerprints[table] = {"rows": rows, "checksum": f"{checksum & (2**64 - 1):016x}"}
    return fingerprints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(dump: Path) -> Path:
    return dump.with_suffix(".manifest.json")


def read_manifest(dump: Path) -> dict:
    try:
        return json.loads(manifest_path(dump).read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{manifest_path(dump)} is missing or unreadable: {error}") from error


def files_path(dump: Path) -> Path:
    """The folder beside a dump that holds its storages' files."""
    return dump.with_suffix(".files")


@dataclass(frozen=True)
class NamedFile:
    """A file a row names: where, and the size and SHA-256 the row records."""

    storage: str
    key: str
    size: int
    sha256: str
    row: str

    def __str__(self) -> str:
        return f"{self.storage}:{self.key} (named by {self.row})"


def _is_local(alias: str) -> bool:
    return isinstance(storages[alias], FileSystemStorage)


def named_files(conn: psycopg.Connection) -> list[NamedFile]:
    """Every file a row names, read through `conn`, which must see every row."""
    found = []
    for model, declared in stored_files():
        rows = (
            model._base_manager.filter(declared.condition)
            .exclude(**{declared.key: ""})
            .order_by()
            .values_list("pk", declared.key, declared.size, declared.sha256)
        )
        query, params = rows.query.sql_with_params()
        for pk, key, size, sha256 in conn.execute(query, params):
            row = f"{model._meta.db_table} row {pk}"
            found.append(NamedFile(declared.storage, key, size, sha256, row))
    return found


def _copy_into(files: Path, named: list[NamedFile], copied: dict[tuple[str, str], dict]) -> None:
    """Copy each local file of `named` not copied yet into `files`; a missing one is skipped
    (the check after the snapshot names it)."""
    for item in named:
        if (item.storage, item.key) in copied or not _is_local(item.storage):
            continue
        # Both paths through safe_join: a key never leaves its folder.
        source = Path(storages[item.storage].path(item.key))
        target = Path(safe_join(str(files / item.storage), item.key))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            continue
        copied[(item.storage, item.key)] = {
            "sha256": _sha256(target),
            "size_bytes": target.stat().st_size,
        }


def _differs(item: NamedFile, found: dict | None) -> str | None:
    """Why the file `found` (sha256, size_bytes; None: absent) is not the one the row names."""
    if found is None:
        return f"{item} is missing"
    if found["size_bytes"] != item.size:
        return f"{item} has {found['size_bytes']} bytes, the row says {item.size}"
    if item.sha256 and found["sha256"] != item.sha256:
        return f"{item} has SHA-256 {found['sha256']}, the row says {item.sha256}"
    return None


def _problems(problems: list[str]) -> str:
    shown = "; ".join(problems[:10])
    return shown + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")


def backup(*, dbname: str, folder: Path) -> Path:
    """Dump `dbname` and copy the local storages' files into `folder`; return the dump's
    path (its manifest and its `.files` folder lie beside it)."""
    role = backup_role()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dump = folder / f"{dbname}-{stamp}.dump"
    files = files_path(dump)
    copied: dict[tuple[str, str], dict] = {}
    try:
        with role.connect(dbname, autocommit=True) as conn:
            _refuse_if_rows_hidden(conn)
            # Before the snapshot: a file whose row is deleted while the dump runs is
            # then already copied, and the row in the snapshot still has it.
            _copy_into(files, named_files(conn), copied)
            # One snapshot for the fingerprints, the files named and the dump: what the
            # manifest says is exactly what the backup holds, however busy the database.
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            (snapshot,) = one_row(conn.execute("SELECT pg_export_snapshot()"))
            fingerprints = table_fingerprints(conn)
            named = named_files(conn)
            (server_version,) = one_row(conn.execute("SHOW server_version"))
            conninfo, env = role.client_env(dbname)
            try:
                run_program(
                    [client_program("pg_dump"), "--format=custom", f"--snapshot={snapshot}"]
                    + ["--file", str(dump), "--dbname", conninfo],
                    env,
                )
            finally:
                conn.execute("ROLLBACK")
        _copy_into(files, named, copied)
        local = [item for item in named if _is_local(item.storage)]
        problems = [
            problem
            for item in local
            if (problem := _differs(item, copied.get((item.storage, item.key))))
        ]
        if problems:
            raise BackupError(
                f"The storages do not hold the files the rows name: {_problems(problems)}. "
                "Nothing was written."
            )
        kept = {(item.storage, item.key) for item in local}
        for alias, key in set(copied) - kept:  # named before the snapshot, not in it
            Path(safe_join(str(files / alias), key)).unlink()
            del copied[(alias, key)]
    except BaseException:
        dump.unlink(missing_ok=True)
        shutil.rmtree(files, ignore_errors=True)
        raise
    stored: dict[str, dict[str, dict]] = {}
    for (alias, key), entry in sorted(copied.items()):
        stored.setdefault(alias, {})[key] = entry
    manifest = {
        "database": dbname,
        "created_at": datetime.now(UTC).isoformat(),
        "server_version": server_version,
        "dump": dump.name,
        "sha256": _sha256(dump),
        "size_bytes": dump.stat().st_size,
        "tables": fingerprints,
        # storage alias -> key -> sha256 and size_bytes, in the `.files` folder.
        "files": stored,
        "storages_not_in_backup": sorted(
            {declared.storage for _, declared in stored_files() if not _is_local(declared.storage)}
        ),
    }
    manifest_path(dump).write_text(json.dumps(manifest, indent=2) + "\n")
    return dump


@dataclass(frozen=True)
class TableCheck:
    table: str
    expected: dict
    found: dict | None

    @property
    def ok(self) -> bool:
        return self.expected == self.found


def _database_is_empty(conn: psycopg.Connection) -> bool:
    (tables,) = one_row(
        conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
        )
    )
    return tables == 0


def _is_superuser(conn: psycopg.Connection) -> bool:
    (superuser,) = one_row(
        conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    return superuser


@dataclass(frozen=True)
class RestoreReport:
    """The per-table comparison, and the files put back and checked."""

    tables: list[TableCheck]
    files_restored: int
    files_checked: int
    file_problems: list[str]


def _backed_up_files(dump: Path, manifest: dict) -> list[tuple[str, str, Path, dict]]:
    """(alias, key, file in the backup, manifest entry) for every file the backup holds,
    each checked against the manifest and against what the storage already has there."""
    files = files_path(dump)
    found, problems = [], []
    for alias, entries in manifest.get("files", {}).items():
        if alias not in storages.backends or not _is_local(alias):
            problems.append(
                f"the backup holds files of storage {alias!r}, which is not a local storage "
                "here (settings.STORAGES)"
            )
            continue
        storage = storages[alias]
        for key, entry in entries.items():
            path = Path(safe_join(str(files / alias), key))
            if not path.is_file():
                problems.append(f"{alias}:{key} is missing from {files}")
                continue
            held = {"sha256": _sha256(path), "size_bytes": path.stat().st_size}
            if held != entry:
                problems.append(
                    f"{alias}:{key} in {files} has SHA-256 {held['sha256']} and "
                    f"{held['size_bytes']} bytes, the manifest says {entry['sha256']} and "
                    f"{entry['size_bytes']} bytes: the file is damaged"
                )
                continue
            there = Path(storage.path(key))
            if there.is_file() and _sha256(there) != entry["sha256"]:
                problems.append(
                    f"{alias}:{key} exists in the storage ({there}) with other bytes; "
                    "restore never overwrites a file: restore into other folders "
                    "(MEDIA_ROOT, EXPORTS_ROOT) or move that file away"
                )
                continue
            found.append((alias, key, path, entry))
    if problems:
        raise BackupError(
            f"The backup's files cannot be restored: {_problems(problems)}. Nothing was changed."
        )
    return found


def _put_back(files: list[tuple[str, str, Path, dict]]) -> int:
    """Copy the backup's files into their storages, keeping those already there (same
    bytes, checked before); the number copied."""
    restored = 0
    for alias, key, path, _entry in files:
        storage = storages[alias]
        if storage.exists(key):
            continue
        with path.open("rb") as handle:
            saved = storage.save(key, File(handle))
        if saved != key:
            storage.delete(saved)
            raise BackupError(f"The storage {alias!r} stored {key} as {saved}; it was removed.")
        restored += 1
    return restored


def _stored(alias: str, key: str) -> dict | None:
    """The size (and, in a local storage, SHA-256) of a stored file; None if absent."""
    storage = storages[alias]
    if not storage.exists(key):
        return None
    if not _is_local(alias):
        return {"size_bytes": storage.size(key), "sha256": None}
    path = Path(storage.path(key))
    return {"size_bytes": path.stat().st_size, "sha256": _sha256(path)}


def check_named_files(named: list[NamedFile]) -> list[str]:
    """What is wrong with the files the rows name: absent, or not their size and SHA-256.
    A storage that is not local is checked for presence and size only."""
    problems = []
    for item in named:
        found = _stored(item.storage, item.key)
        if found is not None and found["sha256"] is None:
            found = {**found, "sha256": item.sha256}
        if problem := _differs(item, found):
            problems.append(problem)
    return problems


def restore(*, dump: Path, dbname: str, owner: str, runtime_role: str) -> RestoreReport:
    """Restore `dump` and its files into the new or empty database `dbname` and the
    configured storages; the per-table comparison and the files' check."""
    from core.db.roles import grant_runtime_privileges, role_exists

    if not dump.is_file():
        raise BackupError(f"{dump} does not exist.")
    manifest = read_manifest(dump)
    if _sha256(dump) != manifest["sha256"]:
        raise BackupError(f"{dump} does not match its manifest's SHA-256: the file is damaged.")
    files = _backed_up_files(dump, manifest)
    role = restore_role()
    with role.connect("postgres", autocommit=True) as conn:
        superuser = _is_superuser(conn)
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            # From template1, which the set-up gave `vector` and the LEAKPROOF marks.
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                )
            )
    with role.connect(dbname, autocommit=True) as conn:
        if exists and not _database_is_empty(conn):
            raise BackupError(
                f"Database {dbname!r} exists and is not empty: restore only into a new or "
                "empty database. Nothing was changed."
            )
        if not superuser:
            absent = leakproof.missing(conn.cursor())
            if absent:
                raise BackupError(
                    f"Database {dbname!r} lacks the LEAKPROOF marks and the owner may not add "
                    f"them. A superuser must run in it: {'; '.join(leakproof.mark_statements())}; "
                    "then restore again."
                )
    conninfo, env = role.client_env(dbname)
    command = [client_program("pg_restore"), "--exit-on-error", "--single-transaction"]
    with tempfile.TemporaryDirectory() as scratch:
        if not superuser:
            # Extensions are a superuser's set-up (template1 has them); the owner could
            # not create or comment on them, so those entries are left out.
            listing = Path(scratch) / "restore.list"
            listing.write_text(_entries_without_extensions(dump, env))
            command += ["--use-list", str(listing)]
        run_program([*command, "--dbname", conninfo, str(dump)], env)
    with role.connect(dbname) as conn, conn.cursor() as cursor:
        if superuser:
            leakproof.mark(cursor)
        if runtime_role and runtime_role != owner and role_exists(cursor, runtime_role):
            grant_runtime_privileges(cursor, runtime_role)
        conn.commit()
        logger.info("restore verification reads %s through the owner's bypass", dbname)
        found = table_fingerprints(conn)
        named = named_files(conn)
        conn.rollback()
    restored = _put_back(files)
    return RestoreReport(
        tables=[
            TableCheck(table, expected, found.get(table))
            for table, expected in sorted(manifest["tables"].items())
        ],
        files_restored=restored,
        files_checked=len(named),
        file_problems=check_named_files(named),
    )


def _entries_without_extensions(dump: Path, env: dict) -> str:
    listing = subprocess.run(  # noqa: S603 (pg_restore, no shell)
        [client_program("pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return "".join(line + "\n" for line in listing.splitlines() if " EXTENSION " not in line)
