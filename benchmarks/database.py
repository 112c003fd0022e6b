"""The benchmark's own databases, and raw connections to them for the references.

The benchmark writes hundreds of thousands of rows and drops what it made, so it never
touches the developer's database (settings NAME) nor a test run's (DATABASE_TEST_NAME):
the owner role creates `agentic_bench` (or `--database`) the way it creates test
databases, and drops it at the end. Django's default connection is pointed at it for the
whole run; the references connect with plain psycopg as the same roles.

Raw connections keep psycopg's own defaults (server-side binding, statements prepared
after 5 executions) where Django turns preparation off: the reference is what a hand-
written psycopg client gets, the floor the project is compared with.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connection
from pgvector.psycopg import register_vector
from psycopg import sql

from core.db.connections import ensure_database_server, libpq_options

DEFAULT_NAME = "agentic_bench"
# The database every PostgreSQL has, to create and drop the others from.
MAINTENANCE_DATABASE = "postgres"
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,50}")


def check_name(name: str) -> str:
    """Refuse a name that is not a plain identifier, or the developer's or the tests' database."""
    if not _NAME_RE.fullmatch(name):
        raise SystemExit(f"--database {name!r}: use lower-case letters, digits and _ only")
    taken = {
        settings.DATABASES["default"]["NAME"]: "the development database",
        settings.DATABASES["default"]["TEST"]["NAME"]: "the test database",
    }
    if name in taken:
        raise SystemExit(f"--database {name!r} is {taken[name]}; the benchmark drops its database")
    return name


def _connect_kwargs(credentials: dict, options: dict, dbname: str) -> dict:
    kwargs = libpq_options(options)
    kwargs["dbname"] = dbname
    for key, name in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if credentials.get(key):
            kwargs[name] = credentials[key]
    if credentials.get("PORT"):
        kwargs["port"] = str(credentials["PORT"])
    return kwargs


def runtime_kwargs(dbname: str) -> dict:
    """psycopg connection arguments of the runtime role (DATABASE_URL) for `dbname`."""
    default = settings.DATABASES["default"]
    credentials = {**default, "USER": settings.DATABASE_RUNTIME_ROLE}
    return _connect_kwargs(credentials, default.get("OPTIONS", {}), dbname)


def owner_kwargs(dbname: str) -> dict:
    """psycopg connection arguments of the owner role (DATABASE_OWNER_URL) for `dbname`."""
    owner = settings.DATABASE_OWNER
    return _connect_kwargs(owner, owner.get("OPTIONS", {}), dbname)


def connect(kwargs: dict, *, vectors: bool = True) -> psycopg.Connection:
    """An autocommit psycopg connection; with `vectors`, pgvector's types registered."""
    ensure_database_server()  # bypassing Django's backend, which would start it
    conn = psycopg.connect(**kwargs, autocommit=True)
    if vectors:
        register_vector(conn)
    return conn


def drop_database(name: str) -> None:
    with connect(owner_kwargs(MAINTENANCE_DATABASE), vectors=False) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def create_database(name: str) -> None:
    """A new, empty database `name` owned by the owner role (dropped first if it exists).

    It is made from template1, which the embedded bootstrap (and the set-up of another server
    in docs/operations.md) gives the `vector` extension and the LEAKPROOF marks.
    """
    drop_database(name)
    with connect(owner_kwargs(MAINTENANCE_DATABASE), vectors=False) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@contextmanager
def django_database(name: str) -> Iterator[None]:
    """Point Django's default connection (both roles, the pool) at `name` for the block."""
    settings_dict = connection.settings_dict
    previous = settings_dict["NAME"]

    def switch(to: str) -> None:
        connection.close()
        connection.close_pool()
        settings_dict["NAME"] = to

    switch(name)
    try:
        yield
    finally:
        switch(previous)


def psql(dbname: str, sql_file: Path) -> list[str]:
    """The command that runs `sql_file` in `dbname` through psql as the owner role."""
    binary = shutil.which("psql", path=os.pathsep.join(filter(None, [settings.POSTGRES_BIN_DIR])))
    binary = binary or shutil.which("psql")
    if binary is None:
        raise SystemExit("psql not found: set POSTGRES_BIN_DIR or put PostgreSQL's bin on PATH")
    kwargs = owner_kwargs(dbname)
    kwargs.pop("password", None)  # through PGPASSWORD (psql_env), not the command line
    conninfo = psycopg.conninfo.make_conninfo(**kwargs)
    return [binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(sql_file)]


def psql_env() -> dict[str, str]:
    env = dict(os.environ)
    password = settings.DATABASE_OWNER.get("PASSWORD")
    if password:
        env["PGPASSWORD"] = password
    return env
