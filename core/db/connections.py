"""Connections: which role a connection logs in as, its libpq options, the server's start.

Two roles use the database (docs/security.md). The runtime role, in
`DATABASES["default"]`, serves requests and services; the owner role, in
`settings.DATABASE_OWNER`, owns the tables and runs migrations, flushes, test-database
creation and the explicit system bypass. `owner_connection()` switches the default
connection to the owner's credentials for the duration of a block (core.db.roles sets
the runtime role up). `ensure_database_server()` starts the server settings name (the
embedded one) when a process needs it, and again after it died; `unreachable()` says in
one line why a connection could not be opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.utils.module_loading import import_string

CREDENTIAL_KEYS = ("USER", "PASSWORD", "HOST", "PORT")

_server_lock = threading.Lock()


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...


def one_row(cursor: _Cursor) -> tuple[Any, ...]:
    """The row of a statement that always returns one (SHOW, an aggregate, a function).

    DB-API's fetchone() may return None; for these statements that would be a broken
    server, refused here by name rather than as a TypeError at the unpacking.
    """
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return tuple(row)


def ensure_database_server() -> None:
    """Start the database server that settings.DATABASE_SERVER_STARTER names, if needed.

    Only the embedded server has a starter (a server of your own runs already, and the
    setting is None). Called by the database backend before every connection it opens
    (the pool's included) and before the direct connections of backups and metrics, so
    the server starts when a process first needs it, not when settings are imported,
    and starts again at the next connection attempt after it died. The starter returns
    at once while its server runs; the lock keeps a process's threads from starting it
    twice.
    """
    if not settings.DATABASE_SERVER_STARTER:
        return
    with _server_lock:
        import_string(settings.DATABASE_SERVER_STARTER)()


class DatabaseUnreachable(OperationalError):
    """A connection could not be opened: the message is one line naming the server and
    the reason, never the password. manage.py prints it alone, without a traceback."""


def unreachable(error: Exception, params: dict) -> DatabaseUnreachable:
    """The one-line explanation of a failed connection attempt with these parameters."""
    host = params.get("host") or "localhost"
    where = host if host.startswith("/") else f"{host}:{params.get('port') or 5432}"
    reason = " ".join(str(error).split())
    password = params.get("password")
    if password:
        reason = reason.replace(str(password), "***")
    return DatabaseUnreachable(
        f"Cannot connect to PostgreSQL at {where} (database {params.get('dbname')!r}, role "
        f"{params.get('user')!r}): {reason} Check DATABASE_URL (and DATABASE_OWNER_URL, "
        "which migrations use)."
    )


# Keys of a DATABASES entry's OPTIONS that Django's backend consumes (and psycopg's
# prepare_threshold, a connection attribute): the rest are libpq connection options.
BACKEND_ONLY_OPTIONS = (
    "pool",
    "server_side_binding",
    "prepare_threshold",
    "isolation_level",
    "assume_role",
)


def libpq_options(options: dict) -> dict:
    """The libpq connection options (sslmode, connect_timeout, ...) of a settings OPTIONS."""
    return {key: value for key, value in options.items() if key not in BACKEND_ONLY_OPTIONS}


def _credentials(settings_dict: dict) -> dict:
    return {key: settings_dict.get(key) or "" for key in CREDENTIAL_KEYS}


def owner_role_name() -> str:
    return settings.DATABASE_OWNER["USER"]


def runtime_role_name() -> str:
    return settings.DATABASE_RUNTIME_ROLE


def _reconnect(connection, credentials: dict) -> None:
    connection.close()
    connection.close_pool()
    connection.settings_dict.update(credentials)


@contextmanager
def owner_connection(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Run the block with the default connection logged in as the owner role.

    The switch is process-wide (Django shares one settings dict and one pool per
    alias between threads), so it is meant for commands and test set-up, never for
    request handling. Re-entrant; a no-op where both roles are the same.
    """
    connection = connections[using]
    current = {
        **_credentials(connection.settings_dict),
        "OPTIONS": connection.settings_dict["OPTIONS"],
    }
    # The owner URL's own options (sslmode, ...), not the runtime URL's.
    owner = {
        **_credentials(settings.DATABASE_OWNER),
        "OPTIONS": settings.DATABASE_OWNER.get("OPTIONS", {}),
    }
    if current == owner:
        yield
        return
    if connection.in_atomic_block:
        raise RuntimeError("Cannot switch to the owner role inside a transaction.")
    _reconnect(connection, owner)
    try:
        yield
    finally:
        _reconnect(connection, current)


@contextmanager
def owner_autocommit_connection(using: str = DEFAULT_DB_ALIAS) -> Iterator[psycopg.Connection]:
    """A psycopg connection of its own, logged in as the owner role, in autocommit.

    For the DDL a service runs outside any transaction (CREATE INDEX CONCURRENTLY needs
    the table's owner), from a process whose own connection must stay as it is: a
    worker runs other jobs meanwhile, which owner_connection's process-wide switch
    would move to the owner role too. Closed on leaving the block.
    """
    params = connections[using].get_connection_params()
    owner = settings.DATABASE_OWNER
    connect = {
        "dbname": params.get("dbname"),
        "user": owner.get("USER") or params.get("user"),
        "password": owner.get("PASSWORD") or params.get("password"),
        "host": owner.get("HOST") or params.get("host"),
        "port": owner.get("PORT") or params.get("port"),
        **libpq_options(owner.get("OPTIONS", {})),
    }
    ensure_database_server()
    connection = psycopg.connect(**{k: v for k, v in connect.items() if v}, autocommit=True)
    try:
        yield connection
    finally:
        connection.close()


def begins_transaction(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether an atomic block entered now begins the transaction, and so also ends it.

    From Django's own bookkeeping, without a query: outside every atomic block and in
    autocommit. Transaction-scoped settings made in such a block need no restoring.
    """
    connection = connections[using]
    return not connection.in_atomic_block and connection.get_autocommit()
