"""Projects, document versions, documents and chunks as the database enforces them."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agents.models import AgentExecution
from core.db.connections import owner_connection
from documents.embedding import get_embedder
from documents.models import Chunk, Document, DocumentVersion, Project
from exports.models import Export
from tenancy.context import tenant_context


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_version(project: Project, version: int = 1, document_type: str = "about", **fields):
    content = fields.pop("content", f"{document_type} v{version}")
    fields.setdefault("content_sha256", sha(content))
    if version > 1:
        fields.setdefault("prev_sha256", sha(f"{document_type} v{version - 1}"))
    return DocumentVersion.objects.create(
        tenant_id=project.tenant_id,
        project=project,
        document_type=document_type,
        version=version,
        content=content,
        **fields,
    )


def raw(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if cursor.description else []


def constraint_name(error: IntegrityError) -> str | None:
    return error.__cause__.diag.constraint_name


@pytest.fixture
def project(in_tenant_a) -> Project:
    return Project.objects.create(tenant=in_tenant_a, name="Apollo")


@pytest.fixture
def version(project) -> DocumentVersion:
    return make_version(project)


# --- immutability of document versions -------------------------------------------------


@pytest.fixture
def both_tenants(tenant_a, tenant_b):
    """Row-level security admits both tenants, so only the trigger can refuse a move."""
    with tenant_context(tenant_a, tenant_b):
        yield


def new_value(field: str, version: DocumentVersion, tenant_b) -> object:
    """A value for `field` that differs from the version's and passes every other rule."""
    if field == "project_id":
        return Project.objects.create(tenant_id=version.tenant_id, name="Other").pk
    return {
        "content": "rewritten",
        "content_sha256": sha("rewritten"),
        "prev_sha256": sha("a forged predecessor"),
        "version": 2,
        "document_type": "plan",
        "tenant_id": tenant_b.pk,
    }[field]


IMMUTABLE_FIELDS = [
    "content",
    "content_sha256",
    "prev_sha256",
    "version",
    "document_type",
    "project_id",
    "tenant_id",
]


@pytest.mark.parametrize("how", ["raw_sql", "queryset_update", "save"])
@pytest.mark.parametrize("field", IMMUTABLE_FIELDS)
def test_version_columns_are_immutable(version, tenant_b, both_tenants, field, how):
    value = new_value(field, version, tenant_b)
    original = getattr(version, field)
    with pytest.raises(IntegrityError, match="is immutable") as excinfo, transaction.atomic():
        if how == "raw_sql":
            raw(f"UPDATE document_versions SET {field} = %s WHERE id = %s", [value, version.pk])
        elif how == "queryset_update":
            DocumentVersion.objects.filter(pk=version.pk).update(**{field: value})
        else:
            setattr(version, field, value)
            version.save()
    assert excinfo.value.__cause__.sqlstate == "23000"  # integrity_constraint_violation
    [(stored,)] = raw(f"SELECT {field} FROM document_versions WHERE id = %s", [version.pk])
    assert stored == original != value


@pytest.mark.parametrize(
    ("field", "value"),
    [("metadata", {"reviewed": True}), ("readability_score", 71.5), ("grammar_score", 88.0)],
)
@pytest.mark.parametrize("how", ["raw_sql", "queryset_update", "save"])
def test_version_metadata_and_scores_may_change(version, field, value, how):
    if how == "raw_sql":
        param = '{"reviewed": true}' if field == "metadata" else value
        raw(f"UPDATE document_versions SET {field} = %s WHERE id = %s", [param, version.pk])
    elif how == "queryset_update":
        DocumentVersion.objects.filter(pk=version.pk).update(**{field: value})
    else:
        setattr(version, field, value)
        version.save()  # rewrites every column with its unchanged value too
    assert getattr(DocumentVersion.objects.get(pk=version.pk), field) == value


# --- content hashes, numbering and the chain -------------------------------------------


def test_version_number_is_unique_per_project_and_document_type(project, version):
    make_version(project, version=1, document_type="plan")
    make_version(Project.objects.create(tenant_id=project.tenant_id, name="B"), version=1)
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        make_version(project, version=1, content="again")
    assert constraint_name(excinfo.value) == "document_versions_project_type_version_uniq"


def test_content_sha256_must_be_the_hash_of_the_content(project):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        DocumentVersion.objects.bulk_create(
            [
                DocumentVersion(
                    tenant_id=project.tenant_id,
                    project=project,
                    document_type="about",
                    version=1,
                    content="the content",
                    content_sha256=sha("other content"),
                )
            ]
        )
    assert constraint_name(excinfo.value) == "document_versions_content_sha256_matches"


def test_database_hash_is_the_sha256_of_the_utf8_content(project):
    content = "Grüße, naïve café ✓ 日本語 🚀\n"
    saved = make_version(project, content=content)
    assert saved.content_sha256 == hashlib.sha256(content.encode("utf-8")).hexdigest()


def test_full_clean_reports_a_content_hash_mismatch(project):
    version = DocumentVersion(
        tenant_id=project.tenant_id,
        project=project,
        document_type="about",
        version=1,
        content="the content",
        content_sha256=sha("other content"),
    )
    with pytest.raises(ValidationError, match="document_versions_content_sha256_matches"):
        version.full_clean()


def test_first_version_has_no_predecessor_and_later_ones_name_it(project, version):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        make_version(project, version=1, document_type="plan", prev_sha256=sha("nothing"))
    assert constraint_name(excinfo.value) == "document_versions_prev_sha256_chain"
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        make_version(project, version=2, prev_sha256=None)
    assert constraint_name(excinfo.value) == "document_versions_prev_sha256_chain"
    second = make_version(project, version=2, prev_sha256=version.content_sha256)
    assert second.prev_sha256 == version.content_sha256


