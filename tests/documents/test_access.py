"""Restricted projects and documents: the services, chunk_search and the admin
(docs/security.md, "Restricted rows"; the tables' isolation is tests/tenancy/test_access_rls.py)."""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from documents import search
from documents.embedding import get_embedder
from documents.models import Chunk, Document, DocumentAccess, Project, ProjectAccess
from documents.services import (
    document_access_grant,
    document_restrict,
    project_access_grant,
    project_access_revoke,
    project_create,
    project_restrict,
    project_unrestrict,
)
from tenancy.context import tenant_context
from tests.admin_helpers import REFUSED, admin_url, listed, logged_in
from tests.factories import make_member, make_tenant_rows

MODES = ["semantic", "fulltext", "hybrid"]


@pytest.fixture
def mallory(tenant_a):
    """An editor of tenant A (staff: she uses the admin) without any grant."""
    return make_member(tenant_a, "mallory@example.com", "editor", is_staff=True)


@pytest.fixture
def grace(tenant_a):
    """A viewer of tenant A (staff) whom the tests grant restricted rows."""
    return make_member(tenant_a, "grace@example.com", "viewer", is_staff=True)


@pytest.fixture
def project(tenant_a, alice):
    return project_create(tenant=tenant_a, name="Merger", by=alice)


def grants(tenant, owner) -> list[tuple]:
    with tenant_context(tenant, user=owner):
        return list(ProjectAccess.objects.values_list("project_id", "user_id"))


# --- Services ------------------------------------------------------------------------


def test_an_owner_restricts_and_grants(tenant_a, alice, grace, project):
    project_restrict(tenant=tenant_a, project=project, by=alice)
    grant = project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice)
    assert (grant.user, grant.created_by, grant.tenant_id) == (grace, alice, tenant_a.pk)
    # Idempotent: the second grant is the first.
    assert project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice) == grant
    with tenant_context(tenant_a, user=grace):
        assert Project.objects.get(pk=project.pk).restricted


def test_an_admin_may_restrict_and_unrestrict(tenant_a, project):
    ada = make_member(tenant_a, "ada@example.com", "admin")
    project_restrict(tenant=tenant_a, project=project, by=ada)
    project_unrestrict(tenant=tenant_a, project=project, by=ada)
    with tenant_context(tenant_a):
        assert not Project.objects.get(pk=project.pk).restricted


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_editors_and_viewers_may_not_restrict_or_grant(tenant_a, alice, grace, project, role):
    someone = make_member(tenant_a, f"{role}@example.com", role)
    with pytest.raises(PermissionDenied):
        project_restrict(tenant=tenant_a, project=project, by=someone)
    with pytest.raises(PermissionDenied):
        project_access_grant(tenant=tenant_a, project=project, user=someone, by=someone)
    with tenant_context(tenant_a):
        assert not Project.objects.get(pk=project.pk).restricted
    assert grants(tenant_a, alice) == []


def test_without_a_user_nothing_is_restricted(tenant_a, alice, project):
    with pytest.raises(PermissionDenied):
        project_restrict(tenant=tenant_a, project=project, by=None)  # type: ignore[arg-type]


def test_a_grant_to_someone_outside_the_tenant_names_the_user(
    tenant_a, alice, bob, charlie, project
):
    for outsider in (charlie, bob):  # no membership; another tenant's member
        with pytest.raises(ValidationError) as refused:
            project_access_grant(tenant=tenant_a, project=project, user=outsider, by=alice)
        assert "user" in refused.value.message_dict
    assert grants(tenant_a, alice) == []


def test_another_tenants_rows_are_refused_naming_the_field(tenant_a, tenant_b, alice, bob, grace):
    foreign = project_create(tenant=tenant_b, name="Theirs", by=bob)
    for call in (
        lambda: project_restrict(tenant=tenant_a, project=foreign, by=alice),
        lambda: project_access_grant(tenant=tenant_a, project=foreign, user=grace, by=alice),
    ):
        with pytest.raises(ValidationError) as refused:
            call()
        assert "project" in refused.value.message_dict
    with tenant_context(tenant_b, user=bob):
        assert not Project.objects.get(pk=foreign.pk).restricted
        assert not ProjectAccess.objects.exists()


def test_an_owner_of_another_tenant_may_not_restrict_here(tenant_a, bob, project):
    with pytest.raises(PermissionDenied):
        project_restrict(tenant=tenant_a, project=project, by=bob)


