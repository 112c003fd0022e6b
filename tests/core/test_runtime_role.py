"""`manage.py create_runtime_role` (docs/security.md) against the real database.

What the command may do depends on whether the owner may create roles (CREATEROLE), and
servers differ: the embedded owner has no CREATEROLE, docs/operations.md's own-PostgreSQL owner
has it. So each test sets up the owner it is about instead of assuming the server's:

- `owner_without_createrole`: the configured owner where it has no CREATEROLE, else a
  temporary login role without it;
- `owner_with_createrole`: the configured owner where it has CREATEROLE, else a
  temporary member of the owner role with it.

The tests' own roles are created and dropped by `role_admin()`: the server's superuser
where the tests can log in as it (the embedded server trusts its socket), else the
configured owner if it may create roles. Where neither exists, no owner with CREATEROLE
can be had, and only the tests that need one skip, saying so.
"""

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from psycopg import sql

from core.db.connections import libpq_options, owner_connection, owner_role_name, runtime_role_name
from core.db.roles import ensure_runtime_role, role_settings
from core.ops import embedded

pytestmark = pytest.mark.django_db(transaction=True)

ATTRIBUTES = "rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole"
RESTRICTED = (True, False, False, False, False)
DATA_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# Read before any test swaps the owner.
CONFIGURED_OWNER = settings.DATABASE_OWNER


def run_command(*, password: str | None = None) -> str:
    """The command's output; `password`, if given, is DATABASE_URL's password for the run.

    Only for the run: the runtime connections log in with that same setting, so the
    real password must be back before the test queries the database again.
    """
    default = settings.DATABASES["default"]
    original = default["PASSWORD"]
    if password is not None:
        default["PASSWORD"] = password
    out = StringIO()
    try:
        call_command("create_runtime_role", stdout=out)
    finally:
        default["PASSWORD"] = original
    return out.getvalue()


def attributes(role: str) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {ATTRIBUTES} FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone()


def may_create_roles(role: str) -> bool:
    _, superuser, _, _, createrole = attributes(role)
    return superuser or createrole


def privileges(role: str) -> dict[str, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT has_table_privilege(%(r)s, 'projects', %(data)s), "
            "has_table_privilege(%(r)s, 'django_migrations', 'SELECT'), "
            "has_table_privilege(%(r)s, 'django_migrations', 'INSERT'), "
            "has_schema_privilege(%(r)s, 'public', 'USAGE'), "
            "has_schema_privilege(%(r)s, 'public', 'CREATE')",
            {"r": role, "data": DATA_PRIVILEGES},
        )
        row = cursor.fetchone()
    keys = ("projects data", "migrations read", "migrations write", "schema usage", "create")
    return dict(zip(keys, row, strict=True))


GRANTED = {
    "projects data": True,
    "migrations read": True,
    "migrations write": False,
    "schema usage": True,
    "create": False,
}


# --- Roles of the tests' own ---------------------------------------------------------


def connect(user: str, password: str = "") -> psycopg.Connection:
    """A connection of the test's own to the test database, on the owner URL's server."""
    params = {
        "connect_timeout": 5,
        **libpq_options(CONFIGURED_OWNER["OPTIONS"]),
        "user": user,
        "password": password or None,
        "dbname": connection.settings_dict["NAME"],
        "autocommit": True,
    }
    for key in ("HOST", "PORT"):
        if CONFIGURED_OWNER[key]:
            params[key.lower()] = CONFIGURED_OWNER[key]
    return psycopg.connect(**params)


def superuser_connection() -> psycopg.Connection | None:
    """The server's superuser, where the tests can log in as it without a password."""
    try:
        return connect(embedded.SUPERUSER)
    except psycopg.OperationalError:
        return None


@contextmanager
def role_admin() -> Iterator[psycopg.Cursor]:
    """A cursor as a role that may create and drop the tests' roles."""
    conn = superuser_connection()
    if conn is None:
        if not may_create_roles(CONFIGURED_OWNER["USER"]):
            pytest.skip(
                "needs a role that may create roles: the owner of DATABASE_OWNER_URL has no "
                "CREATEROLE and the tests cannot log in as a superuser"
            )
        conn = connect(CONFIGURED_OWNER["USER"], CONFIGURED_OWNER["PASSWORD"])
    with conn, conn.cursor() as cursor:
        yield cursor


