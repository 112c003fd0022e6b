"""The admin as a superuser sees it: every page answers, big tables stay cheap.

Client requests go through the tenant middleware, which scopes its own transaction, so
they are not wrapped in tenant_context; rows are created inside it.
"""

import hashlib
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.paginator import EmptyPage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.models import (
    AgentExecution,
    ConversationMessage,
    ExecutionError,
    ExecutionIdempotencyKey,
    ExecutionSource,
    ExecutionUsageDaily,
    StaleSource,
)
from core.admin import EstimatedCountPaginator, planner_row_estimate, vector_summary
from core.db.connections import owner_connection
from core.ids import uuid7
from documents.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    Project,
    SearchQuery,
    TenantEmbeddingModel,
)
from documents.services import INGEST_TASK
from erasure.models import ErasureReceipt
from exports.models import Export
from retention.models import RetentionRun
from tenancy.context import tenant_context
from tenancy.models import (
    AuditChainAnchor,
    AuditEvent,
    GlobalAuditEvent,
    Membership,
    Tenant,
    User,
)
from tests.admin_helpers import admin_url
from tests.factories import VECTOR, make_tenant_rows
from tests.worker import jobs

TAIL_NUMBER = str(VECTOR[-1])  # "0.51535"


def project_models() -> list:
    """Every concrete model of the project's own apps (top-level packages of BASE_DIR).

    Found in the app registry, so a model added later is covered by the tests below
    without editing them; make_rows must then make a row of it.
    """
    base = Path(settings.BASE_DIR).resolve()
    return [
        model
        for config in apps.get_app_configs()
        if Path(config.path).resolve().parent == base
        for model in config.get_models()
    ]


ADMIN_MODELS = project_models()
# Rows that only services write (sources, chunks from ingestion): nobody adds them here.
NOT_ADDABLE = {
    ExecutionSource,
    Chunk,
    EmbeddingCacheEntry,  # written by ingestion only
    ChunkEmbedding,  # written by the backfill and ingestion only
    TenantEmbeddingModel,  # written by the embedding model services only
    ExecutionError,
    ExecutionIdempotencyKey,
    StaleSource,  # written by the stale-source triggers only
    ExecutionUsageDaily,  # written by the usage rollup's triggers only
    AuditEvent,
    GlobalAuditEvent,
    RetentionRun,  # written by `manage.py retention` only
    ErasureReceipt,  # written by the erasures only
    AuditChainAnchor,  # written by the retention job's cuts only
    SearchQuery,  # written by documents.search only
}
# Changelists that must never COUNT(*) the whole table.
BIG_TABLES = [
    Chunk,
    ChunkEmbedding,
    DocumentVersion,
    AgentExecution,
    ExecutionSource,
    ConversationMessage,
    ExecutionError,
    AuditEvent,
    GlobalAuditEvent,
    SearchQuery,
]


def make_rows(tenant: Tenant, user: User, label: str) -> dict:
    """One row of every tenant-owned model in `tenant`, made by `user`, and those two."""
    rows = {User: user, Tenant: tenant, **make_tenant_rows(tenant, by=user, label=label)}
    return {**rows, GlobalAuditEvent: GlobalAuditEvent.objects.order_by("-id").first()}


def row_of(rows: dict, model):
    if model not in rows:
        pytest.fail(f"make_rows makes no {model.__name__}: add one so its admin is tested")
    return rows[model]


@pytest.fixture
def rows(tenant_a, alice) -> dict:
    return make_rows(tenant_a, alice, "A")


@pytest.fixture
def root_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_superuser_opens_the_changelist(root_client, rows, model):
    response = root_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 1


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_superuser_opens_the_change_page(root_client, rows, model):
    response = root_client.get(admin_url(model, "change", row_of(rows, model).pk))
    assert response.status_code == 200


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_superuser_opens_the_add_page(root_client, rows, model):
    expected = 403 if model in NOT_ADDABLE else 200
    assert root_client.get(admin_url(model, "add")).status_code == expected


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_every_model_is_registered(model):
    assert admin.site.is_registered(model)


def test_model_discovery_finds_every_app():
    labels = {model._meta.app_label for model in ADMIN_MODELS}
    assert {"tenancy", "documents", "agents", "exports"} <= labels


def test_superuser_opens_the_admin_index(root_client, rows):
    assert root_client.get(reverse("admin:index")).status_code == 200


def test_chunk_changelist_renders_no_vector(root_client, rows):
    response = root_client.get(admin_url(Chunk, "changelist"))
    assert TAIL_NUMBER not in response.content.decode()


