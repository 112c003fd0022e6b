"""Backups that restore: `manage.py backup` and `manage.py restore` (docs/operations.md).

A backup is a custom-format `pg_dump` plus a manifest: the dump's SHA-256 and, for every
table, its row count and a content checksum, all taken in the one snapshot the dump
reads. Row-level security is the trap: a role subject to it dumps tenant tables as
empty and exits 0 (with --enable-row-security), so the backup role must be a superuser
or have BYPASSRLS, and the command refuses any other before it dumps a row.

Restore goes into a new (or empty) database only: it checks the dump against its
manifest, restores it, re-grants the runtime role, re-applies the LEAKPROOF marks
(pg_dump does not carry changes to built-in functions), and compares every table's
count and checksum with the manifest. Any difference is an error.
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
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.db.connections import ensure_database_server
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


def _run(command: list[str], env: dict) -> None:
    # The program is pg_dump or pg_restore, found by client_program; no shell.
    result = subprocess.run(command, capture_output=True, text=True, env=env)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(
            f"{Path(command[0]).name} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )


def _refuse_if_rows_hidden(conn: psycopg.Connection) -> None:
    sees_all, name = conn.execute(
        "SELECT rolsuper OR rolbypassrls, rolname FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
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
        rows, checksum = conn.execute(
            sql.SQL(TABLE_FINGERPRINT).format(table=sql.Identifier(table))
        ).fetchone()
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


def backup(*, dbname: str, folder: Path) -> Path:
    """Dump `dbname` into `folder`; return the dump's path (its manifest lies beside it)."""
    role = backup_role()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dump = folder / f"{dbname}-{stamp}.dump"
    with role.connect(dbname, autocommit=True) as conn:
        _refuse_if_rows_hidden(conn)
        # One snapshot for the fingerprints and the dump: what the manifest says is
        # exactly what the file holds, however busy the database is.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
        fingerprints = table_fingerprints(conn)
        (server_version,) = conn.execute("SHOW server_version").fetchone()
        conninfo, env = role.client_env(dbname)
        try:
            _run(
                [client_program("pg_dump"), "--format=custom", f"--snapshot={snapshot}"]
                + ["--file", str(dump), "--dbname", conninfo],
                env,
            )
        except BackupError:
            dump.unlink(missing_ok=True)
            raise
        finally:
            conn.execute("ROLLBACK")
    manifest = {
        "database": dbname,
        "created_at": datetime.now(UTC).isoformat(),
        "server_version": server_version,
        "dump": dump.name,
        "sha256": _sha256(dump),
        "size_bytes": dump.stat().st_size,
        "tables": fingerprints,
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
    (tables,) = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
    ).fetchone()
    return tables == 0


def _is_superuser(conn: psycopg.Connection) -> bool:
    (superuser,) = conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return superuser


def restore(*, dump: Path, dbname: str, owner: str, runtime_role: str) -> list[TableCheck]:
    """Restore `dump` into the new or empty database `dbname`; the per-table comparison."""
    from core.db.roles import grant_runtime_privileges, role_exists

    if not dump.is_file():
        raise BackupError(f"{dump} does not exist.")
    manifest = read_manifest(dump)
    if _sha256(dump) != manifest["sha256"]:
        raise BackupError(f"{dump} does not match its manifest's SHA-256: the file is damaged.")
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
        _run([*command, "--dbname", conninfo, str(dump)], env)
    with role.connect(dbname) as conn, conn.cursor() as cursor:
        if superuser:
            leakproof.mark(cursor)
        if runtime_role and runtime_role != owner and role_exists(cursor, runtime_role):
            grant_runtime_privileges(cursor, runtime_role)
        conn.commit()
        logger.info("restore verification reads %s through the owner's bypass", dbname)
        found = table_fingerprints(conn)
        conn.rollback()
    return [
        TableCheck(table, expected, found.get(table))
        for table, expected in sorted(manifest["tables"].items())
    ]


def _entries_without_extensions(dump: Path, env: dict) -> str:
    listing = subprocess.run(  # noqa: S603 (pg_restore, no shell)
        [client_program("pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return "".join(line + "\n" for line in listing.splitlines() if " EXTENSION " not in line)
