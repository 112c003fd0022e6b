"""Provenance: from a document version to its executions, their step tree and exact sources."""

import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors, services
from agents.models import ExecutionSource
from documents.models import Chunk, Document
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_chunks(tenant, project, title: str, contents: list[str]) -> list[Chunk]:
    with tenant_context(tenant):
        document = Document.objects.create(
            tenant=tenant, project=project, title=title, storage_key=f"uploads/{title}.txt"
        )
        return [
            Chunk.objects.create(tenant=tenant, document=document, ordinal=n, content=content)
            for n, content in enumerate(contents)
        ]


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


@pytest.fixture
def chunks(tenant_a, project):
    return make_chunks(
        tenant_a, project, "handbook", ["Rockets need fuel.", "Orbits are ellipses.", "Moon."]
    )


@pytest.fixture
def execution(tenant_a, project):
    return services.execution_create(tenant=tenant_a, project=project, agent_type="retriever")


@pytest.fixture
def run(tenant_a, project, chunks):
    """An orchestrated run: a retriever step, a failed writer and its retry that wrote v1."""
    root = services.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    services.execution_start(tenant=tenant_a, execution=root)
    retriever = services.execution_create(
        tenant=tenant_a, project=project, agent_type="retriever", parent=root
    )
    services.execution_record_sources(
        tenant=tenant_a,
        execution=retriever,
        results=[
            {"chunk": chunks[1], "score": 0.91, "rank": 1},
            {"chunk_id": chunks[0].pk, "score": 0.72, "rank": 2},
        ],
    )
    writer = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", parent=root
    )
    services.execution_start(tenant=tenant_a, execution=writer)
    services.execution_fail(tenant=tenant_a, execution=writer, error_type="RateLimited")
    retry = services.execution_retry(tenant=tenant_a, execution=writer)
    services.execution_start(tenant=tenant_a, execution=retry)
    services.execution_record_sources(
        tenant=tenant_a, execution=retry, results=[{"chunk": chunks[2], "score": 0.5}]
    )
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo"
    )
    services.execution_finish(tenant=tenant_a, execution=retry, produced_version=version)
    return {"root": root, "retriever": retriever, "writer": writer, "retry": retry, "v": version}


def snapshot(sources) -> list[tuple]:
    return [(s.rank, s.score, s.chunk_sha256, s.content, s.ordinal) for s in sources]


# Recording sources


def test_sources_keep_rank_score_hash_and_a_snapshot(tenant_a, execution, chunks):
    services.execution_record_sources(
        tenant=tenant_a,
        execution=execution,
        results=[{"chunk": chunks[0], "score": 0.8, "rank": 1}],
    )
    (source,) = selectors.execution_sources(tenant=tenant_a, execution=execution)
    assert (source.chunk_id, source.rank, source.score) == (chunks[0].pk, 1, 0.8)
    assert source.chunk_sha256 == sha256("Rockets need fuel.")
    assert (source.document_id, source.document_title) == (chunks[0].document_id, "handbook")
    assert (source.ordinal, source.content) == (0, "Rockets need fuel.")


def test_results_may_be_objects_and_rank_defaults_to_their_position(tenant_a, execution, chunks):
    class Hit:
        def __init__(self, chunk, score):
            self.chunk, self.score = chunk, score

    services.execution_record_sources(
        tenant=tenant_a, execution=execution, results=[Hit(chunks[2], 0.9), Hit(chunks[0], 0.4)]
    )
    sources = selectors.execution_sources(tenant=tenant_a, execution=execution)
    assert [(s.rank, s.chunk_id) for s in sources] == [(1, chunks[2].pk), (2, chunks[0].pk)]


def test_a_matching_given_hash_is_accepted(tenant_a, execution, chunks):
    services.execution_record_sources(
        tenant=tenant_a,
        execution=execution,
        results=[{"chunk": chunks[0], "score": 1.0, "chunk_sha256": sha256(chunks[0].content)}],
    )
    assert len(selectors.execution_sources(tenant=tenant_a, execution=execution)) == 1


