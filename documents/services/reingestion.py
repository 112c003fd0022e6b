"""Re-ingesting a ready knowledge document: new bytes (or its own, chunked anew) into
chunks updated in place, so what did not change keeps its row and its vector.

Why in place rather than deleting the chunks and inserting new ones: a chunk that keeps
its row keeps its id, so the runs that read it (execution_sources.chunk_id) stay linked
to it, and only the runs whose chunk really changed are flagged as built on changed
sources (agents' flag_stale_sources trigger on chunks, docs/architecture.md, "Stale
outputs"); an unchanged chunk is not embedded again either.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from core.files import delete_file, save_new_file
from core.hashing import sha256_hex
from core.validators import validate_storable_arguments
from documents.chunking import has_tokens, resolve_chunking, split_text
from documents.embedding import Embedder
from documents.embeddings import chunk_embedder
from documents.models import Chunk, Document
from documents.services.embedding_cache import cache_complete, cache_lookup
from documents.services.embedding_models import chunk_vectors_kept, write_kept_vectors
from documents.services.ingestion import (
    EMBED_BATCH_SIZE,
    IngestionError,
    _embed,
    _insert_chunks,
    _read_text,
)
from documents.services.uploads import _document_storage_key, _max_upload_bytes, _measure_upload
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReingestResult:
    """What a re-ingestion did to the document's chunks (by ordinal)."""

    unchanged: int
    changed: int
    added: int
    removed: int


def _new_bytes(text: str | None, file: File | None) -> tuple[File, int, str] | None:
    """The new content to store (file, size, SHA-256), or None to chunk the stored one."""
    if text is not None and file is not None:
        raise ValidationError({"file": "Give text or file, not both (or neither, to re-chunk)."})
    limit = _max_upload_bytes()
    if text is not None:
        validate_storable_arguments(text=text)
        if not has_tokens(text):
            raise ValidationError({"text": "The text has nothing to index."})
        data = text.encode("utf-8")
        if len(data) > limit:
            raise ValidationError(
                {"text": f"The text is {len(data)} bytes; documents may hold at most {limit}."}
            )
        return ContentFile(data), len(data), sha256_hex(data)
    if file is not None:
        return _measure_upload(file, limit)
    return None


def document_reingest(
    *,
    tenant: TenantRef,
    document: Document,
    text: str | None = None,
    file: File | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedder: Embedder | None = None,
) -> ReingestResult:
    """Chunk a ready document again, from new `text` or `file` or from its stored bytes.

    Chunk by chunk, by ordinal: one whose text (and embedding model) is unchanged is left
    alone, not embedded again; a changed one gets its new text and vector; chunks
    beyond the new count are deleted and new ones inserted. New bytes replace the
    stored file (the old one is deleted once this commits) and the document's size and
    SHA-256. All in one transaction, under the document's row lock: a failure changes
    nothing. ValidationError naming `status` for a document that is not ready, `text`
    or `file` for content that cannot be indexed (as document_ingest), and the
    chunking or embedder arguments as document_process.
    """
    tenant_id = require_tenant(tenant, document=document)
    chunk_size, chunk_overlap = resolve_chunking(chunk_size, chunk_overlap)
    embedder = chunk_embedder(embedder)
    new = _new_bytes(text, file)
    field = "file" if file is not None else "text"
    replaced_key = None
    with tenant_context(tenant_id), transaction.atomic():
        locked = Document.objects.select_for_update().get(tenant_id=tenant_id, pk=document.pk)
        if locked.status != Document.Status.READY:
            raise ValidationError(
                {"status": f"Only ready documents are re-ingested, not {locked.status}."}
            )
        if new is not None:
            content, locked.size_bytes, locked.sha256 = new
            replaced_key = locked.storage_key
            key = _document_storage_key(tenant_id, locked.pk)
            # Stored before the rows change; should they fail, the new file goes again.
            locked.storage_key = save_new_file(default_storage, key, content, field=field)
        try:
            result = _rechunk(tenant_id, locked, embedder, chunk_size, chunk_overlap, field)
            locked.save(update_fields=["storage_key", "size_bytes", "sha256"])
        except BaseException:
            if replaced_key is not None:
                delete_file(default_storage, locked.storage_key)
            raise
        if replaced_key is not None:
            transaction.on_commit(
                functools.partial(delete_file, default_storage, replaced_key), robust=True
            )
    document.storage_key, document.size_bytes, document.sha256 = (
        locked.storage_key,
        locked.size_bytes,
        locked.sha256,
    )
    logger.info(
        "document re-ingested",
        extra={"document_id": str(document.pk), "tenant_id": str(tenant_id), **vars(result)},
    )
    return result


def _rechunk(
    tenant_id: uuid.UUID,
    document: Document,
    embedder: Embedder,
    chunk_size: int,
    chunk_overlap: int,
    field: str,
) -> ReingestResult:
    try:
        pieces = split_text(
            _read_text(document), chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    except IngestionError as error:
        raise ValidationError({field: str(error)}) from error
    if not pieces:
        raise ValidationError({field: "The document has no text to index."})
    chunks = Chunk.objects.filter(tenant_id=tenant_id, document_id=document.pk)
    existing = {
        chunk.ordinal: chunk
        for chunk in chunks.only("id", "ordinal", "content", "embedding_model").order_by("ordinal")
    }
    # The tenant may search with another model and have forgotten EMBEDDER's: its
    # chunks then keep no vector in chunks.embedding, only in chunk_embeddings.
    in_chunks = chunk_vectors_kept(tenant_id)
    model = embedder.model if in_chunks else ""
    changed = [
        piece
        for piece in pieces
        if piece.ordinal not in existing
        or existing[piece.ordinal].content != piece.content
        or (in_chunks and existing[piece.ordinal].embedding_model != model)
    ]
    vectors: list[list[float] | None] = [None] * len(changed)
    if in_chunks:
        # Texts the tenant's embedding cache holds (a paragraph moved to another
        # position) are not embedded again either.
        cached = cache_lookup(tenant_id, embedder.model, [piece.content for piece in changed])
        vectors = [
            *cache_complete(cached, _embed(embedder, cached.missing_texts, EMBED_BATCH_SIZE))
        ]
    removed = (
        chunks.filter(ordinal__gte=len(pieces)).delete()[0] if len(existing) > len(pieces) else 0
    )
    updated, added, added_vectors = [], [], []
    for piece, vector in zip(changed, vectors, strict=True):
        chunk = existing.get(piece.ordinal)
        if chunk is None:
            added.append(piece)
            added_vectors.append(vector)
            continue
        chunk.content, chunk.token_count = piece.content, piece.token_count
        chunk.embedding, chunk.embedding_model = vector, model
        chunk.metadata = {"start": piece.start, "end": piece.end}
        updated.append(chunk)
    # Filtered on the tenant, as a save() is: one shard on a Citus cluster.
    chunks.bulk_update(
        updated, ["content", "token_count", "embedding", "embedding_model", "metadata"]
    )
    _insert_chunks(tenant_id, document, added, added_vectors, embedder.model)
    write_kept_vectors(tenant_id, chunks.filter(ordinal__in=[piece.ordinal for piece in changed]))
    return ReingestResult(
        unchanged=len(pieces) - len(changed),
        changed=len(updated),
        added=len(added),
        removed=removed,
    )
