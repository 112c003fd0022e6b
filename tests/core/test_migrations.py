"""Migrations are reversible, complete and named (docs/development.md)."""

from __future__ import annotations

import io
import re

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunSQL

import core.db.operations
from core.db.connections import owner_connection
from tests.databases import connected_to
from tests.schema_fingerprint import OUR_APPS, schema_fingerprint

pytestmark = pytest.mark.slow


def our_migrations() -> list:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return [
        migration
        for (app, _), migration in sorted(loader.disk_migrations.items())
        if app in OUR_APPS
    ]


def run_sql_operations() -> list:
    return [
        pytest.param(op, id=f"{migration.app_label}.{migration.name}#{index}")
        for migration in our_migrations()
        for index, op in enumerate(migration.operations)
        if isinstance(op, RunSQL)
    ]


@pytest.mark.parametrize("operation", run_sql_operations())
def test_every_run_sql_has_reverse_sql(operation):
    assert operation.reverse_sql is not None
    assert operation.reversible


def test_every_operation_of_our_migrations_is_reversible():
    irreversible = [
        f"{migration.app_label}.{migration.name}: {op.describe()}"
        for migration in our_migrations()
        for op in migration.operations
        if not op.reversible
    ]
    assert not irreversible


def test_every_migration_is_named():
    auto = [f"{m.app_label}.{m.name}" for m in our_migrations() if re.search(r"_auto_\d+", m.name)]
    assert not auto, f"name these with makemigrations -n: {auto}"


def test_models_and_migrations_agree(db):
    # Raises SystemExit(1) when a model change has no migration.
    call_command("makemigrations", check=True, dry_run=True, verbosity=0)


# --- migrate <app> zero and back ----------------------------------------------------------


def app_tables(app_label: str) -> list[str]:
    return [model._meta.db_table for model in apps.get_app_config(app_label).get_models()]


def applied(app_label: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = %s", [app_label])
        return cursor.fetchone()[0]


def existing(tables: list[str]) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relname = ANY(%s)",
            [tables],
        )
        return sorted(name for (name,) in cursor.fetchall())


# Dependents first: unapplying an app also unapplies the apps that depend on it.
@pytest.mark.parametrize("app_label", ["exports", "agents", "documents", "tenancy", "core"])
@pytest.mark.django_db(transaction=True)
def test_migrating_an_app_to_zero_and_back_restores_the_schema(app_label):
    before = schema_fingerprint()
    try:
        call_command("migrate", app_label, "zero", verbosity=0)
        assert applied(app_label) == 0
        assert existing(app_tables(app_label)) == []
        if app_label == "core":
            assert "app_current_tenant_ids" not in {
                row[0] for row in schema_fingerprint()["functions"]
            }
    finally:
        call_command("migrate", verbosity=0)
    assert schema_fingerprint() == before


# --- Lock timeout (core.db.operations, docs/operations.md) ------------------------------


def test_every_migration_of_ours_waits_for_locks_at_most_the_lock_timeout():
    plain = [
        f"{m.app_label}.{m.name}"
        for m in our_migrations()
        if not isinstance(m, core.db.operations.Migration)
    ]
    assert not plain, f"subclass core.db.operations.Migration: {plain}"


def lock_timeout_in_chain(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, psycopg.errors.LockNotAvailable):
            return True
        error = error.__cause__ or error.__context__
    return False


@pytest.mark.django_db(transaction=True)
def test_a_migration_blocked_by_a_lock_gives_up_after_the_lock_timeout(settings):
    settings.MIGRATION_LOCK_TIMEOUT = "100ms"
    params = connection.settings_dict
    # Another session reading exports holds ACCESS SHARE until it ends; taking row-level
    # security off the table (exports.0002 backwards) needs ACCESS EXCLUSIVE.
    with psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
    ) as reader:
        reader.execute("SELECT count(*) FROM exports")
        try:
            with pytest.raises(CommandError) as error:
                call_command("migrate", "exports", "0001", verbosity=0)
            assert lock_timeout_in_chain(error.value)
            assert str(error.value).startswith(
                "The migration being applied gave up after waiting 100ms "
                "(MIGRATION_LOCK_TIMEOUT) for a lock that another session holds"
            )
        finally:
            reader.rollback()
            call_command("migrate", verbosity=0)


@pytest.fixture
def unmigrated_app_database(transactional_db):
    """The default connection on an empty database, as on a fresh clone before migrate."""
    empty = f"{connection.settings_dict['NAME']}_empty"
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{empty}"')
        cursor.execute(f'CREATE DATABASE "{empty}"')
    try:
        with connected_to(empty):
            yield empty
    finally:
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{empty}"')


def database_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {name for (name,) in cursor.fetchall()}


def test_migrations_sql_needs_no_migrated_database_and_leaves_none_behind(
    unmigrated_app_database, tmp_path
):
    """`make lint` on a fresh clone: the partition rebuild reads the catalog to write its
    SQL, so the command writes it from a scratch database, migrated and then dropped."""
    databases = database_names()
    call_command("migrations_sql", tmp_path, stdout=io.StringIO())
    partition = (tmp_path / "agents" / "0010_partition_agent_executions.sql").read_text()
    assert "PARTITION BY RANGE (id)" in partition
    assert len(list(tmp_path.glob("*/*.sql"))) == len(our_migrations())
    assert connection.settings_dict["NAME"] == unmigrated_app_database
    assert database_names() == databases
    assert "agent_executions" not in connection.introspection.table_names()