def drop_role(cursor, role: str) -> None:
    # DROP OWNED BY (which also revokes what the role was granted in this, the test,
    # database) needs the role's privileges: its creator holds ADMIN on it, so takes them.
    for statement in ("GRANT {} TO CURRENT_USER", "DROP OWNED BY {}", "DROP ROLE {}"):
        cursor.execute(sql.SQL(statement).format(sql.Identifier(role)))


def scram_verifier_matches(verifier: str, password: str) -> bool:
    """Whether a stored `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` is
    the verifier of `password` (RFC 5802 and 7677; ASCII passwords need no SASLprep)."""
    _, parameters, keys = verifier.split("$")
    iterations, salt = parameters.split(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    return hmac.compare_digest(stored_key, keys.split(":")[0])


def password_is(role: str, password: str) -> bool:
    """Whether `password` is the role's.

    PostgreSQL shows stored passwords to superusers only. Where the tests reach one (the
    embedded server, whose socket needs no password), the stored verifier is checked;
    elsewhere PostgreSQL checks the password itself, at login.
    """
    admin = superuser_connection()
    if admin is None:
        try:
            connect(role, password).close()
        except psycopg.OperationalError:
            return False
        return True
    with admin, admin.cursor() as cursor:
        cursor.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])
        (stored,) = cursor.fetchone()
    return stored is not None and scram_verifier_matches(stored, password)


@pytest.fixture
def fresh_role(settings) -> Iterator[str]:
    """A runtime role name that does not exist yet; dropped afterwards if it came to."""
    role = f"agentic_app_test_{uuid.uuid4().hex[:8]}"
    settings.DATABASE_RUNTIME_ROLE = role
    yield role
    if attributes(role) is not None:
        with role_admin() as cursor:
            drop_role(cursor, role)


@contextmanager
def temporary_owner(settings, role_attributes: str) -> Iterator[str]:
    """DATABASE_OWNER logs in as a new role with `role_attributes` for the block."""
    role, password = f"agentic_owner_test_{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    with role_admin() as cursor:
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + role_attributes).format(
                sql.Identifier(role), sql.Literal(password), owner=sql.Identifier(owner_role_name())
            )
        )
    settings.DATABASE_OWNER = {**settings.DATABASE_OWNER, "USER": role, "PASSWORD": password}
    try:
        yield role
    finally:
        with role_admin() as cursor:
            drop_role(cursor, role)


@pytest.fixture
def owner_without_createrole(settings) -> Iterator[str]:
    """An owner that may not create roles (its own tables are not needed: the command
    refuses before it grants anything)."""
    if not may_create_roles(owner_role_name()):
        yield owner_role_name()
        return
    with temporary_owner(settings, "NOCREATEROLE") as role:
        yield role


@pytest.fixture
def owner_with_createrole(settings) -> Iterator[str]:
    """An owner that may create roles and grants on the owner's tables."""
    if may_create_roles(owner_role_name()):
        yield owner_role_name()
        return
    with temporary_owner(settings, "CREATEROLE CREATEDB IN ROLE {owner}") as role:
        yield role


# --- Any owner ---------------------------------------------------------------------


def test_refuses_when_runtime_and_owner_are_the_same_role(settings):
    settings.DATABASE_RUNTIME_ROLE = owner_role_name()
    with pytest.raises(CommandError) as raised:
        run_command()
    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "DATABASE_URL" in message and "DATABASE_OWNER_URL" in message
    assert "different roles" in message


def test_existing_runtime_role_keeps_its_attributes_and_gets_its_grants():
    role = runtime_role_name()
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("REVOKE ALL ON projects FROM {}").format(sql.Identifier(role)))
    assert privileges(role)["projects data"] is False

    first_line = run_command().splitlines()[0]
    assert first_line.endswith(f"; privileges granted by '{owner_role_name()}'.")
    assert attributes(role) == RESTRICTED
    assert privileges(role) == GRANTED