def test_revoking_by_an_editor_is_refused_and_the_grant_stays(tenant_a, alice, grace, project):
    project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice)
    editor = make_member(tenant_a, "ed@example.com", "editor")
    with pytest.raises(PermissionDenied):
        project_access_revoke(tenant=tenant_a, project=project, user=grace, by=editor)
    assert grants(tenant_a, alice) == [(project.pk, grace.pk)]
    assert project_access_revoke(tenant=tenant_a, project=project, user=grace, by=alice)
    assert grants(tenant_a, alice) == []


def test_grants_and_restrictions_are_audited_not_the_rows_they_reach(tenant_a, alice, grace):
    """The access lists the triggers derive below (restricted_to, access_user_ids) are left
    out of the audit trail: a grant records one event, not one per row it reaches."""
    from tenancy.models import AuditEvent

    project = make_tenant_rows(tenant_a, label="audited")[Project]
    with tenant_context(tenant_a, user=alice):  # owners and admins read the events
        before = AuditEvent.objects.filter(tenant=tenant_a).count()
    project_restrict(tenant=tenant_a, project=project, by=alice)
    project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice)
    with tenant_context(tenant_a, user=alice):  # owners and admins read the events
        recorded = list(
            AuditEvent.objects.filter(tenant=tenant_a).order_by("created_at", "id")[before:]
        )
    assert [(e.table_name, e.action) for e in recorded] == [
        ("projects", "update"),
        ("project_access", "insert"),
    ]
    assert recorded[0].changes == {"old": {"restricted": False}, "new": {"restricted": True}}
    assert recorded[1].changes["new"]["user_id"] == str(grace.pk)
    assert {e.actor_user_id for e in recorded} == {alice.pk}


# --- chunk_search --------------------------------------------------------------------


@pytest.fixture
def shelves(tenant_a, alice, grace):
    """Three documents of 12 chunks each about the same harbour; the second and third
    restricted, the second granted to Grace."""
    embedder = get_embedder()
    documents = []
    with tenant_context(tenant_a):
        for n in range(3):
            document = Document.objects.create(
                tenant=tenant_a, title=f"Harbour {n}", storage_key=f"k/{n}", status="ready"
            )
            texts = [f"harbour crane report shelf {n} part {i} of the quay" for i in range(12)]
            Chunk.objects.bulk_create(
                Chunk(
                    tenant=tenant_a,
                    document=document,
                    ordinal=i,
                    content=text,
                    embedding=vector,
                    embedding_model=embedder.model,
                )
                for i, (text, vector) in enumerate(zip(texts, embedder.embed(texts), strict=True))
            )
            documents.append(document)
    document_restrict(tenant=tenant_a, document=documents[1], by=alice)
    document_restrict(tenant=tenant_a, document=documents[2], by=alice)
    document_access_grant(tenant=tenant_a, document=documents[1], user=grace, by=alice)
    return documents


@pytest.mark.parametrize("mode", MODES)
def test_search_returns_k_results_from_the_visible_chunks_only(tenant_a, mallory, shelves, mode):
    results = search.chunk_search(
        tenant=tenant_a, query="harbour crane quay", k=10, mode=mode, user=mallory
    )
    assert len(results) == 10
    assert {r.document_id for r in results} == {shelves[0].pk}


@pytest.mark.parametrize("mode", MODES)
def test_search_without_a_user_leaves_every_restricted_chunk_out(tenant_a, shelves, mode):
    results = search.chunk_search(tenant=tenant_a, query="harbour crane quay", k=30, mode=mode)
    assert len(results) == 12
    assert {r.document_id for r in results} == {shelves[0].pk}


@pytest.mark.parametrize("mode", MODES)
def test_search_finds_what_a_grant_opens(tenant_a, grace, alice, shelves, mode):
    granted = search.chunk_search(
        tenant=tenant_a, query="harbour crane quay", k=30, mode=mode, user=grace
    )
    assert len(granted) == 24
    assert {r.document_id for r in granted} == {shelves[0].pk, shelves[1].pk}
    everything = search.chunk_search(
        tenant=tenant_a, query="harbour crane quay", k=36, mode=mode, user=alice
    )
    assert len(everything) == 36


