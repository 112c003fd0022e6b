"""erase_document (docs/security.md, "Erasure"): the document, its chunks and file, and
what was built on it, gone everywhere a scan can look; nothing else touched."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from agents.models import AgentExecution, ExecutionSource
from agents.services import (
    execution_create,
    execution_finish,
    execution_record_sources,
    execution_start,
)
from core.hashing import sha256_hex
from documents.models import (
    REDACTED_CONTENT,
    Chunk,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    SearchQuery,
)
from documents.search import chunk_search
from documents.services import document_ingest, document_version_create, project_create
from erasure.models import ErasureReceipt
from erasure.services import erase_document
from exports.models import Export
from exports.services import export_create
from tenancy.context import system_context, tenant_context
from tests.erasure.canary import find_canary
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)


def cached_embeddings(tenant) -> list[str]:
    """The text hashes of the tenant's embedding cache."""
    with tenant_context(tenant):
        return sorted(EmbeddingCacheEntry.objects.values_list("content_sha256", flat=True))


def grounded_work(tenant, canary: str) -> dict:
    """A knowledge document holding the canary, a run grounded on it (its input and
    output quoting it), the version the run wrote and an export of that version."""
    document = document_ingest(
        tenant=tenant, title=f"Handbook {canary}", text=f"The secret word is {canary}. " * 3
    )
    project = project_create(tenant=tenant, name=f"Launch of {tenant.slug}")
    run = execution_create(
        tenant=tenant, project=project, agent_type="writer", input_data={"brief": canary}
    )
    run = execution_start(tenant=tenant, execution=run)
    # The run's search, logged with the run (search_queries).
    results = chunk_search(tenant=tenant, query=canary, mode="fulltext", execution=run)
    assert results, "the document's chunks are found before the erasure"
    execution_record_sources(tenant=tenant, execution=run, results=results)
    version = document_version_create(
        tenant=tenant, project=project, document_type="about", content=f"Built on {canary}."
    )
    run = execution_finish(
        tenant=tenant, execution=run, output_data={"answer": canary}, produced_version=version
    )
    export = export_create(tenant=tenant, project=project)
    assert export.status == Export.Status.COMPLETED
    return {"document": document, "project": project, "run": run, "version": version}


def test_erasing_a_document_leaves_no_trace_of_it_and_spares_the_other_tenant(
    tenant_a, tenant_b, file_storages
):
    canary_a, canary_b = f"canary-{uuid.uuid4().hex}", f"canary-{uuid.uuid4().hex}"
    work = grounded_work(tenant_a, canary_a)
    grounded_work(tenant_b, canary_b)
    before, kept = find_canary(canary_a), find_canary(canary_b)
    print("canary scan before:", before)
    assert {
        "chunks.content",
        "documents.title",
        "document_versions.content",
        "agent_executions.input_data",
        "execution_sources.content",
        "audit_events.changes",
        f"chunk_search:fulltext:{tenant_a.pk}",
        "search_queries.query",
    } <= set(before)
    assert sum(place.startswith("file:") for place in before) == 2, "the upload and the export"
    cached_a, cached_b = cached_embeddings(tenant_a), cached_embeddings(tenant_b)
    assert cached_a, "the ingestion cached its chunks' vectors"

    receipt = erase_document(document_id=work["document"].pk, requested_by="dpo@example.com")

    after = find_canary(canary_a)
    print("canary scan after:", after)
    assert after == []
    assert find_canary(canary_b) == kept
    with tenant_context(tenant_a):
        version = DocumentVersion.objects.get(pk=work["version"].pk)
        source = ExecutionSource.objects.get(execution=work["run"])
        run = AgentExecution.objects.get(pk=work["run"].pk)
        assert not Document.objects.filter(pk=work["document"].pk).exists()
        assert not Chunk.objects.exists()
        assert not Export.objects.exists()
    # The version stays in its chain, redacted: its hash is the content it had.
    assert (version.content, version.redacted_at is not None) == (REDACTED_CONTENT, True)
    assert version.content_sha256 == work["version"].content_sha256
    assert (source.content, source.erased_at is not None, source.chunk_id) == ("", True, None)
    assert run.input_data == run.output_data == {"erased": True}
    assert receipt.tenant_id == tenant_a.pk and receipt.subject_id == work["document"].pk
    assert receipt.rows_touched["documents"] == 1 and receipt.rows_touched["files"] == 2
    # Its cached embeddings go too (derived from its text), counted; the other tenant's stay.
    assert cached_embeddings(tenant_a) == []
    assert cached_embeddings(tenant_b) == cached_b
    assert receipt.rows_touched["embedding_cache"] == len(cached_a)
    assert receipt.removed_sha256["embedding_cache"] == sorted(cached_a)
    # The run's logged search stays, without its text: who searched, when, the hash.
    # Read as an owner: the run's search has no user, and is read by owners and admins.
    with tenant_context(tenant_a, user=make_member(tenant_a, "log-reader@example.com")):
        [search] = SearchQuery.objects.all()
    assert (search.execution_id, search.query) == (work["run"].pk, "")
    assert search.query_sha256 == sha256_hex(canary_a)
    assert receipt.rows_touched["search_queries"] == 1
    assert receipt.removed_sha256["documents"] == [work["document"].sha256]
    assert canary_a not in str(receipt.removed_sha256) + str(receipt.rows_touched)
    call_command("audit_verify")  # every chain still verifies, the redacted events' too


