"""The chunks migration gives its HNSW build the memory to build in RAM."""

import importlib

import pytest
from django.db import connection, transaction

initial = importlib.import_module("documents.migrations.0001_initial")


def maintenance_work_mem_after_the_migrations_sql(server_value: str) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", [server_value])
        cursor.execute(initial.RAISE_MAINTENANCE_WORK_MEM)
        cursor.execute("SHOW maintenance_work_mem")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_hnsw_migration_raises_a_small_maintenance_work_mem_for_its_build():
    assert maintenance_work_mem_after_the_migrations_sql("64MB") == initial.HNSW_BUILD_MEMORY


@pytest.mark.django_db
def test_the_hnsw_migration_keeps_a_servers_larger_maintenance_work_mem():
    assert maintenance_work_mem_after_the_migrations_sql("4GB") == "4GB"


def test_the_raised_memory_comes_before_the_hnsw_index_in_the_migration():
    names = [
        getattr(operation, "name", None) or type(operation).__name__
        for operation in initial.Migration.operations
    ]
    raise_at = next(
        index
        for index, operation in enumerate(initial.Migration.operations)
        if getattr(operation, "sql", None) == initial.RAISE_MAINTENANCE_WORK_MEM
    )
    assert raise_at < names.index("Chunk")
