"""Erasure of a knowledge document (`manage.py erase_document ID`, docs/security.md,
"Erasure").

Removed: the uploaded file, the document's row, its chunks with their embeddings (and
its access grants, by their keys), and the tenant's cached embeddings of its chunks'
texts (embedding_cache, by the texts' SHA-256, every model: a vector is derived from
the text; another document with the same text then embeds it again). What was built on
it is reached through the provenance the runs recorded (execution_sources, by the
document's id, so the sources of chunks an earlier re-ingestion replaced are found too):

- each source keeps its row, rank, score and chunk_sha256, with no content or title and
  `erased_at` set: the run says it used a source that was erased;
- each run that used it has its input and output replaced by {"erased": true};
- each document version such a run produced is redacted: its content becomes the
  tombstone (documents.models.REDACTED_CONTENT), `redacted_at` is set, content_sha256
  and prev_sha256 stay, so the versions' chain still links;
- each export holding such a version is removed with its file;
- each logged search (search_queries) that returned one of its chunks keeps its row
  (who searched, when, how, the chunk ids: ids are not content) but loses its query
  text, which may quote the document; query_sha256 stays, as with
  SEARCH_LOG_QUERY_TEXT off. Searches that returned the chunks of an earlier
  ingestion of it (replaced since) are not found: the log keeps chunk ids only.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import AgentExecution, ExecutionSource
from core.hashing import sha256_hex
from core.jobs import rolled_back_on_dry_run
from documents.models import (
    REDACTED_CONTENT,
    Chunk,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    SearchQuery,
)
from erasure.models import ErasureReceipt, Subject
from erasure.services._common import ERASED_JSON, Tally, as_uuid, json_sha256, required_requested_by
from exports.models import Export
from tenancy.context import system_context
from tenancy.models import Tenant


def erase_document(
    *,
    document_id: uuid.UUID | str,
    requested_by: str,
    tenant_slug: str | None = None,
    dry_run: bool = False,
) -> ErasureReceipt:
    """Erase the knowledge document and what was built on it; return the receipt.

    `tenant_slug`, when given, must be the document's tenant (a guard against erasing
    in the wrong customer). A dry run does the same in a transaction it rolls back and
    returns the receipt unsaved. ValidationError naming `document`, `tenant` or
    `requested_by` when there is nothing to erase; nothing is changed then.
    """
    requested_by = required_requested_by(requested_by)
    document_id = as_uuid(document_id, field="document", what="a knowledge document")
    receipt = None
    with system_context(f"erase_document:{document_id}"):
        with rolled_back_on_dry_run(dry_run) as done, transaction.atomic():
            document = _document(document_id, tenant_slug)
            tally = Tally()
            erase_document_rows(document, tally, now=timezone.now())
            receipt = tally.finish(
                tenant_id=document.tenant_id,
                subject_type=Subject.DOCUMENT,
                subject_id=document.pk,
                subject_name=document.sha256 or str(document.pk),
                requested_by=requested_by,
            )
            done()
    assert receipt is not None
    return receipt


def _document(document_id: uuid.UUID, tenant_slug: str | None) -> Document:
    found = Document.objects.filter(pk=document_id).values_list("tenant_id", flat=True).first()
    if found is None:
        raise ValidationError({"document": f"No knowledge document has the id {document_id}."})
    if tenant_slug is not None:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise ValidationError({"tenant": f"No tenant has the slug {tenant_slug!r}."})
        if tenant.pk != found:
            raise ValidationError(
                {"document": f"Knowledge document {document_id} is not in tenant {tenant_slug!r}."}
            )
    # Locked: an ingestion of it waits, then finds it gone.
    return Document.objects.select_for_update().get(tenant_id=found, pk=document_id)


def erase_document_rows(document: Document, tally: Tally, *, now: datetime) -> None:
    """Erase the (locked) document and what was built on it, tallied."""
    tenant_id = document.tenant_id
    chunks = list(
        Chunk.objects.filter(tenant_id=tenant_id, document_id=document.pk).values_list(
            "id", "content"
        )
    )
    sources = ExecutionSource.objects.filter(tenant_id=tenant_id, erased_at__isnull=True).filter(
        Q(document_id=document.pk) | Q(chunk_id__in=[chunk_id for chunk_id, _ in chunks])
    )
    used = list(sources.values_list("id", "execution_id", "chunk_sha256"))
    sources.update(content="", document_title="", erased_at=now)
    tally.touched("execution_sources", [row[0] for row in used], [row[2] for row in used])

    redact_runs(tenant_id, {row[1] for row in used}, tally, now=now)
    _redact_searches(tenant_id, [chunk_id for chunk_id, _ in chunks], tally)

    chunk_hashes = [sha256_hex(text) for _, text in chunks]
    tally.touched("chunks", [chunk_id for chunk_id, _ in chunks], chunk_hashes)
    cached = EmbeddingCacheEntry.objects.filter(
        tenant_id=tenant_id, content_sha256__in=set(chunk_hashes)
    )
    entries = list(cached.values_list("id", "content_sha256"))
    tally.touched("embedding_cache", [row[0] for row in entries], [row[1] for row in entries])
    cached.delete()
    tally.touched("documents", [document.pk], [document.sha256])
    tally.file("default", document.storage_key, document.sha256)
    # Its chunks and access grants go with it (their keys' ON DELETE CASCADE).
    Document.objects.filter(tenant_id=tenant_id, pk=document.pk).delete()


def _redact_searches(tenant_id: uuid.UUID, chunk_ids: list[uuid.UUID], tally: Tally) -> None:
    """Empty the query text of the logged searches that returned one of these chunks
    (chunk_ids && ARRAY[...], search_queries_chunk_ids_gin)."""
    if not chunk_ids:
        return
    searches = SearchQuery.objects.filter(tenant_id=tenant_id, chunk_ids__overlap=chunk_ids)
    found = list(searches.exclude(query="").values_list("id", "query_sha256"))
    searches.filter(id__in=[row[0] for row in found]).update(query="")
    tally.touched("search_queries", [row[0] for row in found], [row[1] for row in found])


def remove_exports_of(tenant_id: uuid.UUID, version_ids: list[uuid.UUID], tally: Tally) -> None:
    """Remove the exports whose file holds one of these versions, and (after the commit)
    their files. An export's manifest lists the versions its file holds (GIN on manifest)."""
    if not version_ids:
        return
    holds = Q()
    for version_id in version_ids:
        holds |= Q(manifest__contains={"documents": [{"version_id": str(version_id)}]})
    exports = Export.objects.filter(holds, tenant_id=tenant_id)
    found = list(exports.values_list("id", "storage_key", "sha256"))
    tally.touched("exports", [row[0] for row in found], [row[2] for row in found])
    for _, key, sha256 in found:
        tally.file("exports", key, sha256)
    exports.delete()


