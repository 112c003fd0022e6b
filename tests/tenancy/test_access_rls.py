"""Access below the tenant (docs/security.md, "Restricted rows"), tested as the runtime role.

The isolation tests of test_rls.py with a user dimension: in one tenant, a restricted
project and a restricted document, each with one row of every table that hangs off
them (tests/factories.py), beside the same rows unrestricted. Every table that hangs off
a project, a run or a document is found from the catalog (its project_id, execution_id
or document_id column), so a table added later is covered without touching this file.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection, connections, transaction
from django.urls import reverse
from psycopg import sql

from core.db.connections import owner_connection
from documents.models import Chunk, Document, Project
from documents.services import (
    document_access_grant,
    document_restrict,
    project_access_grant,
    project_access_revoke,
    project_restrict,
    project_unrestrict,
)
from exports.models import Export
from tenancy.context import tenant_context
from tenancy.models import Membership
from tests.admin_helpers import REFUSED, admin_url, autocomplete, listed, logged_in
from tests.factories import make_member, make_tenant_rows

HANGING_COLUMNS = ("project_id", "execution_id", "document_id", "chunk_id")

# Tables that name a run but whose rows are their writer's own, not the run's project's:
# the search log (documents.0026) is read by the searcher and by the tenant's owners and
# admins only, which is narrower than any access list, so it carries none. Each is
# checked below for that policy instead (tests/documents/test_search_log.py tests it).
OWN_ROWS = {"search_queries": "(user_id = app_current_user_id())"}


def _own_rows_tables() -> set[str]:
    """OWN_ROWS and their partitions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = ANY (%s::text[]::regclass[])",
            [list(OWN_ROWS)],
        )
        return set(OWN_ROWS) | {row[0] for row in cursor.fetchall()}


def tables_below_projects_and_documents() -> dict[str, list[str]]:
    """Every tenant table (partitions too) holding a project's, a run's, a document's or a
    chunk's rows, with the columns that say whose; projects and documents themselves."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.column_name) "
            "FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "AND c.column_name = ANY (%s) AND EXISTS (SELECT FROM information_schema.columns x "
            "  WHERE x.table_schema = 'public' AND x.table_name = c.table_name "
            "  AND x.column_name = 'tenant_id') GROUP BY 1 ORDER BY 1",
            [list(HANGING_COLUMNS)],
        )
        tables = dict(cursor.fetchall())
    own_rows = _own_rows_tables()
    tables = {table: columns for table, columns in tables.items() if table not in own_rows}
    return {"projects": [], "documents": ["project_id"], **tables}


def test_tables_of_own_rows_are_read_by_their_writer_and_full_access_only(db):
    """The tables left out of the access lists above hold the writer's own rows: each
    (and each partition) reads them by the row's user or the tenant's full access."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, qual FROM pg_policies WHERE schemaname = 'public' "
            "AND policyname = 'tenant_isolation' AND tablename = ANY (%s)",
            [sorted(_own_rows_tables())],
        )
        policies = dict(cursor.fetchall())
    assert set(policies) == _own_rows_tables() and len(policies) > len(OWN_ROWS)
    for table, qual in policies.items():
        parent = next(own for own in OWN_ROWS if table == own or table.startswith(own + "_"))
        assert OWN_ROWS[parent] in qual, (table, qual)
        assert "app_full_access_tenant_ids()" in qual, (table, qual)


@pytest.fixture
def cast(tenant_a, alice):
    """Alice owns tenant A; Ada is an admin, Grace a viewer granted the restricted rows,
    Mallory an editor without any grant."""
    return {
        "owner": alice,
        "admin": make_member(tenant_a, "ada@example.com", "admin"),
        "granted": make_member(tenant_a, "grace@example.com", "viewer"),
        "member": make_member(tenant_a, "mallory@example.com", "editor", is_staff=True),
    }


@pytest.fixture
def world(tenant_a, cast):
    """Rows of every kind: open ones, a restricted project's, a restricted document's
    (in an open project). Returns the ids hidden from Mallory, by kind."""
    make_tenant_rows(tenant_a, label="open")
    secret = make_tenant_rows(tenant_a, label="secret")
    in_open_project = make_tenant_rows(tenant_a, label="confidential")
    owner = cast["owner"]
    project = secret[Project]
    document = in_open_project[Document]
    project_restrict(tenant=tenant_a, project=project, by=owner)
    document_restrict(tenant=tenant_a, document=document, by=owner)
    project_access_grant(tenant=tenant_a, project=project, user=cast["granted"], by=owner)
    document_access_grant(tenant=tenant_a, document=document, user=cast["granted"], by=owner)
    return {"project": project, "document": document, "secret": secret}


