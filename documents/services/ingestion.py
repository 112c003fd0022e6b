"""Ingestion of knowledge documents into embedded chunks, and re-embedding a tenant."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DatabaseError
from django.db.models import F, Q
from django.utils import timezone
from pgvector import Vector

from core.models import TransactionNow
from core.validators import require_count, unstorable, validate_storable_arguments
from documents.chunking import has_tokens, resolve_chunking, split_text
from documents.embedding import Embedder, embed_texts
from documents.embeddings import chunk_embedder, default_model
from documents.models import (
    PROCESSING_STAGES,
    Chunk,
    Document,
    Project,
)
from documents.services.embedding_cache import (
    cache_complete,
    cache_lookup,
    embed_with_cache,
    vector_cursor,
)
from documents.services.embedding_models import (
    chunk_vectors_backfilled,
    chunk_vectors_kept,
    kept_embedders,
    write_model_vectors,
)
from documents.services.uploads import document_create
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)


# Texts per call to the embedder while ingesting.
EMBED_BATCH_SIZE = 64
# Chunks per transaction while re-embedding a tenant.
REEMBED_BATCH_SIZE = 256
# A batch's chunks are read, locked and embedded in one transaction: bounded, so a typo
# cannot lock a whole tenant's chunks (or overflow the LIMIT).
REEMBED_MAX_BATCH_SIZE = 10_000
ERROR_MESSAGE_MAX_LENGTH = 2000
# SQLSTATEs with a reason of their own: lock_timeout, and statement_timeout (or a cancel).
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


class IngestionError(Exception):
    """A document could not be turned into chunks; the message is stored on the document."""


class IngestionTimeout(Exception):
    """The embedder did not answer in time; the message is stored on the document."""


class _Superseded(Exception):
    """Another worker moved the document on while this one was processing it."""


def _read_text(document: Document) -> str:
    with default_storage.open(document.storage_key, "rb") as stored:
        data = stored.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestionError(
            f"The file is not UTF-8 text ({document.content_type}): byte "
            f"0x{data[error.start]:02x} at position {error.start} cannot be decoded."
        ) from error
    if reason := unstorable(text):
        raise IngestionError(f"The file's text {reason}")
    return text


def _failure_message(error: Exception) -> str:
    """The reason stored on a failed document, which the admin shows: never the database's
    own error text (it may quote data and internals); the log has the detail."""
    if isinstance(error, IngestionError | IngestionTimeout):
        message = str(error)
    elif isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        message = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items()
        )
    elif isinstance(error, DatabaseError | psycopg.Error):
        message = _database_failure(error)
    else:
        message = f"{type(error).__name__}: {error}"
    return message[:ERROR_MESSAGE_MAX_LENGTH]


def _database_failure(error: Exception) -> str:
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == LOCK_NOT_AVAILABLE:
        return (
            "A lock the work needed was held by another transaction for longer than the "
            "lock timeout (an earlier worker's work still running?). Process it again later."
        )
    if sqlstate == QUERY_CANCELED:
        return (
            "A database statement took longer than the statement timeout. Process it "
            "again, or split the document into smaller ones."
        )
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    return (
        f"The database failed the work{code}. Process the document again; if it fails "
        "again, the log has the details."
    )


def _embed(embedder: Embedder, texts: Sequence[str], batch_size: int) -> list[list[float]]:
    """The vectors of `texts`, `batch_size` to a call, all within EMBEDDER_TIMEOUT_SECONDS.

    The embedder is outside code that may hang (a service that never answers): it runs
    in a daemon thread, and past the timeout the ingestion fails saying so, which the
    worker retries. Python cannot stop the thread; it ends when the embedder returns,
    its answer dropped, and never keeps the process from exiting.
    """
    if not texts:  # every text was in the embedding cache
        return []
    timeout = settings.EMBEDDER_TIMEOUT_SECONDS
    outcome: list[Any] = []

    def embed_all() -> None:
        try:
            vectors: list[list[float]] = []
            for start in range(0, len(texts), batch_size):
                vectors.extend(embed_texts(embedder, texts[start : start + batch_size]))
            outcome.append(vectors)
        except BaseException as error:  # handed to the caller's thread, raised there
            outcome.append(error)

    thread = threading.Thread(target=embed_all, name="embedder", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise IngestionTimeout(
            f"The embedder {embedder.model} did not answer within {timeout:g} seconds "
            "(EMBEDDER_TIMEOUT_SECONDS)."
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


# The chunks of a document in multi-row INSERT ... VALUES statements whose parameters
# bind on the server, the vectors in pgvector's binary format. COPY would be as fast but
# PostgreSQL refuses COPY FROM into a table whose row-level security applies to the
# role; an INSERT ... SELECT FROM unnest(arrays) is no better on Citus, which runs it as
# a COPY into the shard. A VALUES list of one tenant's rows is routed to that tenant's
# shard as an ordinary INSERT, through the policies, triggers and constraints.
_CHUNK_COLUMNS = (
    "tenant_id, document_id, ordinal, content, token_count, embedding, embedding_model, metadata"
)
_CHUNK_ROW = (
    "(%s, %s, %s, %s, %s, %b, %s, jsonb_build_object('start', %s::integer, 'end', %s::integer))"
)
# Rows per statement: 9 parameters a row stays far below PostgreSQL's 65,535, and a
# statement's parameters (1536 dimensions a vector) stay a few megabytes.
CHUNK_INSERT_BATCH = 500


@functools.cache
def _insert_chunks_sql(rows: int) -> str:
    return f"INSERT INTO chunks ({_CHUNK_COLUMNS}) VALUES " + ", ".join([_CHUNK_ROW] * rows)


def _insert_chunks(
    tenant_id: uuid.UUID,
    document: Document,
    pieces: Sequence,
    vectors: Sequence[list[float] | None],
    model: str,
) -> None:
    """Write the chunks of `pieces`, CHUNK_INSERT_BATCH to a statement, binary parameters
    (`vectors` None where the tenant keeps no vector in chunks.embedding).

    Bulk_create sent each vector as 1536 numbers in text, which Python formats and the
    server parses again: most of an ingestion's time besides the HNSW index.
    """
    rows: list[tuple[Any, ...]] = [
        (
            tenant_id,
            document.pk,
            piece.ordinal,
            piece.content,
            piece.token_count,
            None if vector is None else Vector(vector),
            "" if vector is None else model,
            piece.start,
            piece.end,
        )
        for piece, vector in zip(pieces, vectors, strict=True)
    ]
    # Parameters bound on the server, in binary (vector_cursor), where Django's cursors
    # interpolate text.
    with vector_cursor() as cursor:
        for start in range(0, len(rows), CHUNK_INSERT_BATCH):
            batch = rows[start : start + CHUNK_INSERT_BATCH]
            cursor.execute(_insert_chunks_sql(len(batch)), [v for row in batch for v in row])


def _processing_lease() -> timedelta:
    return timedelta(seconds=settings.DOCUMENT_PROCESSING_LEASE_SECONDS)


class DocumentStillProcessing(ValidationError):
    """The document is held by a worker whose lease has `seconds_left` to run."""

    def __init__(self, message: str, seconds_left: float) -> None:
        super().__init__({"status": message})
        self.seconds_left = seconds_left


def _claimable() -> Q:
    """Documents a worker may claim: queued, failed, or in a processing stage for longer
    than the lease (its worker died)."""
    return Q(status__in=[Document.Status.QUEUED, Document.Status.FAILED]) | Q(
        status__in=PROCESSING_STAGES, updated_at__lt=TransactionNow() - _processing_lease()
    )


def _claim_for_processing(tenant_id: uuid.UUID, document: Document) -> None:
    """Move the document to chunking in one conditional UPDATE, counting the attempt, or
    refuse naming 'status'.

    The row lock of the UPDATE makes a concurrent claim wait and then find the row
    freshly chunking, so only one worker gets it.
    """
    lease = _processing_lease()
    with tenant_context(tenant_id):
        documents = Document.objects.filter(tenant_id=tenant_id, pk=document.pk)
        claimed = documents.filter(_claimable()).update(
            status=Document.Status.CHUNKING, error_message="", attempts=F("attempts") + 1
        )
        if not claimed:
            status, updated_at = documents.values_list("status", "updated_at").get()
            if status in PROCESSING_STAGES:
                left = (updated_at + lease - timezone.now()).total_seconds()
                raise DocumentStillProcessing(
                    f"The document is being processed ({status}); it can be processed again "
                    f"once it has been so for {int(lease.total_seconds())} seconds.",
                    seconds_left=max(left, 0.0),
                )
            raise ValidationError(
                {"status": f"Only queued or failed documents are processed, not {status}."}
            )
    document.status, document.error_message = Document.Status.CHUNKING, ""
    document.attempts += 1


def _advance(tenant_id: uuid.UUID, document: Document, before: str, after: str) -> None:
    """Move the document from stage `before` to `after` (renewing its lease), committed so
    the admin shows it; _Superseded when another worker took it over meanwhile."""
    with tenant_context(tenant_id):
        moved = Document.objects.filter(tenant_id=tenant_id, pk=document.pk, status=before).update(
            status=after
        )
    if not moved:
        raise _Superseded(before)
    document.status = after


def _lock_claim(tenant_id: uuid.UUID, document: Document) -> None:
    """Lock the row and check it is still embedding (no other worker finished it)."""
    status = (
        Document.objects.select_for_update()
        .values_list("status", flat=True)
        .get(tenant_id=tenant_id, pk=document.pk)
    )
    if status != Document.Status.EMBEDDING:
        raise _Superseded(status)


def failure_passes(error: Exception) -> bool:
    """Whether trying again may succeed: not for the file itself (IngestionError: not
    text, no text), which the next attempt would read the same; yes for the embedder
    (raising, timing out, a wrong answer) and the database."""
    return not isinstance(error, IngestionError)


def _record_failure(
    tenant_id: uuid.UUID,
    document: Document,
    error: Exception,
    *,
    own_claim: bool,
    retry: bool = False,
) -> None:
    """Commit the document as failed with the reason of `error`, logged in full.

    `own_claim`: the failure came after this worker claimed the document, and only that
    claim turns failed (a worker that finished first keeps its result). Otherwise the
    claim itself failed, and the document turns failed if it could have been claimed
    (queued, failed, or processing past the lease), not while another worker holds
    a fresh claim. Failed, not left in a processing stage: it is what the admin lists as
    needing attention, its reason shown, and it can be processed again at once, where
    a stale stage would claim work that is not going on for the rest of the lease.
    `retry` (a job with attempts left, and a failure that may pass): queued instead,
    the reason kept for the next attempt to replace.
    Where the row cannot be written either (still locked), a ValidationError naming
    'status' gives the reason to the caller instead.
    """
    message = _failure_message(error)
    status = Document.Status.FAILED
    if retry and failure_passes(error):
        status = Document.Status.QUEUED
        message = f"Attempt {document.attempts} failed, to be tried again: {message}"[
            :ERROR_MESSAGE_MAX_LENGTH
        ]
    logger.warning(
        "document processing failed",
        extra={
            "document_id": str(document.pk),
            "tenant_id": str(tenant_id),
            "attempts": document.attempts,
            "status": str(status),
        },
        exc_info=not isinstance(error, IngestionError | ValidationError),
    )
    try:
        with tenant_context(tenant_id):
            documents = Document.objects.filter(tenant_id=tenant_id, pk=document.pk)
            mine = documents.filter(Q(status__in=PROCESSING_STAGES) if own_claim else _claimable())
            mine.update(status=status, error_message=message)
            document.refresh_from_db(fields=["status", "error_message", "attempts"])
    except DatabaseError as recording:
        logger.exception(
            "document failure not recorded",
            extra={"document_id": str(document.pk), "tenant_id": str(tenant_id)},
        )
        raise ValidationError(
            {"status": f"{message} (The document could not be marked failed either.)"}
        ) from recording


def document_process(
    *,
    tenant: TenantRef,
    document: Document,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedder: Embedder | None = None,
    retry: bool = False,
) -> Document:
    """Split a queued (or failed) document into embedded chunks: chunking -> embedding -> ready.

    The worker's job runs this (documents.tasks); so can a tool or a test, synchronously,
    by the same path. Each stage is committed as it starts, so the admin shows it, and
    counts in `attempts` when claimed. The embedder is called outside any transaction,
    within EMBEDDER_TIMEOUT_SECONDS; the chunks and "ready" then commit together.

    On any failure (bytes not UTF-8, no text, the embedder raising, timing out or giving
    an answer embed_texts refuses, the database failing the work or the claim of a
    retry: a row still locked past lock_timeout) no chunk is kept and the document is
    committed as failed with the reason in error_message, never the database's own text
    (that goes to the log); it is returned, not raised, so check `document.status`.
    With `retry` (a job with attempts left) a failure that may pass (failure_passes)
    leaves it queued instead, its reason kept. Bad arguments (chunking, an embedder of
    the wrong dimension) are refused with a ValidationError before anything changes, and
    so is a document that is ready, or in a processing stage for less than
    settings.DOCUMENT_PROCESSING_LEASE_SECONDS (DocumentStillProcessing: a worker that
    died leaves it there; after the lease it can be claimed again). Where even the
    failure cannot be written (the row still locked), a ValidationError naming 'status'
    says why. If another worker claimed it meanwhile and finished first, its result stands.
    Chunk texts the tenant's embedding cache holds for the embedder's model are not
    embedded again (embedding_cache): processing the same text twice calls the embedder
    once.
    """
    tenant_id = require_tenant(tenant, document=document)
    chunk_size, chunk_overlap = resolve_chunking(chunk_size, chunk_overlap)
    embedder = chunk_embedder(embedder)
    try:
        _claim_for_processing(tenant_id, document)
    except DatabaseError as error:
        # A retry past the lease waits on the row lock of a transaction still running
        # (a dead worker's, until the server ends it: client_connection_check_interval),
        # or the database fails it otherwise: recorded on the document like any failure.
        _record_failure(tenant_id, document, error, own_claim=False, retry=retry)
        return document
    try:
        pieces = split_text(
            _read_text(document), chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
        if not pieces:
            raise IngestionError("The document has no text to index.")
        _advance(tenant_id, document, Document.Status.CHUNKING, Document.Status.EMBEDDING)
        # Texts the tenant's cache holds for this model are not embedded again.
        texts = [piece.content for piece in pieces]
        with tenant_context(tenant_id):
            # None: the tenant searches with another model and forgot EMBEDDER's.
            cached = (
                cache_lookup(tenant_id, embedder.model, texts)
                if chunk_vectors_kept(tenant_id)
                else None
            )
            # The other models the tenant keeps (a backfill, a switch, a rollback kept
            # ready): the new chunks get their vectors too, so none is missed.
            kept = [
                (other, cache_lookup(tenant_id, other.model, texts))
                for other in kept_embedders(tenant_id)
            ]
        embedded = _embed(embedder, cached.missing_texts, EMBED_BATCH_SIZE) if cached else []
        kept_embedded = [
            _embed(other, lookup.missing_texts, EMBED_BATCH_SIZE) for other, lookup in kept
        ]
        # One transaction (a savepoint inside the caller's): chunks, the cache's new
        # entries and "ready" commit together or not at all.
        with tenant_context(tenant_id):
            _lock_claim(tenant_id, document)
            vectors: list[list[float] | None] = [None] * len(pieces)
            if cached:
                vectors = [*cache_complete(cached, embedded)]
            _insert_chunks(tenant_id, document, pieces, vectors, embedder.model)
            if kept:
                ids = dict(
                    Chunk.objects.filter(tenant_id=tenant_id, document_id=document.pk).values_list(
                        "ordinal", "id"
                    )
                )
                chunk_ids = [ids[piece.ordinal] for piece in pieces]
                for (other, lookup), new in zip(kept, kept_embedded, strict=True):
                    write_model_vectors(tenant_id, other, chunk_ids, cache_complete(lookup, new))
            document.status = Document.Status.READY
            document.save(update_fields=["status"])
    except _Superseded as superseded:
        logger.warning(
            "document processing superseded",
            extra={
                "document_id": str(document.pk),
                "tenant_id": str(tenant_id),
                "status": str(superseded),
            },
        )
        with tenant_context(tenant_id):
            document.refresh_from_db(fields=["status", "error_message", "attempts"])
    except Exception as error:
        _record_failure(tenant_id, document, error, own_claim=True, retry=retry)
    return document


def document_ingest(
    *,
    tenant: TenantRef,
    title: str = "",
    text: str | None = None,
    file: File | None = None,
    project: Project | None = None,
    content_type: str | None = None,
    metadata: dict | None = None,
    by: User | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedder: Embedder | None = None,
    allow_duplicate: bool = False,
) -> Document:
    """document_create then document_process, synchronously, without the worker's job:
    queued -> chunking -> embedding -> ready (or failed).

    Bytes the tenant already holds are refused unless `allow_duplicate` (document_create);
    ingesting them again with it embeds nothing the embedding cache holds.

    Arguments that can never work (chunking, an embedder of the wrong dimension, a
    `text` with nothing to index or with characters PostgreSQL cannot store) are
    refused with a ValidationError before anything is stored.
    """
    chunk_size, chunk_overlap = resolve_chunking(chunk_size, chunk_overlap)
    embedder = chunk_embedder(embedder)
    if text is not None:
        # A text is known before it is stored: what processing would fail on is refused
        # now, leaving no failed document and no file behind.
        validate_storable_arguments(text=text)
        if not has_tokens(text):
            raise ValidationError({"text": "The text has nothing to index."})
    document = document_create(
        tenant=tenant,
        queue=False,
        title=title,
        text=text,
        file=file,
        project=project,
        content_type=content_type,
        metadata=metadata,
        by=by,
        allow_duplicate=allow_duplicate,
    )
    return document_process(
        tenant=tenant,
        document=document,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        embedder=embedder,
    )


@dataclass
class ReembedProgress:
    """Running totals of chunks_reembed, passed to its on_batch callback."""

    chunks: int = 0
    batches: int = 0


def chunks_reembed(
    *,
    tenant: TenantRef,
    embedder: Embedder | None = None,
    batch_size: int = REEMBED_BATCH_SIZE,
    on_batch: Callable[[ReembedProgress], None] | None = None,
) -> int:
    """Embed every chunk of a tenant not yet embedded by `embedder`'s model (default: EMBEDDER).

    Batches of chunks whose embedding is missing or of another model are embedded and
    written, each in its own transaction, until none is left: a long run holds no lock
    for long, chunks ingested meanwhile with the old model are picked up too, and an
    interrupted run started again carries on where it stopped. Chunks already of this
    model are left alone. Texts the tenant's embedding cache holds for the model take
    their vector from it (embedding_cache.embed_with_cache): switching back to a model
    used before embeds nothing already cached. Returns the number of chunks re-embedded.

    A tenant that forgot EMBEDDER's model (embedding_models.embedding_model_forget) keeps
    no vector in chunks.embedding: nothing is embedded for it. Its backfill of EMBEDDER's
    model (embedding_backfill_start) keeps the model again and queues this job, which
    then marks the backfill complete at its end.
    """
    tenant_id = require_tenant(tenant)
    require_count("batch_size", batch_size, REEMBED_MAX_BATCH_SIZE)
    embedder = chunk_embedder(embedder)
    progress = ReembedProgress()
    with tenant_context(tenant_id):
        if not chunk_vectors_kept(tenant_id):
            logger.info("no chunk vectors kept", extra={"tenant_id": str(tenant_id)})
            return 0
    while True:
        with tenant_context(tenant_id):
            stale = Chunk.objects.filter(
                Q(embedding__isnull=True) | ~Q(embedding_model=embedder.model),
                tenant_id=tenant_id,
            )
            # FOR UPDATE re-checks the filter after waiting on a lock, so two runs never
            # embed a chunk twice; id order keeps their locks from deadlocking.
            locked = stale.order_by("id").only("id", "content").select_for_update()
            batch = list(locked[:batch_size])
            if not batch:
                break
            vectors = embed_with_cache(tenant_id, embedder, [chunk.content for chunk in batch])
            for chunk, vector in zip(batch, vectors, strict=True):
                chunk.embedding, chunk.embedding_model = vector, embedder.model
            # Filtered on the tenant, as a save() is (TenantOwnedModel._do_update): one shard.
            Chunk.objects.filter(tenant_id=tenant_id).bulk_update(
                batch, ["embedding", "embedding_model"]
            )
        progress.chunks += len(batch)
        progress.batches += 1
        if on_batch:
            on_batch(progress)
    if embedder.model == default_model():
        with tenant_context(tenant_id):
            chunk_vectors_backfilled(tenant_id)
    logger.info(
        "chunks re-embedded",
        extra={"tenant_id": str(tenant_id), "model": embedder.model, "chunks": progress.chunks},
    )
    return progress.chunks