# --- cascades ------------------------------------------------------------------------


@pytest.fixture
def project_with_children(project, version):
    execution = AgentExecution.objects.create(
        tenant_id=project.tenant_id,
        project=project,
        agent_type="writer",
        correlation_id=uuid.uuid4(),
        produced_version=version,
    )
    AgentExecution.objects.create(
        tenant_id=project.tenant_id,
        project=project,
        agent_type="writer",
        correlation_id=execution.correlation_id,
        parent=execution,
    )
    Export.objects.create(tenant_id=project.tenant_id, project=project)
    document = Document.objects.create(
        tenant_id=project.tenant_id, project=project, title="Spec", storage_key="uploads/spec"
    )
    return project, document


def delete_with(how: str, table: str, obj) -> None:
    if how == "orm":
        obj.delete()
    else:
        raw(f"DELETE FROM {table} WHERE id = %s", [obj.pk])
    # Django's own foreign keys are DEFERRABLE INITIALLY DEFERRED: check them now,
    # not at a commit the test never reaches.
    raw("SET CONSTRAINTS ALL IMMEDIATE")


@pytest.mark.parametrize("how", ["orm", "raw_sql"])
def test_deleting_a_project_deletes_its_versions_executions_and_exports(project_with_children, how):
    project, document = project_with_children
    delete_with(how, "projects", project)
    assert not Project.all_objects.filter(pk=project.pk).exists()
    assert not DocumentVersion.objects.filter(project_id=project.pk).exists()
    assert not AgentExecution.objects.filter(project_id=project.pk).exists()
    assert not Export.objects.filter(project_id=project.pk).exists()
    # A knowledge document outlives the project it was filed under.
    document.refresh_from_db()
    assert document.project_id is None


@pytest.mark.parametrize("how", ["orm", "raw_sql"])
def test_deleting_a_document_deletes_its_chunks(project, how):
    document = Document.objects.create(
        tenant_id=project.tenant_id, title="Handbook", storage_key="uploads/handbook"
    )
    other = Document.objects.create(
        tenant_id=project.tenant_id, title="Other", storage_key="uploads/other"
    )
    for ordinal in range(3):
        Chunk.objects.create(
            tenant_id=project.tenant_id, document=document, ordinal=ordinal, content="c"
        )
    Chunk.objects.create(tenant_id=project.tenant_id, document=other, ordinal=0, content="c")
    delete_with(how, "documents", document)
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert Chunk.objects.filter(document=other).count() == 1


# --- soft delete ---------------------------------------------------------------------


def test_a_soft_deleted_project_is_hidden_but_kept(project, version):
    live = Project.objects.create(tenant_id=project.tenant_id, name="Live")
    Project.objects.filter(pk=project.pk).update(deleted_at=timezone.now())

    assert list(Project.objects.all()) == [live]
    assert not Project.objects.filter(pk=project.pk).exists()
    assert set(Project.all_objects.all()) == {project, live}
    assert list(Project.all_objects.deleted()) == [project]
    assert raw("SELECT count(*) FROM projects WHERE id = %s", [project.pk]) == [(1,)]

    # Related lookups use the base manager (all_objects), so history still reaches it.
    reloaded = DocumentVersion.objects.get(pk=version.pk)
    assert reloaded.project == project
    assert reloaded.project.is_deleted
    assert list(reloaded.project.versions.all()) == [version]
    assert DocumentVersion.objects.filter(project__name="Apollo").count() == 1


# --- nearest neighbours ----------------------------------------------------------------

TOPICS = ["postgres", "python", "django", "vector", "tenant", "export", "agent", "chunk"]
COLOURS = ["red", "green", "blue", "amber", "violet", "cyan"]


@pytest.mark.django_db(transaction=True)
def test_nearest_neighbour_query_uses_the_hnsw_index_and_finds_the_match(tenant_a):
    embedder = get_embedder()
    texts = [f"notes on {topic} in {colour} ink" for topic in TOPICS for colour in COLOURS]
    with tenant_context(tenant_a):
        document = Document.objects.create(
            tenant=tenant_a, title="Notes", storage_key="uploads/notes"
        )
        Chunk.objects.bulk_create(
            Chunk(
                tenant=tenant_a,
                document=document,
                ordinal=ordinal,
                content=text,
                embedding=vector,
                embedding_model=embedder.model,
            )
            for ordinal, (text, vector) in enumerate(zip(texts, embedder.embed(texts), strict=True))
        )
    # The match, not the index's recall under churn: the rolled-back inserts of earlier
    # tests stay in the shared graph until a vacuum (copies of these very vectors among
    # them), and a scan can spend its candidates and its memory on such dead entries.
    # Rebuilt from the committed rows, the graph holds this test's rows only.
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("REINDEX INDEX chunks_embedding_hnsw_idx")
    target = "notes on django in amber ink"
    query_vector = str(embedder.embed([target])[0])
    sql = "SELECT content FROM chunks ORDER BY embedding <=> %s::vector LIMIT 3"
    with tenant_context(tenant_a):
        # A tiny, never analysed table is cheaper to sort through the tenant index; with
        # sequential scans and sorts off, only an index that yields rows by distance can
        # serve.
        raw("SET LOCAL enable_seqscan = off")
        raw("SET LOCAL enable_sort = off")
        plan = "\n".join(line for (line,) in raw(f"EXPLAIN {sql}", [query_vector]))
        assert "chunks_embedding_hnsw_idx" in plan
        nearest = [content for (content,) in raw(sql, [query_vector])]
    assert nearest[0] == target
    assert all("django" in text or "amber" in text for text in nearest[1:])
