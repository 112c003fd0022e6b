"""Database helpers shared by the apps: the owner connection, the runtime role and its grants.

Two roles use the database (DESIGN.md section 7). The runtime role, in
`DATABASES["default"]`, serves requests and services; the owner role, in
`settings.DATABASE_OWNER`, owns the tables and runs migrations, flushes, test-database
creation and the explicit system bypass. `owner_connection()` switches the default
connection to the owner's credentials for the duration of a block;
`ensure_runtime_role()` and `grant_runtime_privileges()` set the runtime role up.
`ensure_database_server()` starts the server settings name (the embedded one) the first
time a process needs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, ProgrammingError, connections
from django.utils.module_loading import import_string
from psycopg import errors, sql

logger = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("USER", "PASSWORD", "HOST", "PORT")

_server_lock = threading.Lock()
_server_started = False


def ensure_database_server() -> None:
    """Start the database server that settings.DATABASE_SERVER_STARTER names, once per process.

    Only the embedded server has a starter (a server of your own runs already, and the
    setting is None). Called by the database backend before every connection it opens
    (the pool's included) and before the direct connections of backups and metrics, so
    the server starts when a process first needs it, not when settings are imported.
    """
    global _server_started
    if _server_started or not settings.DATABASE_SERVER_STARTER:
        return
    with _server_lock:
        if not _server_started:
            import_string(settings.DATABASE_SERVER_STARTER)()
            _server_started = True


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


def begins_transaction(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether an atomic block entered now begins the transaction, and so also ends it.

    From Django's own bookkeeping, without a query: outside every atomic block and in
    autocommit. Transaction-scoped settings made in such a block need no restoring.
    """
    connection = connections[using]
    return not connection.in_atomic_block and connection.get_autocommit()


# The SQL of advisory_xact_lock, for a statement that takes the lock along with other
# work (one round trip instead of two); its one parameter is the key.
ADVISORY_XACT_LOCK_SQL = "pg_advisory_xact_lock(hashtextextended(%s, 0))"


def advisory_xact_lock(key: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Hold an advisory lock on `key` until the current transaction ends.

    Serialises writers of one sequence (versions of a document, messages of a
    conversation): the next one reads the latest row only after this one committed.
    Transaction-scoped, so it is safe behind PgBouncer's transaction pooling.
    """
    if not connections[using].in_atomic_block:
        raise RuntimeError("advisory_xact_lock needs a transaction")
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {ADVISORY_XACT_LOCK_SQL}", [key])


# The SQLSTATE with which a trigger refuses a write that the caller could have avoided
# (a new row for a deleted project): `RAISE EXCEPTION '<what to fix>' USING ERRCODE =
# WRITE_REFUSED_SQLSTATE, COLUMN = '<field>'`. Class 55, "object not in prerequisite
# state", and a code of its own, so no other error is taken for one.
WRITE_REFUSED_SQLSTATE = "55D01"


def write_refusal(error: BaseException) -> ValidationError | None:
    """The ValidationError naming the field that a trigger's refusal names, if `error` is one.

    tenancy.context turns a refusal into it as the refused block leaves its savepoint, so
    every service raises it, whichever statement the trigger refused.
    """
    cause = error.__cause__ if isinstance(error, DatabaseError) else None
    diag = getattr(cause, "diag", None)
    if diag is None or diag.sqlstate != WRITE_REFUSED_SQLSTATE:
        return None
    return ValidationError({diag.column_name or NON_FIELD_ERRORS: diag.message_primary})


# The policy every tenant table grants to the owner role alone, admitting every row
# while app.rls_bypass is on (tenancy.context.system_context).
SYSTEM_BYPASS_POLICY = "system_bypass"


def require_sees_every_row(table: str, *, job: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Raise ImproperlyConfigured unless this transaction sees every row of `table`.

    True where row-level security does not apply to the role (superuser, BYPASSRLS), or
    where the bypass is on and the table's system_bypass policy admits the role: the
    owner's, since the migrations granted it to the role that ran them. Where
    DATABASE_OWNER_URL is unset the "owner" is the runtime role, which the policy does
    not admit: a system job would see no row at all, and one that deletes what has no
    row (the storage sweeps) would delete everything.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT NOT row_security_active(%s::regclass) OR (app_rls_bypassed() AND EXISTS ("
            "  SELECT 1 FROM pg_policy p WHERE p.polrelid = %s::regclass AND p.polname = %s"
            "  AND (p.polroles = '{0}' OR EXISTS (SELECT 1 FROM unnest(p.polroles) AS r (oid)"
            "  WHERE pg_has_role(r.oid, 'MEMBER'))))), current_user",
            [table, table, SYSTEM_BYPASS_POLICY],
        )
        sees_every_row, role = cursor.fetchone()
    if not sees_every_row:
        raise ImproperlyConfigured(
            f"{job} must run as the owner role (DATABASE_OWNER_URL), the only role the "
            f"row-level security bypass admits; as {role} it sees no row of {table}, so "
            "every live file would look orphaned. Nothing was changed."
        )


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


# What the runtime role must be (section 7): it logs in and can get around nothing.
# Keyed by the pg_roles column that shows each attribute.
RUNTIME_ROLE_ATTRIBUTES = {
    "rolcanlogin": ("LOGIN", True),
    "rolsuper": ("NOSUPERUSER", False),
    "rolbypassrls": ("NOBYPASSRLS", False),
    "rolcreatedb": ("NOCREATEDB", False),
    "rolcreaterole": ("NOCREATEROLE", False),
}
# Stands for the password in SQL shown to people; the real one is never printed.
PASSWORD_PLACEHOLDER = "<the password from DATABASE_URL>"


class RoleSetupRefused(Exception):
    """The connected role may not create or alter the runtime role; says what SQL to run."""

    def __init__(self, reason: str, statement: str) -> None:
        super().__init__(f"{reason}\nAn administrator must run:\n\n    {statement};\n")
        self.statement = statement


def _role_statement(
    role: str, keywords: list[str], *, create: bool, password: str | None
) -> sql.Composed:
    parts = [sql.SQL("CREATE ROLE" if create else "ALTER ROLE"), sql.Identifier(role)]
    parts += [sql.SQL(keyword) for keyword in keywords]
    if password is not None:
        parts += [sql.SQL("PASSWORD"), sql.Literal(password)]
    return sql.SQL(" ").join(parts)


def ensure_runtime_role(cursor, role: str, *, password: str = "") -> str:
    """Create the runtime role, or bring an existing one to RUNTIME_ROLE_ATTRIBUTES.

    Returns "created", "updated" or "unchanged". The password (if any) is sent as a
    SCRAM verifier computed here, so it never reaches the server's logs in clear.
    When the connected role may not manage roles, a role that already has the right
    attributes is left alone (password included: an administrator set it); anything
    else raises RoleSetupRefused with the statement an administrator must run.
    """
    cursor.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    may_manage_roles = cursor.fetchone()[0]
    columns = sql.SQL(", ").join(map(sql.Identifier, RUNTIME_ROLE_ATTRIBUTES))
    cursor.execute(sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(columns), [role])
    found = cursor.fetchone()
    create = found is None
    current = dict(zip(RUNTIME_ROLE_ATTRIBUTES, found, strict=True)) if found else {}
    keywords = [
        keyword
        for column, (keyword, wanted) in RUNTIME_ROLE_ATTRIBUTES.items()
        if current.get(column) != wanted
    ]
    if not keywords and not (password and may_manage_roles):
        return "unchanged"

    def refused(reason: str) -> RoleSetupRefused:
        shown = _role_statement(
            role, keywords, create=create, password=PASSWORD_PLACEHOLDER if password else None
        )
        return RoleSetupRefused(reason, shown.as_string(cursor.connection))

    if not may_manage_roles:
        raise refused(
            "The owner role may not create or alter roles (it needs CREATEROLE or SUPERUSER)."
        )
    verifier = None
    if password:
        # algorithm None: the server's password_encryption setting decides.
        encrypted = cursor.connection.pgconn.encrypt_password(password.encode(), role.encode())
        verifier = encrypted.decode()
    try:
        cursor.execute(_role_statement(role, keywords, create=create, password=verifier))
    except ProgrammingError as error:
        # PostgreSQL 16+: CREATEROLE alone may not alter a role created by someone else,
        # nor touch SUPERUSER, BYPASSRLS or CREATEDB without having them itself.
        if not isinstance(error.__cause__, errors.InsufficientPrivilege):
            raise
        raise refused(f"PostgreSQL refused: {error}") from error
    logger.info("runtime role set up", extra={"role": role, "role_created": create})
    return "created" if create else "updated"


def role_settings(cursor, role: str) -> dict[str, str]:
    """The role's own session defaults (ALTER ROLE ... SET), in every database."""
    cursor.execute(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE r.rolname = %s AND s.setdatabase = 0",
        [role],
    )
    return dict(entry.split("=", 1) for (entry,) in cursor.fetchall())


def ensure_role_settings(cursor, role: str, wanted: dict[str, str]) -> list[str]:
    """Bring the role's session defaults to `wanted`; the names changed.

    Kept on the role (pg_db_role_setting), not in the application's connection options,
    so the limits hold for every session of the role: behind PgBouncer, from psql, from
    a process that forgot them. Raises RoleSetupRefused, with the statements an
    administrator must run, where the connected role may not change them.
    """
    current = role_settings(cursor, role)
    changed = [name for name, value in wanted.items() if current.get(name) != str(value)]
    statements = [
        sql.SQL("ALTER ROLE {} SET {} = {}").format(
            sql.Identifier(role), sql.Identifier(name), sql.Literal(str(wanted[name]))
        )
        for name in changed
    ]
    try:
        for statement in statements:
            cursor.execute(statement)
    except ProgrammingError as error:
        if not isinstance(error.__cause__, errors.InsufficientPrivilege):
            raise
        shown = ";\n    ".join(statement.as_string(cursor.connection) for statement in statements)
        raise RoleSetupRefused(
            "The owner role may not change the runtime role's settings (it needs "
            f"CREATEROLE with ADMIN OPTION on the role, or SUPERUSER): {error}",
            shown,
        ) from error
    if changed:
        logger.info("runtime role settings set", extra={"role": role, "settings": changed})
    return changed