def test_a_hash_that_does_not_match_the_chunk_is_refused(tenant_a, execution, chunks):
    with pytest.raises(ValidationError) as error:
        services.execution_record_sources(
            tenant=tenant_a,
            execution=execution,
            results=[{"chunk": chunks[0], "score": 1.0, "chunk_sha256": sha256("other")}],
        )
    assert "chunk_sha256" in error.value.message_dict


@pytest.mark.parametrize(("field", "result"), [("rank", {"rank": 0}), ("score", {"score": None})])
def test_a_bad_rank_or_score_is_refused_naming_it(tenant_a, execution, chunks, field, result):
    with pytest.raises(ValidationError) as error:
        services.execution_record_sources(
            tenant=tenant_a,
            execution=execution,
            results=[{"chunk": chunks[0], "score": 1, **result}],
        )
    assert field in error.value.message_dict


def test_a_chunk_is_recorded_once_per_execution(tenant_a, execution, chunks):
    with pytest.raises(ValidationError) as error:
        services.execution_record_sources(
            tenant=tenant_a,
            execution=execution,
            results=[{"chunk": chunks[0], "score": 1}, {"chunk": chunks[0], "score": 0.5}],
        )
    assert "chunk" in error.value.message_dict
    services.execution_record_sources(
        tenant=tenant_a, execution=execution, results=[{"chunk": chunks[0], "score": 1}]
    )
    with pytest.raises(ValidationError):
        services.execution_record_sources(
            tenant=tenant_a, execution=execution, results=[{"chunk": chunks[0], "score": 1}]
        )


def test_the_database_refuses_rank_0(tenant_a, execution, chunks):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(
                """
                INSERT INTO execution_sources
                    (tenant_id, execution_id, chunk_id, rank, score, chunk_sha256,
                     document_title, content)
                VALUES (%s, %s, %s, 0, 1.0, %s, '', %s)
                """,
                [tenant_a.pk, execution.pk, chunks[0].pk, sha256("x"), "x"],
            )
        assert "execution_sources_rank_gte_1" in str(error.value)


def test_a_source_is_immutable_except_for_clearing_its_chunk(tenant_a, execution, chunks):
    (source,) = services.execution_record_sources(
        tenant=tenant_a, execution=execution, results=[{"chunk": chunks[0], "score": 1}]
    )
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute("UPDATE execution_sources SET rank = 2 WHERE id = %s", [source.pk])
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(
                "UPDATE execution_sources SET chunk_id = %s WHERE id = %s",
                [chunks[1].pk, source.pk],
            )
        cursor.execute("UPDATE execution_sources SET chunk_id = NULL WHERE id = %s", [source.pk])


# The provenance walk


def test_provenance_walks_from_a_version_to_its_run_and_sources(tenant_a, run, chunks):
    result = selectors.provenance(tenant=tenant_a, version=run["v"])

    assert [e.pk for e in result.producers] == [run["retry"].pk]
    (walked,) = result.runs
    assert walked.correlation_id == run["root"].correlation_id
    (root,) = walked.roots
    assert root.execution.pk == run["root"].pk
    assert [(n.execution.agent_type, n.execution.attempt) for n in root.children] == [
        ("retriever", 1),
        ("writer", 1),
        ("writer", 2),
    ]
    retriever = root.children[0]
    assert snapshot(retriever.sources) == [
        (1, 0.91, sha256("Orbits are ellipses."), "Orbits are ellipses.", 1),
        (2, 0.72, sha256("Rockets need fuel."), "Rockets need fuel.", 0),
    ]
    assert [s.chunk_id for s in walked.sources] == [chunks[1].pk, chunks[0].pk, chunks[2].pk]


def test_provenance_is_complete_after_a_source_chunk_is_deleted(tenant_a, run, chunks):
    before = selectors.provenance(tenant=tenant_a, version=run["v"])
    with tenant_context(tenant_a):
        Chunk.objects.filter(pk=chunks[1].pk).delete()

    after = selectors.provenance(tenant=tenant_a, version=run["v"])
    assert snapshot(after.sources) == snapshot(before.sources)
    assert [s.chunk_id for s in after.sources] == [None, chunks[0].pk, chunks[2].pk]
    assert [n.execution.pk for n in after.runs[0].nodes()] == [
        n.execution.pk for n in before.runs[0].nodes()
    ]