def _hidden_rows_where(table: str, columns: list[str]) -> sql.Composable:
    """Rows of `table` belonging to the restricted project or document (ids as params)."""
    parts = []
    if table == "projects":
        parts.append(sql.SQL("id = %(project)s"))
    if table == "documents":
        parts.append(sql.SQL("id = %(document)s"))
    if "project_id" in columns:
        parts.append(sql.SQL("project_id = %(project)s"))
    if "document_id" in columns:
        parts.append(
            sql.SQL(
                "document_id = %(document)s OR document_id IN "
                "(SELECT id FROM documents WHERE project_id = %(project)s)"
            )
        )
    if "execution_id" in columns:
        parts.append(
            sql.SQL(
                "execution_id IN (SELECT id FROM agent_executions WHERE project_id = %(project)s)"
            )
        )
    if "chunk_id" in columns:
        parts.append(
            sql.SQL(
                "chunk_id IN (SELECT id FROM chunks WHERE document_id = %(document)s "
                "OR document_id IN (SELECT id FROM documents WHERE project_id = %(project)s))"
            )
        )
    return sql.SQL(" OR ").join(parts)


def _counts(user, tenant, hidden_ids) -> dict[str, tuple[int, int]]:
    """(restricted rows, all rows) of every table below projects and documents, as `user`
    (None: no user set), by raw SQL as the runtime role. The restricted rows' ids were
    read as the owner first (hidden_ids), so a zero is a count of rows known to exist."""
    found = {}
    with tenant_context(tenant, user=user), connection.cursor() as cursor:
        for table in tables_below_projects_and_documents():
            cursor.execute(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE id = ANY (%(ids)s)), count(*) FROM {}"
                ).format(sql.Identifier(table)),
                {"ids": hidden_ids[table]},
            )
            found[table] = cursor.fetchone()
    return found


@pytest.fixture
def hidden_ids(world, tenant_a, cast):
    """The ids of every restricted row, by table, as the owner sees them (every one)."""
    found: dict[str, list[uuid.UUID]] = {}
    params = {"project": world["project"].pk, "document": world["document"].pk}
    with tenant_context(tenant_a, user=cast["owner"]), connection.cursor() as cursor:
        for table, columns in tables_below_projects_and_documents().items():
            cursor.execute(
                sql.SQL("SELECT array_agg(id) FROM {} WHERE {}").format(
                    sql.Identifier(table), _hidden_rows_where(table, columns)
                ),
                params,
            )
            found[table] = cursor.fetchone()[0] or []
    return found


def _is_partition(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relispartition FROM pg_class WHERE oid = %s::regclass", [table])
        return cursor.fetchone()[0]


def test_every_table_below_a_project_or_document_has_restricted_rows_to_test(hidden_ids):
    tables = tables_below_projects_and_documents()
    assert {"projects", "documents", "chunks", "execution_errors", "project_access"} <= set(tables)
    # A partition holds the rows of its month only; its parent has them all.
    empty = [t for t, ids in hidden_ids.items() if not ids and not _is_partition(t)]
    assert empty == [], f"no restricted row was made in {empty}: extend tests/factories.py"


def test_a_member_without_access_sees_no_restricted_row_but_every_open_one(
    hidden_ids, tenant_a, cast
):
    counts = _counts(cast["member"], tenant_a, hidden_ids)
    everything = _counts(cast["owner"], tenant_a, hidden_ids)
    leaked = {table: seen for table, (seen, _) in counts.items() if seen}
    assert leaked == {}
    for table, (_, total) in counts.items():
        hidden = len(hidden_ids[table])
        if table.endswith("_access"):
            continue  # a member sees their own grants only, Mallory has none
        assert total == everything[table][1] - hidden, table


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_owners_and_admins_see_every_restricted_row(hidden_ids, tenant_a, cast, who):
    counts = _counts(cast[who], tenant_a, hidden_ids)
    assert {t: seen for t, (seen, _) in counts.items()} == {
        t: len(ids) for t, ids in hidden_ids.items()
    }


def test_a_granted_user_sees_the_restricted_rows_and_their_own_grants(hidden_ids, tenant_a, cast):
    counts = _counts(cast["granted"], tenant_a, hidden_ids)
    grace = cast["granted"].pk
    for table, (seen, _) in counts.items():
        if table in ("project_access", "document_access"):
            with tenant_context(tenant_a, user=cast["granted"]), connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE user_id <> %s").format(
                        sql.Identifier(table)
                    ),
                    [grace],
                )
                assert cursor.fetchone()[0] == 0, f"{table}: someone else's grant"
            assert seen >= 1, table
        else:
            assert seen == len(hidden_ids[table]), table