def searched_with_plans(
    tenant, user, k: int = 10, **arguments
) -> tuple[list, list[tuple[str, str]]]:
    """chunk_search's results, and (statement, EXPLAIN) of each kNN statement it sent,
    explained just before it ran, in its transaction (under the search's settings)."""
    plans = []

    def explain(execute, sql, params, many, context):
        if "<=>" in sql and sql.lstrip().upper().startswith("SELECT"):
            context["cursor"].execute("EXPLAIN " + sql, params)
            plans.append((sql, "\n".join(row[0] for row in context["cursor"].fetchall())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        results = search.chunk_search(
            tenant=tenant, query="harbour crane quay", k=k, user=user, **arguments
        )
    return results, plans


@pytest.fixture
def big_table(monkeypatch):
    """As on a table of 10,000 chunks in documents of 12 (the index threshold for k = 10
    is then 774 chunks, 64 documents), without writing them: the search's facts are the
    planner's estimates, whatever rows the test holds."""
    facts = search._search_facts

    def as_on_a_big_table(tenant_id, model=None):
        return dataclasses.replace(
            facts(tenant_id, model), table_chunks=10_000, table_documents=10_000 / 12
        )

    monkeypatch.setattr(search, "_search_facts", as_on_a_big_table)


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_a_member_who_sees_few_documents_reads_only_their_chunks(
    tenant_a, mallory, shelves, big_table, mode
):
    results, [(sql, plan)] = searched_with_plans(tenant_a, mallory, mode=mode)
    assert len(results) == 10
    assert {r.document_id for r in results} == {shelves[0].pk}
    # One exact read of the visible document's chunks, through the (tenant, document)
    # index: not the HNSW walk past the hidden ones.
    assert "chunks_embedding_hnsw_idx" not in plan
    assert "chunks_tenant_document_idx" in plan and str(shelves[0].pk) in plan
    assert not any(str(document.pk) in sql + plan for document in shelves[1:])


def test_an_owner_keeps_the_plain_knn(tenant_a, alice, shelves, big_table):
    results, [(sql, _)] = searched_with_plans(tenant_a, alice, mode="semantic")
    assert len(results) == 10
    assert not any(str(document.pk) in sql for document in shelves)
    assert sql.rstrip().endswith("LIMIT 10")  # no over-fetch: the owner sees every chunk


def test_a_member_who_sees_many_chunks_keeps_the_plain_knn_reading_more_rows(
    tenant_a, mallory, shelves, big_table, monkeypatch
):
    # Her visible documents may hold more chunks than the threshold.
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 11)
    results, [(sql, _)] = searched_with_plans(tenant_a, mallory, mode="semantic")
    assert not any(str(document.pk) in sql for document in shelves)
    # The index is asked for more rows than k, and the k nearest of them are kept.
    assert sql.rstrip().endswith(f"LIMIT {10 * search.PARTIAL_ACCESS_OVERFETCH}")
    assert len(results) == 10
    assert {r.document_id for r in results} == {shelves[0].pk}
    assert [r.rank for r in results] == list(range(1, 11))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    nearest = search.chunk_search(
        tenant=tenant_a, query="harbour crane quay", k=12, mode="semantic", user=mallory
    )
    assert [r.chunk_id for r in results] == [r.chunk_id for r in nearest[:10]]


def test_a_search_without_a_user_reads_k_rows_from_the_index(
    tenant_a, shelves, big_table, monkeypatch
):
    # A system job's search: open rows only, and no wider read than the owner's.
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 11)
    results, [(sql, _)] = searched_with_plans(tenant_a, None, mode="semantic")
    assert sql.rstrip().endswith("LIMIT 10")
    assert {r.document_id for r in results} == {shelves[0].pk}


def test_a_member_reads_at_most_the_largest_k_from_the_index(
    tenant_a, mallory, shelves, big_table, monkeypatch
):
    # k * PARTIAL_ACCESS_OVERFETCH would be beyond pgvector's largest ef_search (1,000).
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 11)
    results, [(sql, _), *exact] = searched_with_plans(
        tenant_a, mallory, mode="semantic", k=search.SEARCH_MAX_K
    )
    assert sql.rstrip().endswith(f"LIMIT {search.SEARCH_MAX_K}")
    assert len(exact) == 1  # her 12 chunks are fewer than k: read again exactly
    assert {r.document_id for r in results} == {shelves[0].pk}


