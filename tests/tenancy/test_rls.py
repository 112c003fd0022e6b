"""Row-level security (docs/security.md), tested as the runtime role."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from core.db.connections import owner_connection
from core.ids import uuid7
from documents.models import Chunk, Document, Project
from documents.selectors import project_list
from tenancy.context import current_tenant_ids, system_context, tenant_context, tenant_scope
from tenancy.models import Tenant
from tests.factories import (
    TENANT_ROW_BUILDERS,
    make_member,
    make_tenant_rows,
    tenant_owned_models,
)


def tenant_tables() -> list[str]:
    """Every table in the public schema with a tenant_id column, from the catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' "
            "AND t.table_type = 'BASE TABLE' ORDER BY 1"
        )
        return [row[0] for row in cursor.fetchall()]


def test_every_tenant_table_has_forced_rls_and_policies(db):
    tables = tenant_tables()
    assert {"projects", "chunks", "memberships"} <= set(tables)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "array_agg(p.polname ORDER BY p.polname) FILTER (WHERE p.polname IS NOT NULL) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_policy p ON p.polrelid = c.oid "
            "WHERE n.nspname = 'public' AND c.relname = ANY(%s) GROUP BY 1, 2, 3",
            [tables],
        )
        found = {name: (enabled, forced, policies) for name, enabled, forced, policies in cursor}
    lacking = {
        table: found.get(table)
        for table in tables
        if found.get(table, (False, False, None))[:2] != (True, True)
        or "tenant_isolation" not in (found[table][2] or [])
    }
    assert lacking == {}, f"tables without enabled+forced tenant_isolation policy: {lacking}"


def test_every_tenant_owned_model_has_an_isolation_row_builder():
    labels = {model._meta.label for model in tenant_owned_models()}
    assert labels <= set(TENANT_ROW_BUILDERS), labels - set(TENANT_ROW_BUILDERS)


def test_no_tenant_set_sees_no_rows_and_cannot_insert(tenant_a):
    make_tenant_rows(tenant_a)
    with transaction.atomic(), connection.cursor() as cursor:
        for table in tenant_tables():
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            assert cursor.fetchone()[0] == 0, table
    with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
        Project.objects.create(tenant=tenant_a, name="sneaky")


def test_an_empty_tenant_setting_is_no_tenant_not_a_cast_error(tenant_a):
    make_tenant_rows(tenant_a)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.tenant_ids', '', true)")
        cursor.execute("SELECT count(*) FROM projects")
        assert cursor.fetchone()[0] == 0


def _insertable_columns(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
        [table],
    )
    return [row[0] for row in cursor.fetchall()]


def _append_only(cursor, table: str) -> bool:
    cursor.execute("SELECT NOT has_table_privilege(%s, 'UPDATE')", [table])
    return cursor.fetchone()[0]


@pytest.mark.parametrize("label", sorted(TENANT_ROW_BUILDERS))
def test_tenant_b_cannot_read_change_delete_or_forge_tenant_a_rows(label, tenant_a, tenant_b):
    rows = make_tenant_rows(tenant_a)
    make_tenant_rows(tenant_b)
    row = next(row for model, row in rows.items() if model._meta.label == label)
    table = sql.Identifier(row._meta.db_table)
    # An owner of tenant A sees every row of it, the access grants among them.
    owner_a = make_member(tenant_a, "owner-a@example.com")
    with tenant_context(tenant_a, user=owner_a), connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE id = %s").format(table), [row.pk]
        )
        original = json.loads(cursor.fetchone()[0])  # Django reads jsonb as text
        columns = _insertable_columns(cursor, row._meta.db_table)

    with tenant_context(tenant_b), connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(table), [row.pk])
        assert cursor.fetchone()[0] == 0
        for statement in (
            sql.SQL("UPDATE {} SET created_at = created_at WHERE id = %s").format(table),
            sql.SQL("DELETE FROM {} WHERE id = %s").format(table),
        ):
            if _append_only(cursor, row._meta.db_table):
                # The audit trail: refused outright, whichever tenant's row.
                with pytest.raises(DatabaseError, match="permission denied"):
                    with transaction.atomic():
                        cursor.execute(statement, [row.pk])
            else:
                cursor.execute(statement, [row.pk])
                assert cursor.rowcount == 0
        # Re-insert tenant A's row under a new id: refused by the WITH CHECK policy. A
        # UUIDv7 as every id, or a partitioned table refuses it first for want of a month.
        forged = {**original, "id": str(uuid7())}
        column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {table} ({columns}) "
                    "SELECT {columns} FROM jsonb_populate_record(NULL::{table}, %s::jsonb)"
                ).format(table=table, columns=column_list),
                [json.dumps(forged)],
            )

    with tenant_context(tenant_a, user=owner_a), connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(table), [row.pk])
        assert cursor.fetchone()[0] == 1, "tenant A's row survived untouched"


