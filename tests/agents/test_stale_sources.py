"""Stale-output flags (docs/architecture.md, "Stale outputs"): a re-ingested, re-embedded,
deleted or erased chunk flags the executions that read it, and marks the versions their
runs produced, which the exports holding them show."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from agents.models import AgentExecution, StaleSource
from agents.selectors import stale_outputs
from agents.services import (
    execution_create,
    execution_finish,
    execution_record_sources,
    execution_start,
)
from core.hashing import sha256_hex
from documents.embedding import Embedder, get_embedder, hashing_embedder
from documents.models import Chunk, DocumentVersion, Project
from documents.services import (
    chunks_reembed,
    document_delete,
    document_ingest,
    document_reingest,
    document_version_create,
    project_create,
    project_restrict,
)
from erasure.services import erase_document
from exports.models import Export
from exports.selectors import exports_on_changed_sources
from exports.services import export_create
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, listed, logged_in
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)

# Three chunks of four words each (chunk_size counts tokens, no overlap).
CHUNKING = {"chunk_size": 4, "chunk_overlap": 0}
TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
CHANGED_MIDDLE = "alpha beta gamma delta EPSILON ZETA ETA THETA iota kappa lambda mu"


class CountingEmbedder:
    """The default hashing embedder under a model name, counting the texts it embeds."""

    def __init__(self, model: str) -> None:
        self.texts = 0
        self.embedder = Embedder(function=self._embed, model=model, dimension=1536)

    def _embed(self, texts):
        self.texts += len(texts)
        return hashing_embedder(texts)


def grounded_run(tenant, *, title="Handbook"):
    """A document of three chunks; a run whose retriever step read all three and whose
    writer step (same run, another execution) produced a version; an export of it."""
    document = document_ingest(tenant=tenant, title=title, text=TEXT, **CHUNKING)
    project = project_create(tenant=tenant, name=f"Project {uuid.uuid4().hex[:6]}")
    root = execution_start(
        tenant=tenant,
        execution=execution_create(tenant=tenant, project=project, agent_type="writer"),
    )
    retriever = execution_start(
        tenant=tenant,
        execution=execution_create(
            tenant=tenant,
            project=project,
            agent_type="retriever",
            parent=root,
            correlation_id=root.correlation_id,
        ),
    )
    with tenant_context(tenant):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    assert len(chunks) == 3
    execution_record_sources(
        tenant=tenant,
        execution=retriever,
        results=[{"chunk": chunk, "score": 0.5} for chunk in chunks],
    )
    retriever = execution_finish(tenant=tenant, execution=retriever)
    version = document_version_create(
        tenant=tenant, project=project, document_type="about", content="Built on the handbook."
    )
    root = execution_finish(tenant=tenant, execution=root, produced_version=version)
    export = export_create(tenant=tenant, project=project)
    assert export.status == Export.Status.COMPLETED
    return {
        "document": document,
        "project": project,
        "root": root,
        "retriever": retriever,
        "chunks": chunks,
        "version": version,
        "export": export,
    }


def flags(tenant) -> list[StaleSource]:
    with tenant_context(tenant):
        return list(StaleSource.objects.order_by("ordinal", "created_at"))


def sources_changed_at(tenant, version):
    with tenant_context(tenant):
        return DocumentVersion.objects.get(pk=version.pk).sources_changed_at


def test_a_changed_reingestion_flags_the_run_its_version_and_export(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    middle = work["chunks"][1]

    result = document_reingest(
        tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING
    )

    assert (result.unchanged, result.changed, result.added, result.removed) == (2, 1, 0, 0)
    [flag] = flags(tenant_a)
    assert flag.execution_id == work["retriever"].pk
    assert flag.reason == StaleSource.Reason.REINGESTED
    assert (flag.chunk_id, flag.document_id, flag.ordinal) == (middle.pk, middle.document_id, 1)
    assert flag.read_sha256 == sha256_hex(middle.content)
    assert flag.new_sha256 == sha256_hex("EPSILON ZETA ETA THETA")
    assert sources_changed_at(tenant_a, work["version"]) is not None

    outputs = stale_outputs(tenant=tenant_a, project=work["project"])
    assert [item.execution.pk for item in outputs.executions] == [work["retriever"].pk]
    assert [change.chunk_id for change in outputs.executions[0].changes] == [middle.pk]
    # The version was written by another step of the same run.
    assert [item.version.pk for item in outputs.versions] == [work["version"].pk]
    assert [e.pk for e in outputs.versions[0].executions] == [work["retriever"].pk]
    stale_exports = exports_on_changed_sources(tenant=tenant_a, project=work["project"])
    assert [item.export.pk for item in stale_exports] == [work["export"].pk]
    assert [v.pk for v in stale_exports[0].versions] == [work["version"].pk]

    # The same change again is the same flag, not a second one.
    document_reingest(tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)
    assert len(flags(tenant_a)) == 1


def test_an_unchanged_reingestion_flags_nothing_and_embeds_nothing(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    counting = CountingEmbedder(get_embedder().model)

    result = document_reingest(
        tenant=tenant_a,
        document=work["document"],
        text=TEXT,
        embedder=counting.embedder,
        **CHUNKING,
    )

    assert (result.unchanged, result.changed, result.added, result.removed) == (3, 0, 0, 0)
    assert counting.texts == 0
    assert flags(tenant_a) == []
    assert sources_changed_at(tenant_a, work["version"]) is None
    outputs = stale_outputs(tenant=tenant_a, project=work["project"])
    assert outputs.executions == [] and outputs.versions == []
    assert exports_on_changed_sources(tenant=tenant_a, project=work["project"]) == []


def test_a_shorter_reingestion_flags_the_removed_chunk(tenant_a, file_storages):
    work = grounded_run(tenant_a)

    result = document_reingest(
        tenant=tenant_a, document=work["document"], text=TEXT.rsplit(" ", 4)[0], **CHUNKING
    )

    assert (result.unchanged, result.removed) == (2, 1)
    [flag] = flags(tenant_a)
    assert (flag.reason, flag.ordinal, flag.new_sha256) == (StaleSource.Reason.REMOVED, 2, None)
    assert flag.chunk_id == work["chunks"][2].pk


def test_reembedding_with_another_model_flags_every_chunk_read(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    other = CountingEmbedder("hashing-v2")

    assert chunks_reembed(tenant=tenant_a, embedder=other.embedder) == 3

    found = flags(tenant_a)
    assert [flag.reason for flag in found] == [StaleSource.Reason.REEMBEDDED] * 3
    assert all(flag.new_sha256 == flag.read_sha256 for flag in found)
    assert sources_changed_at(tenant_a, work["version"]) is not None
    # Re-embedding again with the same model changes nothing more.
    assert chunks_reembed(tenant=tenant_a, embedder=other.embedder) == 0
    assert len(flags(tenant_a)) == 3


def test_a_reingested_chunk_reembedded_is_still_the_one_change(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    document_reingest(tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)

    chunks_reembed(tenant=tenant_a, embedder=CountingEmbedder("hashing-v2").embedder)

    # The run read the middle chunk's old text: that it is now another text under another
    # vector is the change flagged already; the two others are re-embedded.
    assert [(flag.ordinal, flag.reason) for flag in flags(tenant_a)] == [
        (0, StaleSource.Reason.REEMBEDDED),
        (1, StaleSource.Reason.REINGESTED),
        (2, StaleSource.Reason.REEMBEDDED),
    ]


def test_a_raw_sql_change_of_a_chunk_is_flagged_too(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    chunk = work["chunks"][0]

    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chunks SET content = 'rewritten by hand' WHERE tenant_id = %s AND id = %s",
            [tenant_a.pk, chunk.pk],
        )

    [flag] = flags(tenant_a)
    assert (flag.reason, flag.chunk_id) == (StaleSource.Reason.REINGESTED, chunk.pk)
    assert flag.new_sha256 == sha256_hex("rewritten by hand")


def test_erasing_the_document_flags_its_chunks_erased_with_hashes_only(tenant_a, file_storages):
    work = grounded_run(tenant_a)

    erase_document(document_id=work["document"].pk, requested_by="dpo@example.com")

    found = flags(tenant_a)
    assert [flag.reason for flag in found] == [StaleSource.Reason.ERASED] * 3
    assert [flag.chunk_id for flag in found] == [chunk.pk for chunk in work["chunks"]]
    assert all(flag.new_sha256 is None for flag in found)
    # Nothing of the erased text: the flag's columns are ids, ordinals and hashes.
    text_columns = {
        field.name
        for field in StaleSource._meta.concrete_fields
        if field.get_internal_type() in ("CharField", "TextField")
    }
    assert text_columns == {"read_sha256", "new_sha256", "reason"}
    assert sources_changed_at(tenant_a, work["version"]) is not None


def test_deleting_the_document_flags_its_chunks_removed(tenant_a, file_storages):
    work = grounded_run(tenant_a)

    document_delete(tenant=tenant_a, document=work["document"])

    assert [flag.reason for flag in flags(tenant_a)] == [StaleSource.Reason.REMOVED] * 3


def test_flags_go_with_their_execution(tenant_a, file_storages):
    work = grounded_run(tenant_a)
    document_reingest(tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)
    assert flags(tenant_a)

    with tenant_context(tenant_a):
        AgentExecution.objects.filter(pk=work["retriever"].pk).delete()

    assert flags(tenant_a) == []


def test_another_tenant_sees_no_flags(tenant_a, tenant_b, file_storages):
    work = grounded_run(tenant_a)
    document_reingest(tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)

    assert flags(tenant_b) == []
    with tenant_context(tenant_b):
        assert not StaleSource.objects.filter(pk__in=[f.pk for f in flags(tenant_a)]).exists()


def test_a_restricted_projects_flags_are_hidden_from_who_may_not_see_it(
    tenant_a, alice, file_storages
):
    work = grounded_run(tenant_a)
    project_restrict(tenant=tenant_a, project=work["project"], by=alice)
    editor = make_member(tenant_a, "editor@example.com", role="editor")

    # The editor re-ingests the document: the restricted run is flagged all the same.
    with tenant_context(tenant_a, user=editor):
        document_reingest(
            tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING
        )

    with tenant_context(tenant_a, user=alice):
        assert StaleSource.objects.count() == 1
        outputs = stale_outputs(tenant=tenant_a, project=work["project"])
        assert len(outputs.executions) == 1 and len(outputs.versions) == 1
    with tenant_context(tenant_a, user=editor):
        assert StaleSource.objects.count() == 0
        outputs = stale_outputs(tenant=tenant_a, project=work["project"])
        assert outputs.executions == [] and outputs.versions == []


def test_the_admin_shows_the_badges_the_changed_chunks_and_the_projects_lists(
    client, tenant_a, alice, file_storages
):
    work = grounded_run(tenant_a)
    document_reingest(tenant=tenant_a, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)
    logged_in(client, alice)

    stale_runs = listed(client, AgentExecution, sources_changed="True")
    assert stale_runs == [work["retriever"].pk]
    assert work["retriever"].pk not in listed(client, AgentExecution, sources_changed="False")
    assert listed(client, DocumentVersion, sources_changed_at__isempty="0") == [work["version"].pk]
    assert listed(client, Export, sources_changed="True") == [work["export"].pk]
    assert listed(client, Export, sources_changed="False") == []
    changelist = client.get(admin_url(AgentExecution, "changelist")).content.decode()
    assert changelist.count('class="status-badge sources-changed"') == 1

    page = client.get(admin_url(AgentExecution, "change", work["retriever"].pk)).content.decode()
    assert "sources-changed" in page and "Re-ingested (text changed)" in page
    assert sha256_hex("EPSILON ZETA ETA THETA")[:16] in page
    for model, row in [(DocumentVersion, work["version"]), (Export, work["export"])]:
        assert "sources-changed" in client.get(admin_url(model, "change", row.pk)).content.decode()

    hub = client.get(admin_url(Project, "change", work["project"].pk)).content.decode()
    for title in (
        "Executions built on changed sources",
        "Changed sources",
        "Versions built on changed sources",
        "Exports built on changed sources",
    ):
        assert title in hub
    # The changed chunks' "see all": the flags of the project's executions.
    flags_of_project = listed(client, StaleSource, execution__project__id__exact=work["project"].pk)
    assert flags_of_project == [flag.pk for flag in flags(tenant_a)]