def test_no_user_set_sees_unrestricted_rows_only(hidden_ids, tenant_a, cast):
    counts = _counts(None, tenant_a, hidden_ids)
    assert {t: seen for t, (seen, _) in counts.items() if seen} == {}
    assert counts["projects"][1] >= 2  # the open projects are there


def test_the_orm_hides_the_same_rows(hidden_ids, world, tenant_a, cast):
    by_table = {model._meta.db_table: model for model in apps.get_models()}
    for who, expected_empty in (("member", True), ("granted", False), ("owner", False)):
        with tenant_context(tenant_a, user=cast[who]):
            for table, ids in hidden_ids.items():
                model = by_table.get(table)
                if model is None or not ids or table.endswith("_access"):
                    continue
                seen = model._base_manager.filter(pk__in=ids).count()
                assert (seen == 0) is expected_empty, (who, table, seen)


def test_a_member_cannot_write_below_a_restricted_project(world, tenant_a, cast):
    from django.db import DatabaseError

    with tenant_context(tenant_a, user=cast["member"]), connection.cursor() as cursor:
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            cursor.execute(
                "INSERT INTO document_versions (tenant_id, project_id, document_type, version, "
                "content, content_sha256, prev_sha256, metadata) VALUES (%s, %s, 'plan', 1, "
                "'x', encode(sha256('x'::bytea), 'hex'), NULL, '{}')",
                [tenant_a.pk, world["project"].pk],
            )
        cursor.execute("UPDATE projects SET name = 'mine' WHERE id = %s", [world["project"].pk])
        assert cursor.rowcount == 0
        cursor.execute("DELETE FROM chunks WHERE document_id = %s", [world["document"].pk])
        assert cursor.rowcount == 0


def test_a_member_cannot_grant_themselves_access_in_sql(world, tenant_a, cast):
    from django.db import DatabaseError

    member = cast["member"]
    with tenant_context(tenant_a, user=member), connection.cursor() as cursor:
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            cursor.execute(
                "INSERT INTO project_access (tenant_id, project_id, user_id) VALUES (%s, %s, %s)",
                [tenant_a.pk, world["project"].pk, member.pk],
            )


def test_the_policies_read_the_row_and_the_settings_only(world, tenant_a, cast):
    """No policy holds a subquery (Citus refuses them on distributed tables, and one per
    row would cost a lookup per row), and a restricted table's plan runs none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, policyname, concat(qual, ' ', with_check) FROM pg_policies "
            "WHERE schemaname = 'public'"
        )
        with_subquery = [row[:2] for row in cursor.fetchall() if "select" in row[2].lower()]
        cursor.execute(
            "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE a.attname = 'restricted_to' AND c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition AND c.relnamespace = 'public'::regnamespace"
        )
        restricted_tables = sorted(row[0] for row in cursor.fetchall())
    assert with_subquery == []
    assert {"projects", "documents", "chunks", "execution_sources", "exports"} <= set(
        restricted_tables
    )
    if connection.citus:
        # Citus's EXPLAIN through the coordinator refuses these plans after the context's
        # local reads (its local-execution rules); the policies' text, above, is the same
        # there, and the plans are checked on one server.
        return
    for table in restricted_tables:
        # One transaction per plan, filtered on the tenant as the services filter: on
        # Citus, one shard's plan (the tenant as a literal, which Citus re-sends).
        with tenant_context(tenant_a, user=cast["member"]), connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    # Not ANALYZE: Citus refuses running a partitioned table's tasks
                    # in parallel after the context's local reads.
                    "EXPLAIN (COSTS OFF) SELECT * FROM {} WHERE tenant_id = {}"
                ).format(sql.Identifier(table), sql.Literal(str(tenant_a.pk)))
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "restricted_to" in plan and "SubPlan" not in plan, plan
            assert "InitPlan" not in plan, plan


@pytest.mark.django_db(transaction=True)
def test_a_revoked_grant_takes_effect_for_the_next_statement(tenant_a, alice):
    grace = make_member(tenant_a, "grace@example.com", "viewer")
    project = make_tenant_rows(tenant_a, label="secret")[Project]
    project_restrict(tenant=tenant_a, project=project, by=alice)
    project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice)
    seen = []

    def revoke() -> None:
        try:
            project_access_revoke(tenant=tenant_a, project=project, user=grace, by=alice)
        finally:
            connections.close_all()

    with tenant_context(tenant_a, user=grace):
        seen.append(Project.objects.filter(pk=project.pk).count())
        worker = threading.Thread(target=revoke)  # its own connection, committed
        worker.start()
        worker.join()
        seen.append(Project.objects.filter(pk=project.pk).count())
    assert seen == [1, 0]


@pytest.mark.django_db(transaction=True)
def test_access_plans_keep_the_tenant_index(tenant_a, alice):
    """The access conditions are filters beside the tenant's index condition."""
    from documents.selectors import project_list

    with tenant_context(tenant_a):
        Project.objects.bulk_create([Project(tenant=tenant_a, name=f"p{i}") for i in range(300)])
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("ANALYZE projects")
    with tenant_context(tenant_a, user=alice):
        text = project_list(tenant=tenant_a, status="draft")[:20].explain()
    assert "projects_tenant_live_idx" in text, text
    assert "restricted_to" in text, text