def test_chunk_change_page_shows_an_abbreviated_read_only_vector(root_client, rows):
    response = root_client.get(admin_url(Chunk, "change", rows[Chunk].pk))
    page = response.content.decode()
    assert "1536 dimensions: [0.5000, 0.5000," in page
    assert TAIL_NUMBER not in page
    assert "embedding" not in response.context["adminform"].form.fields


def test_chunk_change_keeps_the_vector(root_client, rows):
    chunk = rows[Chunk]
    response = root_client.post(
        admin_url(Chunk, "change", chunk.pk), {"metadata": '{"reviewed": true}'}
    )
    assert response.status_code == 302
    with tenant_context(chunk.tenant_id):
        chunk.refresh_from_db()
    assert chunk.metadata == {"reviewed": True}
    assert list(chunk.embedding) == pytest.approx(VECTOR)


def _counts_on(sql: str, table: str) -> bool:
    return bool(re.search(r"COUNT\(", sql, re.I)) and f'"{table}"' in sql


@pytest.mark.parametrize("model", BIG_TABLES, ids=lambda m: m.__name__)
def test_big_table_changelist_runs_no_count(root_client, rows, model):
    with CaptureQueriesContext(connection) as queries:
        response = root_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    table = model._meta.db_table
    assert not [q["sql"] for q in queries.captured_queries if _counts_on(q["sql"], table)]


def test_chunk_changelist_estimates_a_large_result(root_client, tenant_a, alice, monkeypatch):
    document = make_rows(tenant_a, alice, "A")[Document]
    with tenant_context(tenant_a):
        for ordinal in range(1, 6):
            Chunk.objects.create(tenant=tenant_a, document=document, ordinal=ordinal, content="x")
    monkeypatch.setattr(admin.site.get_model_admin(Chunk), "list_per_page", 2)
    with CaptureQueriesContext(connection) as queries:
        response = root_client.get(admin_url(Chunk, "changelist"))
    assert response.context["cl"].paginator.count_is_estimated
    assert response.context["cl"].result_count >= 3
    assert len(response.context["cl"].result_list) == 2
    assert "about" in response.content.decode()
    assert any(q["sql"].startswith("EXPLAIN") for q in queries.captured_queries)
    assert not [q["sql"] for q in queries.captured_queries if _counts_on(q["sql"], "chunks")]


