"""The runtime role's session timeouts (docs/operations.md): on the role, and enforced.

The limits live on the role (pg_db_role_setting), so these tests change them the way
an operator would, on the role, and watch a fresh connection of the role obey them.
An ordinary role may set its own defaults, so the runtime role does it itself here;
every test restores the configured values.
"""

import threading
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import InternalError, OperationalError, connection, transaction
from psycopg import sql

from core.db.connections import runtime_role_name
from core.db.roles import role_settings

pytestmark = pytest.mark.django_db(transaction=True)


def fresh_connection() -> None:
    """The next query opens a new session, which reads the role's defaults."""
    connection.close()
    connection.close_pool()


def set_own_default(name: str, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("ALTER ROLE CURRENT_USER SET {} = {}")
            .format(sql.Identifier(name), sql.Literal(value))
            .as_string(cursor.connection)
        )
    fresh_connection()


@contextmanager
def role_default(name: str, value: str):
    set_own_default(name, value)
    try:
        yield
    finally:
        set_own_default(name, settings.DATABASE_RUNTIME_ROLE_SETTINGS[name])


def test_the_runtime_role_carries_the_configured_timeouts():
    with connection.cursor() as cursor:
        found = role_settings(cursor.cursor, runtime_role_name())
    assert {name: found.get(name) for name in settings.DATABASE_RUNTIME_ROLE_SETTINGS} == (
        settings.DATABASE_RUNTIME_ROLE_SETTINGS
    )
    assert set(settings.DATABASE_RUNTIME_ROLE_SETTINGS) == {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "client_connection_check_interval",
    }


def test_a_statement_running_past_the_limit_is_cancelled():
    with role_default("statement_timeout", "300ms"):
        with pytest.raises(OperationalError, match="canceling statement due to statement timeout"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(5)")


def test_waiting_for_a_lock_past_the_limit_is_cancelled():
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        from django.db import connections

        with transaction.atomic(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(42)")
            holding.set()
            release.wait(30)
        connections["default"].close()

    with role_default("lock_timeout", "300ms"):
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        try:
            assert holding.wait(30)
            with pytest.raises(OperationalError, match="canceling statement due to lock timeout"):
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(42)")
        finally:
            release.set()
            holder.join()


def test_a_transaction_left_idle_past_the_limit_is_ended_by_the_server():
    with role_default("idle_in_transaction_session_timeout", "300ms"):
        with pytest.raises(
            InternalError, match="terminating connection due to idle-in-transaction"
        ):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                threading.Event().wait(1.5)
                cursor.execute("SELECT 1")
    fresh_connection()
