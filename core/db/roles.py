"""The roles: the runtime role's attributes, grants and settings, and the RLS bypass guard.

The runtime role serves requests and services and can get around nothing
(docs/security.md); `ensure_runtime_role()`, `grant_runtime_privileges()` and
`ensure_role_settings()` set it up from the owner's connection. The owner role alone is
admitted by every tenant table's system_bypass policy; `require_sees_every_row()` lets a
system job make sure of that before it acts on "every row".
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, ProgrammingError, connections
from psycopg import errors, sql

from core.db.audit import APPEND_ONLY_TRIGGER

logger = logging.getLogger(__name__)

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
    revoke_append_only_writes(cursor, runtime_role)


def revoke_append_only_writes(cursor, runtime_role: str) -> None:
    """No UPDATE, DELETE or TRUNCATE of the append-only tables for the runtime role; also
    run after new partitions of them are made, which get the default privileges."""
    for table in append_only_tables(cursor):
        cursor.execute(
            sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}").format(
                table=sql.Identifier(table), role=sql.Identifier(runtime_role)
            )
        )


def append_only_tables(cursor) -> list[str]:
    """The tables with the audit trail's append-only trigger (core.db.audit), partitions
    included (a partition can be written directly): insert and read only, for the
    runtime role. Their trigger refuses UPDATE and DELETE to every role besides."""
    cursor.execute(
        "SELECT DISTINCT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND t.tgname = %s ORDER BY 1",
        [APPEND_ONLY_TRIGGER],
    )
    return [name for (name,) in cursor.fetchall()]


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