def test_chunks_of_a_hidden_projects_documents_are_hidden(world, tenant_a, cast):
    secret_document = world["secret"][Document]
    with tenant_context(tenant_a, user=cast["member"]):
        assert not Chunk.objects.filter(document=secret_document).exists()
        assert not Document.objects.filter(pk=secret_document.pk).exists()
    with tenant_context(tenant_a, user=cast["granted"]):
        assert Chunk.objects.filter(document=secret_document).exists()


def test_inside_a_request_a_context_keeps_the_requests_user(tenant_a, alice, cast):
    from django.core.exceptions import PermissionDenied

    from tenancy.context import tenant_scope

    with tenant_scope([tenant_a], user_id=cast["member"].pk, locked=True):
        with tenant_context(tenant_a, user=cast["member"]):  # the same user: fine
            pass
        with pytest.raises(PermissionDenied, match="user"), tenant_context(tenant_a, user=alice):
            pass
        with tenant_context(tenant_a):  # no user given: the request's
            with connection.cursor() as cursor:
                cursor.execute("SELECT app_current_user_id()")
                assert cursor.fetchone()[0] == cast["member"].pk


# --- The access lists: restricted_to on every row below, kept by triggers ----------------


def _restricted_to(tenant, user, hidden_ids) -> dict[str, set]:
    """The distinct restricted_to of the restricted rows and of the others, by table."""
    found = {}
    with tenant_context(tenant, user=user), connection.cursor() as cursor:
        for table in tables_below_projects_and_documents():
            if table.endswith("_access"):
                continue
            cursor.execute(
                sql.SQL(
                    "SELECT id = ANY (%s), "
                    "array_agg(DISTINCT coalesce(restricted_to::text, 'NULL')) FROM {} GROUP BY 1"
                ).format(sql.Identifier(table)),
                [hidden_ids[table]],
            )
            found[table] = {hidden: set(values) for hidden, values in cursor.fetchall()}
    return found


def test_every_table_below_carries_its_access_list_and_the_row_only_policy(db):
    expected = sorted(
        table
        for table in tables_below_projects_and_documents()
        if not table.endswith("_access") and not _is_partition(table)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, p.qual, p.with_check FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'restricted_to' "
            "JOIN pg_policies p ON p.schemaname = 'public' AND p.tablename = c.relname "
            "AND p.policyname = 'tenant_isolation' "
            "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition "
            "ORDER BY 1"
        )
        rows = cursor.fetchall()
    assert [name for name, _, _ in rows] == expected
    for name, qual, check in rows:
        for expression in (qual, check):
            assert "restricted_to IS NULL" in expression, (name, expression)
            assert "app_full_access_tenant_ids()" in expression, (name, expression)