def test_is_idempotent_for_the_existing_role():
    role = runtime_role_name()
    first, second = run_command(), run_command()
    assert first == second
    assert attributes(role) == RESTRICTED
    assert privileges(role) == GRANTED


# --- An owner without CREATEROLE ---------------------------------------------------


def test_refuses_a_new_role_without_createrole_saying_what_sql_to_run(
    owner_without_createrole, fresh_role
):
    # No password in DATABASE_URL (certificate or peer authentication): none in the SQL.
    with pytest.raises(CommandError) as raised:
        run_command(password="")
    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "CREATEROLE" in message
    assert (
        f'CREATE ROLE "{fresh_role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;'
        in message
    )
    assert "run `python manage.py create_runtime_role` again" in message
    assert attributes(fresh_role) is None


def test_refusal_never_prints_the_password(owner_without_createrole, fresh_role):
    password = "s3cret-from-database-url"
    with pytest.raises(CommandError) as raised:
        run_command(password=password)
    message = str(raised.value)
    assert "PASSWORD '<the password from DATABASE_URL>'" in message
    assert password not in message


def test_without_createrole_an_existing_restricted_role_is_left_alone(owner_without_createrole):
    # Its password too: an administrator set it. (At the level of core.db: a temporary
    # owner owns no tables, so the command's grants would fail after this step.)
    with owner_connection(), transaction.atomic(), connection.cursor() as cursor:
        outcome = ensure_runtime_role(cursor, runtime_role_name(), password="another-password")
    assert outcome == "unchanged"
    assert attributes(runtime_role_name()) == RESTRICTED


# --- An owner with CREATEROLE ------------------------------------------------------


def test_creates_the_role_with_its_password(owner_with_createrole, fresh_role):
    # Quotes and a statement in the password must stay data (sql.Literal).
    password = "pa'ss\"; DROP ROLE agentic_owner; --"
    first_line = run_command(password=password).splitlines()[0]
    assert first_line == (
        f"Runtime role '{fresh_role}' created; privileges granted by '{owner_with_createrole}'."
    )
    assert attributes(fresh_role) == RESTRICTED
    assert privileges(fresh_role) == GRANTED
    assert attributes(CONFIGURED_OWNER["USER"]) is not None
    assert password_is(fresh_role, password)


def test_a_new_role_gets_the_configured_session_limits(owner_with_createrole, fresh_role):
    out = run_command()
    assert out.splitlines()[1] == (
        f"Settings set on '{fresh_role}': statement_timeout, lock_timeout, "
        "idle_in_transaction_session_timeout, client_connection_check_interval."
    )
    with connection.cursor() as cursor:
        assert role_settings(cursor, fresh_role) == settings.DATABASE_RUNTIME_ROLE_SETTINGS


def test_an_existing_role_gets_the_password_of_database_url(owner_with_createrole, fresh_role):
    run_command(password="the-old-password")
    assert run_command(password="the-new-password").startswith(
        f"Runtime role '{fresh_role}' updated;"
    )
    assert password_is(fresh_role, "the-new-password")
    assert not password_is(fresh_role, "the-old-password")


def test_updates_an_existing_role_to_the_restricted_attributes(owner_with_createrole, fresh_role):
    # No password in DATABASE_URL, so that only the attributes can change.
    run_command(password="")
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(fresh_role)))
    assert attributes(fresh_role)[3] is True

    assert run_command(password="").startswith(f"Runtime role '{fresh_role}' updated;")
    assert attributes(fresh_role) == RESTRICTED
    assert run_command(password="").startswith(f"Runtime role '{fresh_role}' unchanged;")


def test_refuses_to_demote_a_superuser_saying_what_sql_to_run(owner_with_createrole, fresh_role):
    run_command()
    admin = superuser_connection()
    if admin is None:
        pytest.skip("only a superuser can make the superuser this test needs")
    with admin, admin.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(fresh_role)))

    with pytest.raises(CommandError) as raised:
        run_command()
    assert f'ALTER ROLE "{fresh_role}" NOSUPERUSER' in str(raised.value)
    assert attributes(fresh_role)[1] is True
