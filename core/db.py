"""Database helpers shared by the apps: the owner connection and runtime grants.

Two roles use the database (DESIGN.md section 7). The runtime role, in
`DATABASES["default"]`, serves requests and services; the owner role, in
`settings.DATABASE_OWNER`, owns the tables and runs migrations, flushes, test-database
creation and the explicit system bypass. `owner_connection()` switches the default
connection to the owner's credentials for the duration of a block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import sql

logger = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("USER", "PASSWORD", "HOST", "PORT")


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
    owner = _credentials(settings.DATABASE_OWNER)
    current = _credentials(connection.settings_dict)
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


RUNTIME_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def grant_runtime_privileges(cursor, runtime_role: str) -> None:
    """Give the runtime role what it needs on the owner's tables, and nothing more.

    Data privileges on every table (row-level security then limits the rows), read
    only on the migration history, and the same for tables made later.
    """
    role = sql.Identifier(runtime_role)
    statements = [
        "GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT {RUNTIME_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {{role}}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {RUNTIME_TABLE_PRIVILEGES} "
        "ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]
    for statement in statements:
        cursor.execute(sql.SQL(statement).format(role=role))
    cursor.execute("SELECT to_regclass('django_migrations') IS NOT NULL")
    if cursor.fetchone()[0]:
        cursor.execute(
            sql.SQL("REVOKE INSERT, UPDATE, DELETE ON django_migrations FROM {role}").format(
                role=role
            )
        )


def role_exists(cursor, role: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    return cursor.fetchone() is not None
