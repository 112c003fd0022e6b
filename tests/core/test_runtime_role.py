"""`manage.py create_runtime_role` (DESIGN.md section 7) against the real database.

The embedded owner has no CREATEROLE, so the refusal is tested as is. The creation
and update paths need an owner that may create roles: a temporary member of the
owner role with CREATEROLE, made by the embedded superuser (skipped where there is
none, as on a DATABASE_URL deployment).
"""

import uuid
from io import StringIO

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from psycopg import sql

from config import embedded_db
from core.db import owner_connection, owner_role_name, runtime_role_name

pytestmark = pytest.mark.django_db(transaction=True)

ATTRIBUTES = "rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole"
RESTRICTED = (True, False, False, False, False)
DATA_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def run_command() -> str:
    out = StringIO()
    call_command("create_runtime_role", stdout=out)
    return out.getvalue()


def attributes(role: str) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {ATTRIBUTES} FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone()


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


@pytest.fixture
def fresh_role(settings) -> str:
    """A runtime role name that does not exist yet; dropped afterwards if it came to."""
    role = f"agentic_app_test_{uuid.uuid4().hex[:8]}"
    settings.DATABASE_RUNTIME_ROLE = role
    yield role
    settings.DATABASE_RUNTIME_ROLE = embedded_db.RUNTIME_ROLE
    if attributes(role) is not None:
        with superuser_cursor() as cursor:
            drop_role(cursor, role)


def test_refuses_when_runtime_and_owner_are_the_same_role(settings):
    settings.DATABASE_RUNTIME_ROLE = owner_role_name()
    with pytest.raises(CommandError) as raised:
        run_command()
    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "DATABASE_URL" in message and "DATABASE_OWNER_URL" in message
    assert "different roles" in message


def test_refuses_a_new_role_without_createrole_saying_what_sql_to_run(fresh_role):
    with pytest.raises(CommandError) as raised:
        run_command()
    message = str(raised.value)
    assert raised.value.returncode == 1
    assert "CREATEROLE" in message
    assert (
        f'CREATE ROLE "{fresh_role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;'
        in message
    )
    assert "run `python manage.py create_runtime_role` again" in message
    assert attributes(fresh_role) is None


def test_refusal_never_prints_the_password(fresh_role):
    password = "s3cret-from-database-url"
    default = settings.DATABASES["default"]
    original = default["PASSWORD"]
    default["PASSWORD"] = password
    try:
        with pytest.raises(CommandError) as raised:
            run_command()
    finally:
        default["PASSWORD"] = original
    message = str(raised.value)
    assert "PASSWORD '<the password from DATABASE_URL>'" in message
    assert password not in message


def test_existing_runtime_role_keeps_its_attributes_and_gets_its_grants():
    role = runtime_role_name()
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("REVOKE ALL ON projects FROM {}").format(sql.Identifier(role)))
    assert privileges(role)["projects data"] is False

    assert run_command() == (
        f"Runtime role '{role}' unchanged; privileges granted by '{owner_role_name()}'.\n"
    )
    assert attributes(role) == RESTRICTED
    assert privileges(role) == GRANTED


def test_is_idempotent_for_the_existing_role():
    role = runtime_role_name()
    first, second = run_command(), run_command()
    assert (
        first
        == second
        == (f"Runtime role '{role}' unchanged; privileges granted by '{owner_role_name()}'.\n")
    )
    assert privileges(role) == GRANTED


# --- With an owner that may create roles -------------------------------------------


class superuser_cursor:  # noqa: N801 - a context manager used like a function
    """A cursor as the embedded server's superuser on the test database."""

    def __enter__(self) -> psycopg.Cursor:
        owner = settings.DATABASE_OWNER
        try:
            self.conn = psycopg.connect(
                host=owner["HOST"] or None,
                port=owner["PORT"] or None,
                user=embedded_db.SUPERUSER,
                dbname=connection.settings_dict["NAME"],
                autocommit=True,
                connect_timeout=3,
            )
        except psycopg.OperationalError:
            pytest.skip("needs the embedded server's superuser")
        return self.conn.cursor()

    def __exit__(self, *exc_info) -> None:
        self.conn.close()


def drop_role(cursor, role: str) -> None:
    # DROP OWNED BY revokes what the role holds in this (the test) database.
    cursor.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def role_creating_owner(settings):
    """An owner that may create roles: a member of the owner role with CREATEROLE."""
    role = f"agentic_owner_test_{uuid.uuid4().hex[:8]}"
    with superuser_cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB IN ROLE {}").format(
                sql.Identifier(role), sql.Identifier(owner_role_name())
            )
        )
    settings.DATABASE_OWNER = {**settings.DATABASE_OWNER, "USER": role}
    yield role
    settings.DATABASE_OWNER = {**settings.DATABASE_OWNER, "USER": embedded_db.OWNER_ROLE}
    with superuser_cursor() as cursor:
        drop_role(cursor, role)


def test_creates_the_role_with_its_password(role_creating_owner, fresh_role):
    # Quotes and a statement in the password must stay data (sql.Literal).
    password = "pa'ss\"; DROP ROLE agentic_owner; --"
    default = settings.DATABASES["default"]
    original = default["PASSWORD"]
    default["PASSWORD"] = password
    try:
        out = run_command()
    finally:
        default["PASSWORD"] = original
    assert out == (
        f"Runtime role '{fresh_role}' created; privileges granted by '{role_creating_owner}'.\n"
    )
    assert attributes(fresh_role) == RESTRICTED
    assert privileges(fresh_role) == GRANTED
    assert attributes(embedded_db.OWNER_ROLE) is not None
    with superuser_cursor() as cursor:
        cursor.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [fresh_role])
        (stored,) = cursor.fetchone()
    assert stored.startswith("SCRAM-SHA-256$")


def test_updates_an_existing_role_to_the_restricted_attributes(role_creating_owner, fresh_role):
    run_command()
    with superuser_cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(fresh_role)))
    assert attributes(fresh_role)[3] is True

    assert run_command().startswith(f"Runtime role '{fresh_role}' updated;")
    assert attributes(fresh_role) == RESTRICTED
    assert run_command().startswith(f"Runtime role '{fresh_role}' unchanged;")


def test_refuses_to_demote_a_superuser_saying_what_sql_to_run(role_creating_owner, fresh_role):
    run_command()
    with superuser_cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(fresh_role)))

    with pytest.raises(CommandError) as raised:
        run_command()
    assert f'ALTER ROLE "{fresh_role}" NOSUPERUSER;' in str(raised.value)
    assert attributes(fresh_role)[1] is True