def redact_runs(
    tenant_id: uuid.UUID, execution_ids: set[uuid.UUID], tally: Tally, *, now: datetime
) -> None:
    """Erase these runs' inputs and outputs, and redact the versions they wrote."""
    executions = AgentExecution.objects.filter(tenant_id=tenant_id, id__in=execution_ids)
    runs = list(executions.values_list("id", "input_data", "output_data", "produced_version_id"))
    executions.update(input_data=ERASED_JSON, output_data=ERASED_JSON)
    tally.touched(
        "agent_executions",
        [run[0] for run in runs],
        [json_sha256(value) for run in runs for value in run[1:3] if value not in (None, {})],
    )
    redact_versions(tenant_id, {run[3] for run in runs if run[3] is not None}, tally, now=now)


def redact_versions(
    tenant_id: uuid.UUID, version_ids: set[uuid.UUID], tally: Tally, *, now: datetime
) -> None:
    """Redact these versions (the tombstone, `redacted_at`; hashes kept) and remove the
    exports that hold them."""
    versions = DocumentVersion.objects.filter(
        tenant_id=tenant_id, id__in=version_ids, redacted_at__isnull=True
    )
    redacted = list(versions.values_list("id", "content_sha256"))
    versions.update(content=REDACTED_CONTENT, redacted_at=now)
    tally.touched("document_versions", [row[0] for row in redacted], [row[1] for row in redacted])
    remove_exports_of(tenant_id, [row[0] for row in redacted], tally)
