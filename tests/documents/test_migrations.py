"""The chunks migration gives its HNSW build the memory to build in RAM; the unique
SHA-256 index of documents keeps the duplicates uploaded before it."""

import importlib

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from documents.models import Document
from tenancy.context import tenant_context

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


def _sha256_rows(tenant) -> list[tuple[str, bool]]:
    with tenant_context(tenant):
        return list(Document.objects.order_by("id").values_list("title", "duplicate_allowed"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_unique_sha256_index_keeps_earlier_duplicates_marked(tenant_a, tenant_b):
    """documents.0022 on a database where a tenant already holds the same bytes twice:
    it cannot fail on them; all but the oldest are marked duplicate_allowed, then the
    index is built (valid) and refuses the next one."""
    digest = "a" * 64
    try:
        call_command("migrate", "documents", "0021", verbosity=0)
        for tenant, titles in ((tenant_a, ["first", "second", "third"]), (tenant_b, ["only"])):
            with tenant_context(tenant):
                for title in titles:
                    Document.objects.create(
                        tenant=tenant, title=title, storage_key=f"k/{title}", sha256=digest
                    )
        call_command("migrate", "documents", "0022", verbosity=0)
        assert _sha256_rows(tenant_a) == [("first", False), ("second", True), ("third", True)]
        assert _sha256_rows(tenant_b) == [("only", False)]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indisvalid FROM pg_index "
                "WHERE indexrelid = 'documents_tenant_sha256_uniq'::regclass"
            )
            assert cursor.fetchone() == (True,)
        with tenant_context(tenant_a), pytest.raises(IntegrityError):
            Document.objects.create(tenant=tenant_a, title="4th", storage_key="k/4", sha256=digest)
    finally:
        call_command("migrate", verbosity=0)