@pytest.mark.parametrize(
    "table",
    [
        "projects",
        "document_versions",
        "documents",
        "chunks",
        "agent_executions",
        "execution_sources",
        "conversation_messages",
        "evaluation_runs",
        "change_proposals",
        "decisions",
        "execution_errors",
        "exports",
        "project_templates",
        "project_access",
        "document_access",
    ],
)
def test_tenant_b_cannot_move_its_rows_into_tenant_a(table, tenant_a, tenant_b):
    make_tenant_rows(tenant_b)
    owner_b = make_member(tenant_b, "owner-b@example.com")  # who sees every row of B
    with tenant_context(tenant_b, user=owner_b), connection.cursor() as cursor:
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute(
                sql.SQL("UPDATE {} SET tenant_id = %s").format(sql.Identifier(table)),
                [tenant_a.pk],
            )


def test_a_child_cannot_point_at_another_tenants_parent(tenant_a, tenant_b):
    rows_a = make_tenant_rows(tenant_a)
    with tenant_context(tenant_b), connection.cursor() as cursor:
        with pytest.raises(DatabaseError, match="document_versions_project_tenant_fk"):
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO document_versions (tenant_id, project_id, document_type, "
                    "version, content, content_sha256, prev_sha256, metadata) "
                    "VALUES (%s, %s, 'plan', 1, 'x', "
                    "encode(sha256('x'::bytea), 'hex'), NULL, '{}')",
                    [tenant_b.pk, rows_a[Project].pk],
                )


@pytest.mark.django_db(transaction=True)
def test_not_even_the_owner_can_attach_a_child_to_another_tenants_parent(tenant_a, tenant_b):
    rows_a = make_tenant_rows(tenant_a)
    with system_context("test: owner role cannot cross tenants"), connection.cursor() as cursor:
        with pytest.raises(DatabaseError, match="chunks_document_tenant_fk"):
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO chunks (tenant_id, document_id, ordinal, content, token_count, "
                    "embedding_model, metadata) VALUES (%s, %s, 99, 'x', 1, '', '{}')",
                    [tenant_b.pk, rows_a[Chunk.document.field.related_model].pk],
                )


def test_tenant_context_accepts_several_tenants(tenant_a, tenant_b):
    make_tenant_rows(tenant_a)
    make_tenant_rows(tenant_b)
    with tenant_context(tenant_a, tenant_b.pk):
        assert Project.objects.count() == 2
    with tenant_context(tenant_b):
        assert Project.objects.count() == 1


def test_a_nested_context_may_narrow_and_restores_the_outer_scope(tenant_a, tenant_b):
    with tenant_context(tenant_a, tenant_b):
        with tenant_context(tenant_b):
            assert current_tenant_ids() == [tenant_b.pk]
        assert current_tenant_ids() == sorted([tenant_a.pk, tenant_b.pk])
    with transaction.atomic():
        assert current_tenant_ids() == []


def test_a_nested_context_replaces_the_outer_tenants_outside_requests(tenant_a, tenant_b):
    with tenant_context(tenant_a):
        with tenant_context(tenant_b):
            assert current_tenant_ids() == [tenant_b.pk]
        assert current_tenant_ids() == [tenant_a.pk]


def test_inside_a_request_scope_a_context_may_narrow_but_not_widen(tenant_a, tenant_b):
    make_tenant_rows(tenant_b)
    with tenant_scope([tenant_a, tenant_b], locked=True):
        with tenant_context(tenant_a):
            assert current_tenant_ids() == [tenant_a.pk]
            with pytest.raises(PermissionDenied, match="cannot widen"):
                with tenant_context(tenant_b):
                    pass
        assert current_tenant_ids() == sorted([tenant_a.pk, tenant_b.pk])


def test_a_request_scope_without_tenants_cannot_be_widened(tenant_a):
    make_tenant_rows(tenant_a)
    with tenant_scope([], locked=True):
        with pytest.raises(PermissionDenied):
            with tenant_context(tenant_a):
                pass


@pytest.mark.django_db(transaction=True)
def test_the_system_bypass_may_enter_any_tenant(tenant_a, tenant_b):
    make_tenant_rows(tenant_b)
    with system_context("test: enter tenants"), tenant_scope([tenant_a], locked=True):
        with tenant_context(tenant_b):
            assert current_tenant_ids() == [tenant_b.pk]


def test_a_user_may_read_but_not_delete_their_memberships_outside_the_scope(alice, tenant_a):
    with tenant_scope([], user_id=alice.pk), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM memberships WHERE user_id = %s", [alice.pk])
        assert cursor.fetchone()[0] == 1
        cursor.execute("DELETE FROM memberships WHERE user_id = %s", [alice.pk])
        assert cursor.rowcount == 0
        cursor.execute("UPDATE memberships SET role = 'viewer' WHERE user_id = %s", [alice.pk])
        assert cursor.rowcount == 0


def test_tenant_context_works_as_a_decorator(tenant_a):
    @tenant_context(tenant_a)
    def create() -> Project:
        return Project.objects.create(tenant=tenant_a, name="decorated")

    create()
    with tenant_context(tenant_a):
        assert Project.objects.filter(name="decorated").exists()