def _row_reads(queries, table: str) -> list[str]:
    """The statements that read rows of `table` (not EXPLAINs, not joins into it)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and f' FROM "{table}"' in q["sql"]
    ]


# make_rows writes one row of each of these (the audit trail gets one event per row).
ONE_ROW_BIG_TABLES = [model for model in BIG_TABLES if model not in (AuditEvent, GlobalAuditEvent)]


@pytest.mark.parametrize("model", ONE_ROW_BIG_TABLES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("many", [False, True], ids=["one page", "more pages"])
def test_big_table_changelist_reads_nothing_beyond_its_page(
    root_client, rows, model, many, monkeypatch
):
    model_admin = admin.site.get_model_admin(model)
    per_page = 1 if many else model_admin.list_per_page
    monkeypatch.setattr(model_admin, "list_per_page", per_page)
    if many:
        make_rows(rows[Tenant], rows[User], "B")
    with CaptureQueriesContext(connection) as queries:
        response = root_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    table = model._meta.db_table
    reads = _row_reads(queries, table)
    # The page, one row longer, read once; filters' choices may read a bounded sample.
    pages = [sql for sql in reads if sql.endswith(f"LIMIT {per_page + 1}")]
    assert len(pages) == 1, reads
    assert all(re.search(r"LIMIT \d+$", sql) for sql in reads), reads
    assert not [sql for sql in reads if f'SELECT "{table}"."id" AS "pk" FROM' in sql], reads
    assert len(response.context["cl"].result_list) == 1
    assert response.context["cl"].paginator.count_is_estimated is many


def test_paginator_serves_the_page_it_read_without_another_query(tenant_a, alice):
    make_rows(tenant_a, alice, "A")
    make_rows(tenant_a, alice, "B")
    with tenant_context(tenant_a):
        paginator = EstimatedCountPaginator(Chunk.objects.order_by("id"), 1)
        with CaptureQueriesContext(connection) as queries:
            shown = list(paginator.page(2).object_list)
        assert shown == list(Chunk.objects.order_by("id")[1:2])
    assert paginator.count == 2
    assert not paginator.count_is_estimated
    assert len(queries.captured_queries) == 1


def test_paginator_refuses_a_page_past_the_end(tenant_a, alice):
    make_rows(tenant_a, alice, "A")
    with tenant_context(tenant_a), pytest.raises(EmptyPage):
        EstimatedCountPaginator(Chunk.objects.order_by("id"), 10).page(3)


def test_paginator_counts_small_results_exactly(tenant_a, alice):
    make_rows(tenant_a, alice, "A")
    with tenant_context(tenant_a):
        paginator = EstimatedCountPaginator(Chunk.objects.order_by("id"), 10)
        assert paginator.count == 1
    assert not paginator.count_is_estimated


def test_planner_estimate_is_a_row_count(tenant_a):
    with tenant_context(tenant_a):
        assert planner_row_estimate(Chunk.objects.all()) >= 0


def _changelist_queries(client, model) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return len(queries.captured_queries)


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_changelist_queries_do_not_grow_with_rows(root_client, tenant_a, alice, model, monkeypatch):
    # Both lists on one page: past it, a big table's estimate adds its one EXPLAIN.
    monkeypatch.setattr(admin.site.get_model_admin(model), "list_per_page", 500)
    make_rows(tenant_a, alice, "A1")
    few = _changelist_queries(root_client, model)
    for n in range(2, 6):
        tenant = Tenant.objects.create(name=f"Tenant {n}", slug=f"tenant-{n}")
        member = User.objects.create_user(email=f"user{n}@example.com", password="x" * 12)
        with tenant_context(tenant):
            Membership.objects.create(tenant=tenant, user=member, role="owner")
        make_rows(tenant, member, f"T{n}")
    # The middleware reads the superuser's tenants anew: new tenants, same queries.
    assert _changelist_queries(root_client, model) == few


def test_search_by_uuid_finds_a_run(root_client, rows):
    execution = rows[AgentExecution]
    response = root_client.get(
        admin_url(AgentExecution, "changelist"), {"q": str(execution.correlation_id)}
    )
    assert [e.pk for e in response.context["cl"].result_list] == [execution.pk]


def _filler(model, rows: dict, number: int):
    """A row of `model` for the trigram test, in the tenant of `rows`, named by `number`."""
    tenant, project = rows[Tenant], rows[Project]
    if model is AgentExecution:
        return AgentExecution(
            tenant=tenant,
            project=project,
            agent_type=f"writer-{number}",
            model="gpt-4o-mini",
            correlation_id=uuid7(),
        )
    if model is Project:
        return Project(tenant=tenant, name=f"Project {number}")
    return Document(tenant=tenant, title=f"Handbook {number}", storage_key=f"bench/{uuid7()}")


# Each searched text column and the trigram index that must serve the admin's search on it
# (chunks, versions and messages search through the same project and document indexes).
TRIGRAM_SEARCHES = [
    (
        AgentExecution,
        (
            "agent_exec_agent_type_trgm",
            "agent_exec_model_trgm",
            "agent_exec_error_type_trgm",
            "agent_exec_error_msg_trgm",
        ),
    ),
    (Project, ("projects_name_trgm",)),
    (Document, ("documents_title_trgm",)),
]


@pytest.mark.django_db(transaction=True)  # ANALYZE (as the owner) must see the rows
@pytest.mark.parametrize(
    ("model", "indexes"), TRIGRAM_SEARCHES, ids=lambda v: getattr(v, "__name__", "")
)
def test_admin_text_search_uses_the_trigram_indexes(rows, rf, superuser, model, indexes):
    request = rf.get("/")
    request.user = superuser
    searched, _ = admin.site.get_model_admin(model).get_search_results(
        request, model._default_manager.all(), "zeppelin"
    )
    # Enough rows in the tenant that its own index is no shortcut, statistics that say so
    # (VACUUM also empties GIN's pending list, which the planner costs as a scan), and no
    # sequential scan to fall back on. Under row-level security, as the admin runs: an
    # index serves ILIKE there only because texticlike is LEAKPROOF.
    with tenant_context(rows[Tenant]):
        model.objects.bulk_create(_filler(model, rows, number) for number in range(3000))
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')
    with tenant_context(rows[Tenant]), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = searched.explain()
    for index in indexes:
        # On a partitioned table (agent_executions) each partition scans its own copy.
        assert any(name in plan for name in index_and_partitions(index)), plan


def index_and_partitions(index: str) -> list[str]:
    """`index` and the indexes of its table's partitions attached to it."""
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
            [index],
        )
        return [index, *(name for (name,) in cursor.fetchall())]