def test_provenance_survives_a_raw_sql_delete_of_the_whole_document(tenant_a, run, chunks):
    before = selectors.provenance(tenant=tenant_a, version=run["v"])
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute("DELETE FROM documents WHERE id = %s", [chunks[0].document_id])
        # Check the deferred foreign keys now, not at the test's rolled-back commit.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    after = selectors.provenance(tenant=tenant_a, version=run["v"])
    assert snapshot(after.sources) == snapshot(before.sources)
    assert {s.chunk_id for s in after.sources} == {None}
    assert {s.document_id for s in after.sources} == {chunks[0].document_id}


def test_a_version_no_execution_produced_has_empty_provenance(tenant_a, project):
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="by hand"
    )
    result = selectors.provenance(tenant=tenant_a, version=version)
    assert (result.runs, result.producers, result.sources) == ([], [], [])


def test_run_tree_nests_steps_under_their_parents(tenant_a, project):
    root = services.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    step = services.execution_create(
        tenant=tenant_a, project=project, agent_type="planner", parent=root
    )
    services.execution_create(tenant=tenant_a, project=project, agent_type="tool", parent=step)
    (tree,) = selectors.run_tree(tenant=tenant_a, correlation_id=root.correlation_id)
    assert [n.execution.agent_type for n in tree.walk()] == ["orchestrator", "planner", "tool"]
    assert tree.children[0].children[0].execution.parent_id == step.pk


# Tenant isolation


def test_another_tenant_cannot_attach_sources_to_an_execution(tenant_b, execution, chunks):
    with pytest.raises(ValidationError) as error:
        services.execution_record_sources(
            tenant=tenant_b, execution=execution, results=[{"chunk_id": chunks[0].pk, "score": 1}]
        )
    assert "execution" in error.value.message_dict


def test_another_tenants_chunk_cannot_be_a_source(tenant_b, chunks):
    project_b = project_create(tenant=tenant_b, name="B")
    execution_b = services.execution_create(tenant=tenant_b, project=project_b, agent_type="r")
    for result in ({"chunk": chunks[0], "score": 1}, {"chunk_id": chunks[0].pk, "score": 1}):
        with pytest.raises(ValidationError) as error:
            services.execution_record_sources(
                tenant=tenant_b, execution=execution_b, results=[result]
            )
        assert "chunk" in error.value.message_dict


def insert_source(cursor, tenant_id, execution_id, chunk_id) -> None:
    cursor.execute(
        """
        INSERT INTO execution_sources
            (tenant_id, execution_id, chunk_id, rank, score, chunk_sha256, document_title, content)
        VALUES (%s, %s, %s, 1, 1.0, %s, '', 'x')
        """,
        [tenant_id, execution_id, chunk_id, sha256("x")],
    )


def test_the_composite_keys_refuse_a_raw_insert_across_tenants(tenant_b, execution, chunks):
    project_b = project_create(tenant=tenant_b, name="B")
    execution_b = services.execution_create(tenant=tenant_b, project=project_b, agent_type="r")
    with tenant_context(tenant_b), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            insert_source(cursor, tenant_b.pk, execution.pk, None)
        assert "execution_sources_execution_tenant_fk" in str(error.value)
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            insert_source(cursor, tenant_b.pk, execution_b.pk, chunks[0].pk)
        assert "execution_sources_chunk_tenant_fk" in str(error.value)
        assert ExecutionSource.objects.count() == 0


def test_another_tenant_sees_no_sources(tenant_a, tenant_b, execution, chunks):
    services.execution_record_sources(
        tenant=tenant_a, execution=execution, results=[{"chunk": chunks[0], "score": 1}]
    )
    with tenant_context(tenant_b):
        assert ExecutionSource.objects.count() == 0