def test_a_member_who_sees_no_document_in_scope_gets_nothing(tenant_a, mallory, shelves, big_table):
    results = search.chunk_search(
        tenant=tenant_a,
        query="harbour crane quay",
        k=10,
        mode="semantic",
        user=mallory,
        documents=shelves[1:],
    )
    assert results == []


# --- Admin ---------------------------------------------------------------------------


@pytest.fixture
def restricted(tenant_a, alice, grace, project):
    project_restrict(tenant=tenant_a, project=project, by=alice)
    project_access_grant(tenant=tenant_a, project=project, user=grace, by=alice)
    return project


def test_a_member_without_access_cannot_open_list_or_choose_a_restricted_project(
    client, mallory, restricted
):
    client = logged_in(client, mallory)
    assert client.get(admin_url(Project, "change", restricted.pk)).status_code in REFUSED
    assert restricted.pk not in listed(client, Project)
    assert restricted.pk not in listed(client, Project, q="Merger")
    assert restricted.pk not in listed(client, Project, restricted__exact="1")
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "documents", "model_name": "documentversion", "field_name": "project"},
    )
    assert str(restricted.pk) not in response.content.decode()


def test_a_granted_member_opens_it_and_sees_only_their_grant(client, grace, restricted):
    client = logged_in(client, grace)
    response = client.get(admin_url(Project, "change", restricted.pk))
    assert response.status_code == 200
    assert restricted.pk in listed(client, Project)
    assert len(listed(client, ProjectAccess)) == 1


def test_the_owner_sees_who_has_access_on_the_project_page(client, alice, grace, restricted):
    response = logged_in(client, alice).get(admin_url(Project, "change", restricted.pk))
    assert response.status_code == 200
    assert "Who has access" in response.content.decode()
    assert "grace@example.com" in response.content.decode()


def test_the_owner_restricts_through_the_admin_action(client, tenant_a, alice, project):
    response = logged_in(client, alice).post(
        admin_url(Project, "changelist"),
        {"action": "restrict", "_selected_action": [project.pk]},
    )
    assert response.status_code == 302
    with tenant_context(tenant_a, user=alice):
        assert Project.objects.get(pk=project.pk).restricted


def test_an_editors_restrict_action_changes_nothing(client, tenant_a, mallory, project):
    logged_in(client, mallory).post(
        admin_url(Project, "changelist"),
        {"action": "restrict", "_selected_action": [project.pk]},
    )
    with tenant_context(tenant_a):
        assert not Project.objects.get(pk=project.pk).restricted


def test_the_owner_grants_through_the_admin_and_an_editor_may_not(
    client, tenant_a, alice, mallory, grace, project
):
    form = {"tenant": tenant_a.pk, "project": project.pk, "user": grace.pk}
    assert logged_in(client, mallory).post(admin_url(ProjectAccess, "add"), form).status_code in (
        403,
        200,  # the form again, refused
    )
    assert grants(tenant_a, alice) == []
    response = logged_in(client, alice).post(admin_url(ProjectAccess, "add"), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert grants(tenant_a, alice) == [(project.pk, grace.pk)]


def test_a_restricted_document_is_absent_for_a_member_without_access(
    client, tenant_a, mallory, grace, shelves
):
    client = logged_in(client, mallory)
    assert client.get(admin_url(Document, "change", shelves[1].pk)).status_code in REFUSED
    assert set(listed(client, Document)) == {shelves[0].pk}
    assert (
        logged_in(client, grace).get(admin_url(Document, "change", shelves[1].pk)).status_code
        == 200
    )
    assert DocumentAccess.objects.count() == 0  # outside any context: no row at all


def test_only_owners_and_admins_read_the_audit_events(tenant_a, alice, grace, mallory):
    """An event carries its row's values, a restricted row's too: members read none."""
    from tenancy.models import AuditEvent

    project_restrict(
        tenant=tenant_a, project=make_tenant_rows(tenant_a, label="x")[Project], by=alice
    )
    admin = make_member(tenant_a, "ada@example.com", "admin")
    seen = {}
    for who in (alice, admin, grace, mallory, None):
        with tenant_context(tenant_a, user=who):
            seen[who] = AuditEvent.objects.count()
    assert seen[alice] == seen[admin] > 0
    assert seen[grace] == seen[mallory] == seen[None] == 0