def test_admin_text_search_matches_wildcards_literally(root_client, rows):
    project = rows[Project]
    with tenant_context(project.tenant_id):
        Project.objects.filter(pk=project.pk).update(name="Growth 50% plan")
        other = Project.objects.create(tenant_id=project.tenant_id, name="Growth 500 plan")
    found = [
        p.pk
        for p in root_client.get(admin_url(Project, "changelist"), {"q": "50%"})
        .context["cl"]
        .result_list
    ]
    assert found == [project.pk]
    assert other.pk not in found


def test_search_by_text_still_works(root_client, rows):
    response = root_client.get(admin_url(Project, "changelist"), {"q": "Project A"})
    assert [p.pk for p in response.context["cl"].result_list] == [rows[Project].pk]


def test_superuser_adds_a_version_through_the_service(root_client, rows):
    project = rows[Project]
    response = root_client.post(
        admin_url(DocumentVersion, "add"),
        {
            "tenant": project.tenant_id,
            "project": project.pk,
            "document_type": "about",
            "content": "About A, revised",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302
    with tenant_context(project.tenant_id):
        latest = DocumentVersion.objects.get(project=project, document_type="about", version=2)
    assert latest.prev_sha256 == rows[DocumentVersion].content_sha256
    assert latest.content_sha256 == hashlib.sha256(b"About A, revised").hexdigest()


def test_project_admin_shows_soft_deleted_projects(root_client, rows):
    project = rows[Project]
    with tenant_context(project.tenant_id):
        Project.objects.filter(pk=project.pk).update(deleted_at="2026-01-01T00:00:00Z")
    url = admin_url(Project, "changelist")
    deleted = root_client.get(url, {"state": "deleted"}).context["cl"].result_list
    live = root_client.get(url, {"state": "live"}).context["cl"].result_list
    assert [p.pk for p in deleted] == [project.pk]
    assert list(live) == []
    assert root_client.get(admin_url(Project, "change", project.pk)).status_code == 200


def test_soft_delete_action_hides_the_project(root_client, rows):
    project = rows[Project]
    response = root_client.post(
        admin_url(Project, "changelist"),
        {"action": "soft_delete", "_selected_action": [project.pk]},
    )
    assert response.status_code == 302
    with tenant_context(project.tenant_id):
        assert not Project.objects.filter(pk=project.pk).exists()
        assert Project.all_objects.get(pk=project.pk).deleted_at is not None


def test_superuser_adds_a_user_with_a_password(root_client, db):
    response = root_client.post(
        admin_url(User, "add"),
        {
            "email": "New.Person@Example.com",
            "name": "New Person",
            "usable_password": "true",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(email="new.person@example.com")
    assert user.check_password("a-long-enough-passphrase")


def test_user_emails_are_unique_ignoring_case(root_client, alice):
    response = root_client.post(
        admin_url(User, "add"),
        {
            "email": "ALICE@example.com",
            "usable_password": "true",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors


def test_groups_are_not_in_the_admin(root_client, db):
    assert b"Groups" not in root_client.get(reverse("admin:index")).content


def test_vector_summary_shows_dimension_and_head():
    assert vector_summary(1536, [0.1, -0.2]) == "1536 dimensions: [0.1000, -0.2000, …]"
    assert vector_summary(None, None) == "—"


def test_superuser_uploads_a_document(root_client, rows, file_storages):
    project = rows[Project]
    upload = SimpleUploadedFile("notes.txt", b"Retrieval needs chunks.", "text/plain")
    response = root_client.post(
        admin_url(Document, "add"),
        {"tenant": project.tenant_id, "project": project.pk, "file": upload, "metadata": "{}"},
    )
    assert response.status_code == 302
    with tenant_context(project.tenant_id):
        document = Document.objects.get(title="notes.txt")
    assert document.sha256 == hashlib.sha256(b"Retrieval needs chunks.").hexdigest()
    assert document.storage_key.startswith(f"documents/{project.tenant_id}/")


def test_process_action_queues_a_failed_document_for_the_worker(root_client, rows, file_storages):
    project = rows[Project]
    upload = SimpleUploadedFile("notes.txt", b"Retrieval needs chunks.", "text/plain")
    root_client.post(
        admin_url(Document, "add"),
        {"tenant": project.tenant_id, "project": project.pk, "file": upload, "metadata": "{}"},
    )
    with tenant_context(project.tenant_id):
        document = Document.objects.get(title="notes.txt")
    # The upload queued its job (the worker runs it: tests/documents/test_worker.py).
    assert (document.status, len(jobs(INGEST_TASK))) == (Document.Status.QUEUED, 1)
    # Queued again while its job waits: still one job.
    process = {"action": "process", "_selected_action": [document.pk]}
    root_client.post(admin_url(Document, "changelist"), process)
    assert len(jobs(INGEST_TASK)) == 1
    with tenant_context(project.tenant_id):
        Document.objects.filter(pk=document.pk).update(status="failed", error_message="down")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'failed'")
    root_client.post(admin_url(Document, "changelist"), process)
    with tenant_context(project.tenant_id):
        document.refresh_from_db()
    assert document.status == Document.Status.QUEUED
    assert [job["status"] for job in jobs(INGEST_TASK)] == ["failed", "todo"]


def test_superuser_adds_an_export_that_is_built(root_client, rows, file_storages):
    project = rows[Project]
    response = root_client.post(
        admin_url(Export, "add"),
        {"tenant": project.tenant_id, "project": project.pk, "format": "markdown"},
    )
    assert response.status_code == 302
    with tenant_context(project.tenant_id):
        export = Export.objects.filter(project=project, format="markdown").get()
    assert export.status == Export.Status.COMPLETED


def test_superuser_adds_and_cancels_an_execution(root_client, rows):
    project = rows[Project]
    response = root_client.post(
        admin_url(AgentExecution, "add"),
        {
            "tenant": project.tenant_id,
            "project": project.pk,
            "agent_type": "planner",
            "input_data": '{"goal": "plan"}',
        },
    )
    assert response.status_code == 302
    with tenant_context(project.tenant_id):
        execution = AgentExecution.objects.get(agent_type="planner")
    assert execution.status == AgentExecution.Status.PENDING
    root_client.post(
        admin_url(AgentExecution, "changelist"),
        {"action": "cancel", "_selected_action": [execution.pk]},
    )
    with tenant_context(project.tenant_id):
        execution.refresh_from_db()
    assert execution.status == AgentExecution.Status.CANCELLED


def test_execution_status_is_read_only_on_change(root_client, rows):
    response = root_client.get(admin_url(AgentExecution, "change", rows[AgentExecution].pk))
    assert "status" not in response.context["adminform"].form.fields


def test_superuser_adds_a_tenant(root_client, db):
    response = root_client.post(
        admin_url(Tenant, "add"), {"name": "Tenant C", "slug": "tenant-c", "settings": "{}"}
    )
    assert response.status_code == 302
    assert Tenant.objects.filter(slug="tenant-c").exists()


# --- Rules every admin follows ------------------------------------------------------------

CREATED_BY_MODELS = [
    model for model in ADMIN_MODELS if any(f.name == "created_by" for f in model._meta.fields)
]
PROJECT_CHILD_MODELS = [
    model
    for model in ADMIN_MODELS
    if any(f.name == "project" and f.related_model is Project for f in model._meta.fields)
]


def test_the_rules_below_cover_the_models_they_are_about():
    assert {Project, DocumentVersion, Document, Export} <= set(CREATED_BY_MODELS)
    assert {DocumentVersion, Document, AgentExecution, ConversationMessage, Export} <= set(
        PROJECT_CHILD_MODELS
    )


@pytest.mark.parametrize("model", CREATED_BY_MODELS, ids=lambda m: m.__name__)
def test_created_by_is_never_a_form_field(root_client, rows, model):
    add = root_client.get(admin_url(model, "add"))
    assert "created_by" not in add.context["adminform"].form.fields
    change = root_client.get(admin_url(model, "change", row_of(rows, model).pk))
    assert "created_by" not in change.context["adminform"].form.fields
    assert "created_by" in change.context["adminform"].readonly_fields


@pytest.mark.parametrize("model", PROJECT_CHILD_MODELS, ids=lambda m: m.__name__)
def test_project_choices_are_live_projects(root_client, rows, model):
    project = rows[Project]
    with tenant_context(project.tenant_id):
        Project.objects.filter(pk=project.pk).update(deleted_at="2026-01-01T00:00:00Z")
        live = Project.objects.create(tenant_id=project.tenant_id, name="Live")
    add = root_client.get(admin_url(model, "add"))
    fields = add.context["adminform"].form.fields
    if "project" in fields:  # not on an evaluation's: it takes its target's project
        with tenant_context(project.tenant_id):
            assert set(fields["project"].queryset) == {live}
    response = root_client.get(
        reverse("admin:autocomplete"),
        {
            "app_label": model._meta.app_label,
            "model_name": model._meta.model_name,
            "field_name": "project",
        },
    )
    assert response.status_code == 200
    assert {result["id"] for result in response.json()["results"]} == {str(live.pk)}