def test_a_dry_run_reports_the_receipt_and_changes_nothing(tenant_a, file_storages):
    work = grounded_work(tenant_a, "dry-canary")
    receipt = erase_document(
        document_id=work["document"].pk, requested_by="dpo@example.com", dry_run=True
    )
    assert receipt.rows_touched["chunks"] >= 1
    assert find_canary("dry-canary") != []
    with system_context("test"):
        assert not ErasureReceipt.objects.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["not-a-uuid"], "is not a knowledge document's id"),
        ([str(uuid.uuid4())], "No knowledge document has the id"),
        (["{document}", "--tenant", "tenant-b"], "is not in tenant 'tenant-b'"),
        (["{document}", "--tenant", "nowhere"], "No tenant has the slug 'nowhere'"),
    ],
)
def test_bad_input_is_refused_by_name_and_changes_nothing(
    arguments, message, tenant_a, tenant_b, file_storages
):
    with tenant_context(tenant_a):
        document = document_ingest(tenant=tenant_a, title="Kept", text="kept words")
    arguments = [argument.format(document=document.pk) for argument in arguments]
    with pytest.raises(CommandError, match=message):
        call_command("erase_document", *arguments, "--requested-by", "dpo@example.com")
    with tenant_context(tenant_a):
        assert Document.objects.filter(pk=document.pk).exists()
        assert Chunk.objects.filter(document=document).exists()
    with pytest.raises(ValidationError, match="requested_by"):
        erase_document(document_id=document.pk, requested_by=" ")


def test_the_command_erases_and_prints_the_receipt(tenant_a, file_storages, capsys):
    work = grounded_work(tenant_a, "cli-canary")
    call_command(
        "erase_document",
        str(work["document"].pk),
        "--tenant",
        "tenant-a",
        "--requested-by",
        "dpo@example.com",
    )
    printed = capsys.readouterr().out
    assert "Erased knowledge document" in printed and "chunks" in printed
    assert find_canary("cli-canary") == []


def test_a_receipt_is_never_changed_nor_deleted_not_even_by_the_owner(tenant_a, file_storages):
    from django.db import DatabaseError, transaction

    work = grounded_work(tenant_a, "kept-receipt")
    receipt = erase_document(document_id=work["document"].pk, requested_by="dpo@example.com")
    for change in (
        lambda: ErasureReceipt.objects.filter(pk=receipt.pk).update(requested_by="someone"),
        lambda: ErasureReceipt.objects.filter(pk=receipt.pk).delete(),
    ):
        with (
            system_context("test: tamper with a receipt"),
            pytest.raises(DatabaseError, match="erasure_receipts is append-only"),
            transaction.atomic(),
        ):
            change()