def test_tenant_context_needs_a_tenant():
    with pytest.raises(ValueError, match="at least one tenant"):
        with tenant_context():
            pass


@pytest.mark.django_db(transaction=True)
def test_system_context_sees_every_tenant_and_is_logged(tenant_a, tenant_b, caplog):
    make_tenant_rows(tenant_a)
    make_tenant_rows(tenant_b)
    with caplog.at_level("WARNING", logger="tenancy.context"):
        with system_context("test: count every tenant"):
            assert Project.objects.count() == 2
    assert "row-level security bypass: test: count every tenant" in caplog.text
    # The bypass ends with its transaction and the runtime role is back.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_user, count(*) FROM projects GROUP BY 1")
        assert cursor.fetchall() == []
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] != "agentic_owner"


@pytest.mark.django_db(transaction=True)
def test_the_runtime_role_cannot_turn_the_bypass_on(tenant_a):
    make_tenant_rows(tenant_a)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.rls_bypass', 'on', true)")
        cursor.execute("SELECT count(*) FROM projects")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_tenant_setting_never_leaks_between_transactions_on_pooled_connections():
    tenants = [Tenant.objects.create(name=f"T{n}", slug=f"t{n}") for n in range(4)]
    for n, tenant in enumerate(tenants):
        with tenant_context(tenant):
            Project.objects.bulk_create(
                [Project(tenant=tenant, name=f"p{i}") for i in range(n + 1)]
            )
    expected = {tenant.pk: n + 1 for n, tenant in enumerate(tenants)}
    failures, backends = [], set()
    lock = threading.Lock()

    def worker(offset: int) -> None:
        try:
            for i in range(15):
                tenant = tenants[(offset + i) % len(tenants)]
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT coalesce(current_setting('app.tenant_ids', true), ''), "
                        "pg_backend_pid()"
                    )
                    leaked, pid = cursor.fetchone()
                with tenant_context(tenant):
                    seen = Project.objects.count()
                with lock:
                    backends.add(pid)
                    if leaked:
                        failures.append(("leaked setting", leaked))
                    if seen != expected[tenant.pk]:
                        failures.append(("wrong rows", tenant.slug, seen))
                connection.close()  # back to the pool: the next transaction may get another
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            failures.append(("error", repr(error)))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # 180 transactions ran on far fewer server connections: they were reused.
    assert len(backends) <= 10


@pytest.mark.django_db(transaction=True)
def test_tenant_scoped_project_list_uses_its_index_under_rls():
    tenants = [Tenant.objects.create(name=f"T{n}", slug=f"t{n}") for n in range(20)]
    for tenant in tenants:
        with tenant_context(tenant):
            Project.objects.bulk_create(
                [Project(tenant=tenant, name=f"p{i}", status="draft") for i in range(200)]
            )
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("ANALYZE projects")
    with tenant_context(tenants[0]):
        text = project_list(tenant=tenants[0], status="draft")[:20].explain()
    assert "projects_tenant_live_idx" in text, text


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_chunk_knn_uses_the_hnsw_index_under_rls(tenant_a, tenant_b):
    from pgvector.django import CosineDistance

    from documents.embedding import get_embedder

    embedder = get_embedder()
    texts = [f"note {n} about topic {n % 37} and item {n % 11}" for n in range(2000)]
    vectors = embedder.embed(texts)
    # Tenant A holds most chunks: the planner prefers the HNSW index over sorting them.
    # (For a small tenant it rightly sorts the rows its tenant index finds: exact and fast.)
    # Spread over documents as real chunks are: the access condition of the chunks policy,
    # document_id <> ALL (hidden documents), is estimated from document_id's distinct
    # values, and with two documents in the whole table it would look very selective.
    for tenant, share in ((tenant_b, texts[:200]), (tenant_a, texts[200:])):
        first = make_tenant_rows(tenant)[Document]
        offset = 0 if tenant is tenant_b else 200
        with tenant_context(tenant):
            documents = [first] + [
                Document.objects.create(
                    tenant=tenant, title=f"Doc {n}", storage_key=f"k/{tenant.pk}/{n}"
                )
                for n in range(24)
            ]
            Chunk.objects.bulk_create(
                [
                    Chunk(
                        tenant=tenant,
                        document=documents[n % len(documents)],
                        ordinal=n + 1,
                        content=text,
                        embedding=vectors[offset + n],
                        embedding_model=embedder.model,
                    )
                    for n, text in enumerate(share)
                ]
            )
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("ANALYZE chunks")
    query = embedder.embed(["note 5 about topic 5"])[0]
    # Filtered on the tenant as every service's query is: on a Citus cluster that is
    # what routes it to the one shard that holds the tenant, whose plan EXPLAIN shows.
    with tenant_context(tenant_a):
        nearest = Chunk.objects.filter(tenant=tenant_a).order_by(CosineDistance("embedding", query))
        text = nearest[:5].explain()
    assert "chunks_embedding_hnsw_idx" in text, text
