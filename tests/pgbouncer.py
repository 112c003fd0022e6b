"""A real PgBouncer that tests start themselves in front of a PostgreSQL server.

Debian's `pgbouncer` runs with the settings of the shipped docker/pgbouncer/pgbouncer.ini
(transaction pooling, the timeouts), so the tests check the configuration that
docker-compose runs; only what a test machine needs differs (LOCAL_SETTINGS). It listens
on a Unix socket in a private temporary folder, never on a network port, and is stopped
by its own pid. The fixtures in tests/conftest.py start it and route Django's default
connection through it.
"""

from __future__ import annotations

import configparser
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper

from core.db.connections import _reconnect
from tests.postgres_servers import server_user
from tests.system_programs import require

SHIPPED_INI = Path(__file__).resolve().parents[1] / "docker" / "pgbouncer" / "pgbouncer.ini"
# Any number: the socket's name, .s.PGSQL.<port>, in a folder of its own.
PORT = 6432
# Logs in to the admin console (the virtual `pgbouncer` database) for SHOW commands.
ADMIN_USER = "pgbouncer_admin"
# Few server connections per pool, so that many client threads really share them:
# what makes a leak of one transaction's setting into the next one visible.
POOL_SIZE = 2
START_SECONDS = 30
# The [pgbouncer] settings that differ from the shipped file, and why: a socket in the
# private folder instead of 0.0.0.0:6432 (with unix_socket_dir, below); trust, because
# the test server trusts its socket (the auth file still gives PgBouncer the password a
# DATABASE_URL server needs); the admin console; the small pool.
LOCAL_SETTINGS = {
    "listen_addr": "",
    "listen_port": str(PORT),
    "auth_type": "trust",
    "admin_users": ADMIN_USER,
    "default_pool_size": str(POOL_SIZE),
}


def shipped_settings() -> dict[str, str]:
    """The [pgbouncer] section of docker/pgbouncer/pgbouncer.ini."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.read(SHIPPED_INI)
    return dict(parser["pgbouncer"])


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where clients connect, and its admin console."""

    socket_dir: str
    port: int

    def show(self, what: str) -> list[dict]:
        """Rows of the admin console's `SHOW <what>` (STATS, SERVERS, CLIENTS, ...)."""
        with psycopg.connect(
            host=self.socket_dir,
            port=self.port,
            dbname="pgbouncer",
            user=ADMIN_USER,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def transactions(self, dbname: str) -> int:
        """Transactions PgBouncer has served for `dbname` since it started."""
        return sum(
            row["total_xact_count"] for row in self.show("STATS") if row["database"] == dbname
        )

    def server_pids(self, dbname: str) -> set[int]:
        """Backend pids of PgBouncer's server connections to `dbname`."""
        return {row["remote_pid"] for row in self.show("SERVERS") if row["database"] == dbname}


@contextmanager
def running_pgbouncer(*, host: str, port: str, users: dict[str, str]) -> Iterator[PgBouncer]:
    """PgBouncer in front of the server at host/port (a socket folder or a host name),
    for every database name a client asks for, letting in `users` (role: password)."""
    program = require("pgbouncer", "pgbouncer")
    # mkdtemp, not tmp_path: a socket path must stay under ~100 characters.
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    # PgBouncer refuses to run as root; as root it runs as the embedded server's user,
    # who can reach that server's socket.
    user = server_user()
    try:
        (folder / "userlist.txt").write_text(
            "".join(
                f"{_quoted(name)} {_quoted(password)}\n"
                for name, password in {**users, ADMIN_USER: ""}.items()
            )
        )
        config = {
            **shipped_settings(),
            **LOCAL_SETTINGS,
            "unix_socket_dir": str(folder),
            "auth_file": str(folder / "userlist.txt"),
            "logfile": str(folder / "pgbouncer.log"),
        }
        server = f"host={host}" + (f" port={port}" if port else "")
        (folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = {server}\n\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in config.items())
        )
        if user:
            shutil.chown(folder, user)
            for path in folder.iterdir():
                shutil.chown(path, user)
        folder.chmod(0o700)
        command = [program, *(["-u", user] if user else []), str(folder / "pgbouncer.ini")]
        # Its own output (start-up errors come before its log file opens) goes to a file,
        # which a pipe nobody reads could fill up.
        with open(folder / "output.txt", "wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=output)
        try:
            bouncer = PgBouncer(socket_dir=str(folder), port=PORT)
            _wait_until_it_answers(bouncer, process, folder / "output.txt")
            yield bouncer
        finally:
            process.send_signal(signal.SIGTERM)  # immediate shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(folder)


def _wait_until_it_answers(bouncer: PgBouncer, process: subprocess.Popen, output: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {output.read_text()}")
        try:
            bouncer.show("VERSION")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# What DATABASE_PREPARED_STATEMENTS adds to a connection's OPTIONS (config.settings).
PREPARED_STATEMENT_OPTIONS = ("server_side_binding", "prepare_threshold")


@contextmanager
def routed_through(
    connection: BaseDatabaseWrapper, bouncer: PgBouncer, **settings_dict
) -> Iterator[None]:
    """Point a Django connection (every thread's, and its pool) at PgBouncer for the block,
    with `settings_dict` (NAME, USER, ...) changed too.

    Server-side cursors and prepared statements are turned off, as the compose web
    service's DATABASE_DISABLE_SERVER_SIDE_CURSORS=true does: in transaction pooling a
    cursor would outlive the transaction that owns its server connection, and a
    statement prepared in one server session is missing from the next.
    """
    options = {
        key: value
        for key, value in connection.settings_dict["OPTIONS"].items()
        if key not in PREPARED_STATEMENT_OPTIONS
    }
    routed = {
        "HOST": bouncer.socket_dir,
        "PORT": str(bouncer.port),
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "OPTIONS": options,
        **settings_dict,
    }
    direct = {key: connection.settings_dict[key] for key in routed}
    _reconnect(connection, routed)
    try:
        yield
    finally:
        _reconnect(connection, direct)