def test_restricted_to_follows_restrictions_grants_and_revocations(
    world, hidden_ids, tenant_a, cast
):
    owner, grace = cast["owner"], cast["granted"]
    before = _restricted_to(tenant_a, owner, hidden_ids)
    for table, by_hidden in before.items():
        assert by_hidden.get(False, {"NULL"}) == {"NULL"}, table
        assert all(str(grace.pk) in value for value in by_hidden.get(True, ())), table
    project = world["project"]
    project_access_revoke(tenant=tenant_a, project=project, user=grace, by=owner)
    with tenant_context(tenant_a, user=owner), connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.access_user_ids, array_agg(DISTINCT v.restricted_to) "
            "FROM projects p JOIN document_versions v ON v.tenant_id = p.tenant_id "
            "AND v.project_id = p.id WHERE p.id = %s GROUP BY 1",
            [project.pk],
        )
        ((listed, in_versions),) = cursor.fetchall()
    assert grace.pk not in listed and in_versions == [listed]
    project_unrestrict(tenant=tenant_a, project=project, by=owner)
    after = _restricted_to(tenant_a, owner, hidden_ids)
    # What stays restricted is the restricted document's alone.
    assert set().union(*after["projects"].values()) == {"NULL"}
    assert set().union(*after["document_versions"].values()) == {"NULL"}
    still = after["chunks"][True] - {"NULL"}  # the open project's documents' are open
    assert still and all(str(grace.pk) in value for value in still)


def test_a_document_in_a_restricted_project_is_seen_by_who_may_see_both(tenant_a, cast):
    owner, grace, mallory = cast["owner"], cast["granted"], cast["member"]
    rows = make_tenant_rows(tenant_a, label="both")
    project, document = rows[Project], rows[Document]
    assert document.project_id == project.pk
    document_restrict(tenant=tenant_a, document=document, by=owner)
    document_access_grant(tenant=tenant_a, document=document, user=grace, by=owner)
    project_restrict(tenant=tenant_a, project=project, by=owner)
    project_access_grant(tenant=tenant_a, project=project, user=mallory, by=owner)

    def sees(user) -> tuple[bool, bool]:
        with tenant_context(tenant_a, user=user):
            return (
                Document.objects.filter(pk=document.pk).exists(),
                Chunk.objects.filter(document=document).exists(),
            )

    assert sees(grace) == (False, False)  # the document's grant, not the project's
    assert sees(mallory) == (False, False)  # the project's grant, not the document's
    project_access_grant(tenant=tenant_a, project=project, user=grace, by=owner)
    assert sees(grace) == (True, True)
    assert sees(owner) == (True, True)


def test_restricted_to_is_derived_never_written(world, tenant_a, cast):
    document = world["document"]
    with tenant_context(tenant_a, user=cast["owner"]), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chunks SET restricted_to = NULL WHERE tenant_id = %s AND document_id = %s",
            [tenant_a.pk, document.pk],
        )
        assert cursor.rowcount >= 1
        cursor.execute(
            "SELECT restricted_to::text FROM chunks WHERE tenant_id = %s AND document_id = %s",
            [tenant_a.pk, document.pk],
        )
        values = {row[0] for row in cursor.fetchall()}
    assert values and all(str(cast["granted"].pk) in value for value in values)


def test_only_owners_and_admins_change_who_may_see_a_row(world, tenant_a, cast):
    from django.db import DatabaseError

    member = cast["member"]
    with tenant_context(tenant_a, user=member), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM projects WHERE NOT restricted LIMIT 1")
        (open_project,) = cursor.fetchone()
        for change in (
            "access_user_ids = array_append(access_user_ids, %(user)s)",
            "restricted = true",
        ):
            with pytest.raises(DatabaseError, match="owners and admins"), transaction.atomic():
                cursor.execute(
                    sql.SQL(
                        "UPDATE projects SET {} WHERE tenant_id = %(tenant)s AND id = %(id)s"
                    ).format(sql.SQL(change)),
                    {"user": member.pk, "tenant": tenant_a.pk, "id": open_project},
                )
        # Any other change of a row they see is theirs to make.
        cursor.execute(
            "UPDATE projects SET name = 'renamed' WHERE tenant_id = %s AND id = %s",
            [tenant_a.pk, open_project],
        )
        assert cursor.rowcount == 1


def test_the_context_sets_the_users_full_access_tenants(tenant_a, tenant_b, cast):
    def full_access() -> str:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(current_setting('app.full_access_tenant_ids', true), '')"
            )
            return cursor.fetchone()[0]

    with tenant_context(tenant_b):
        Membership.objects.create(tenant=tenant_b, user=cast["admin"], role="viewer")
    with tenant_context(tenant_a, tenant_b, user=cast["admin"]):
        assert full_access() == str(tenant_a.pk)  # admin of A, viewer of B
        with tenant_context(tenant_a, user=cast["member"]):
            assert full_access() == ""  # another user's context starts without it
        assert full_access() == str(tenant_a.pk)
    with tenant_context(tenant_a):
        assert full_access() == ""


