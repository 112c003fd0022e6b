"""Migrations are reversible, complete and named (DESIGN.md section 4)."""

from __future__ import annotations

import re

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunSQL

import core.safe_migration
from core.db import runtime_role_name

OUR_APPS = ("core", "tenancy", "documents", "agents", "exports")


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

FINGERPRINT_QUERIES = {
    "tables": """
        SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm')
    """,
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default,
               generation_expression
        FROM information_schema.columns WHERE table_schema = 'public'
    """,
    # Not the clones PostgreSQL makes of a key for each partition it involves: the server
    # numbers them (..._fk_1, _fk_2) in the order partitions come and go.
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace AND conparentid = 0
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger
        WHERE NOT tgisinternal
    """,
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = 'public'
    """,
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND NOT EXISTS (
            SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    """,
    "runtime_grants": """
        SELECT table_name, privilege_type FROM information_schema.role_table_grants
        WHERE grantee = %(runtime)s
    """,
}


def schema_fingerprint() -> dict[str, list[tuple]]:
    """Everything a migration creates, by name and definition (no oids)."""
    fingerprint = {}
    with connection.cursor() as cursor:
        for name, sql in FINGERPRINT_QUERIES.items():
            cursor.execute(sql, {"runtime": runtime_role_name()})
            fingerprint[name] = sorted(cursor.fetchall(), key=repr)
    return fingerprint


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
            assert "app_current_tenant_ids" not in {n for n, _ in schema_fingerprint()["functions"]}
    finally:
        call_command("migrate", verbosity=0)
    assert schema_fingerprint() == before


# --- Lock timeout (core.safe_migration, DESIGN.md section 8) ------------------------------


def test_every_migration_of_ours_waits_for_locks_at_most_the_lock_timeout():
    plain = [
        f"{m.app_label}.{m.name}"
        for m in our_migrations()
        if not isinstance(m, core.safe_migration.Migration)
    ]
    assert not plain, f"subclass core.safe_migration.Migration: {plain}"


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