# --- The admin -------------------------------------------------------------------------


def _admins_of_hidden_rows(hidden_ids) -> list:
    """Every registered admin whose table holds restricted rows (found from the catalog)."""
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if hidden_ids.get(model._meta.db_table)
    ]


def _what_the_admin_shows(client, hidden_ids, tenant) -> dict[str, set]:
    """The restricted ids the admin shows its user, by where: changelists (plain, filtered
    on the tenant, searched by each row's id), change pages, autocompletes offering them,
    export downloads, and the pages of the rows it lists (links, sections)."""
    shown: dict[str, set] = {
        "changelist": set(), "search": set(), "change": set(),
        "autocomplete": set(), "download": set(), "linked": set(),
    }  # fmt: skip
    every_hidden = {str(pk) for ids in hidden_ids.values() for pk in ids}
    for model, model_admin in _admins_of_hidden_rows(hidden_ids):
        if client.get(admin_url(model, "changelist")).status_code in REFUSED:
            # A list for the tenant's owners and admins (chunk_embeddings): it shows
            # this user nothing; the owner's walk below still opens it.
            continue
        hidden = set(hidden_ids[model._meta.db_table])
        visible = listed(client, model)
        shown["changelist"] |= hidden & set(visible)
        # The pages of the rows it may open link to no hidden row (nor name one).
        for pk in [pk for pk in visible if pk not in hidden][:3]:
            page = client.get(admin_url(model, "change", pk)).content.decode()
            shown["linked"] |= {hidden_pk for hidden_pk in every_hidden if hidden_pk in page}
        shown["changelist"] |= hidden & set(listed(client, model, tenant__id__exact=tenant.pk))
        for pk in hidden:
            if getattr(model_admin, "uuid_search_fields", ()) or model_admin.search_fields:
                shown["search"] |= hidden & set(listed(client, model, q=str(pk)))
            response = client.get(admin_url(model, "change", pk))
            if response.status_code not in REFUSED:
                shown["change"].add(pk)
            if (
                model is Export
                and client.get(reverse("admin:exports_export_download", args=[pk])).status_code
                not in REFUSED
            ):
                shown["download"].add(pk)
    for model, model_admin in admin.site._registry.items():
        for field_name in model_admin.autocomplete_fields:
            target = model._meta.get_field(field_name).related_model
            hidden = {str(pk) for pk in hidden_ids.get(target._meta.db_table, ())}
            if hidden:
                offered = autocomplete(
                    client, model._meta.app_label, model._meta.model_name, field_name
                )
                shown["autocomplete"] |= hidden & set(offered)
    return shown


# Committed rows, each request its own transaction, as served: on Citus the chunk page's
# hit count (a SECURITY DEFINER function, run as the owner) may not read shards that the
# same transaction wrote as the runtime role, which only a test's one transaction does.
@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_a_member_without_access_no_restricted_row(
    client, hidden_ids, tenant_a, cast
):
    shown = _what_the_admin_shows(logged_in(client, cast["member"]), hidden_ids, tenant_a)
    assert shown == {where: set() for where in shown}


# Committed rows, each request its own transaction, as served: on Citus the chunk page's
# hit count (a SECURITY DEFINER function, run as the owner) may not read shards that the
# same transaction wrote as the runtime role, which only a test's one transaction does.
@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_the_owner_every_restricted_row(client, hidden_ids, tenant_a, cast):
    """The same walk as the owner finds them, so the member's empty walk means hidden."""
    shown = _what_the_admin_shows(logged_in(client, cast["owner"]), hidden_ids, tenant_a)
    for where in ("changelist", "search", "change", "autocomplete", "download"):
        assert shown[where], where
    assert hidden_ids["projects"][0] in shown["change"]


def test_the_hub_of_an_open_project_shows_no_restricted_row(client, world, hidden_ids, cast):
    """The restricted document sits in an open project: its page (the hub and its
    sections) names none of the rows hidden from the member."""
    hub = admin_url(Project, "change", world["document"].project_id)

    def named(user) -> set[str]:
        page = logged_in(client, user).get(hub).content.decode()
        return {table for table, ids in hidden_ids.items() if any(str(pk) in page for pk in ids)}

    assert named(cast["member"]) == set()
    assert "documents" in named(cast["owner"])  # the hub does list the document
