"""Switching a tenant's embedding model (docs/operations.md, "Switching embedding models").

EMBEDDER's model keeps its vectors in chunks.embedding; each model of EMBEDDING_MODELS
keeps its own in chunk_embeddings, searched through a partial HNSW index of its own
(`model_index_name`). A tenant's rows of tenant_embedding_models say which models it
keeps vectors of, which one its searches use (`current`; none: EMBEDDER's) and which one
it can roll back to (`previous`), and each backfill's progress. The steps:

1. embedding_backfill_start queues the worker's `documents.backfill` job
   (embeddings_backfill): it embeds the tenant's chunks that lack the model's vector,
   in batches of their own transaction, recording its progress, then builds the model's
   index CONCURRENTLY; run again (a retry, a crash) it carries on where it stopped.
   From the start, ingestion and re-ingestion write the model's vectors of new chunks
   too (`kept_embedders`), so nothing uploaded meanwhile is missed.
2. embedding_model_switch, once every chunk of the tenant has the model's vector and its
   index is valid: the
   tenant's searches embed their query with it; the model searched before is kept as
   `previous`.
3. embedding_model_rollback puts the previous model back; embedding_model_forget stops
   keeping a model, and embeddings_prune then deletes the vectors no tenant keeps, and
   the index of a model no tenant keeps at all.

EMBEDDER's model is kept by a tenant that searches with it (no current row) or has a row
of it (previous or kept). Forgotten, the tenant's chunks no longer get its vectors in
chunks.embedding and the prune clears them; its backfill (the re-embedding job, which
fills chunks.embedding) brings it back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from pgvector import Vector
from psycopg import sql

from core.db.connections import owner_autocommit_connection
from core.hashing import sha256_hex
from core.jobs import JobSummary
from core.validators import require_count
from documents.embedding import Embedder
from documents.embeddings import default_model, in_chunk_embeddings, model_embedder
from documents.models import Chunk, ChunkEmbedding, EmbeddingCacheEntry, TenantEmbeddingModel
from documents.services.embedding_cache import embed_with_cache, vector_cursor
from tenancy.context import job_scope, require_tenant, system_context, tenant_context
from tenancy.jobs import defer_tenant_job
from tenancy.models import FULL_ACCESS_ROLES, Membership, TenantRef, User

logger = logging.getLogger(__name__)

BACKFILL_TASK = "documents.backfill"
# The worker's re-embedding of chunks.embedding (documents.services.ingestion.chunks_reembed),
# also the backfill of EMBEDDER's model for a tenant that had forgotten it.
REEMBED_TASK = "documents.reembed"
# Chunks embedded and written per transaction of a backfill.
BACKFILL_BATCH_SIZE = 256
BACKFILL_MAX_BATCH_SIZE = 10_000
# Rows per INSERT: 5 parameters a row, a statement's vectors a few megabytes.
VECTOR_INSERT_BATCH = 500
# Vectors deleted per statement by the prune.
PRUNE_BATCH_SIZE = 5_000
PRUNE_MAX_BATCH_SIZE = 100_000
# HNSW build parameters of every model's index, as chunks_embedding_hnsw_idx's.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
ERROR_MESSAGE_MAX_LENGTH = 2000
Role = TenantEmbeddingModel.Role
Status = TenantEmbeddingModel.Status


def model_index_name(model: str) -> str:
    """The name of `model`'s HNSW index: from the name's hash, as a model name may hold
    any character and be longer than an identifier."""
    return f"chunk_embeddings_hnsw_{sha256_hex(model)[:16]}"


def model_index_sql(embedder: Embedder) -> sql.Composed:
    """CREATE INDEX CONCURRENTLY of `embedder`'s model: a partial HNSW index over its rows,
    of the expression `embedding::vector(D)` (a column without a dimension cannot be
    indexed), which documents.search orders by so the planner can use it."""
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY {name} ON chunk_embeddings USING hnsw "
        "((embedding::vector({dimension})) vector_cosine_ops) "
        "WITH (m = {m}, ef_construction = {ef}) WHERE model = {model}"
    ).format(
        name=sql.Identifier(model_index_name(embedder.model)),
        dimension=sql.Literal(embedder.dimension),
        m=sql.Literal(HNSW_M),
        ef=sql.Literal(HNSW_EF_CONSTRUCTION),
        model=sql.Literal(embedder.model),
    )


@contextmanager
def _model_lock(owner: Any, model: str) -> Iterator[None]:
    """A session advisory lock on `model`'s index, on the owner's DDL connection: a
    backfill building it and a prune dropping it never interleave."""
    key = f"chunk_embeddings_index:{model}"
    with owner.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
    try:
        yield
    finally:
        with owner.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])


def model_index_state(model: str) -> str | None:
    """'valid', 'invalid' (a concurrent build that failed or was killed) or None (none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            [model_index_name(model)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return "valid" if row[0] else "invalid"


def ensure_model_index(embedder: Embedder) -> None:
    """Build `embedder`'s model index concurrently, outside any transaction, unless a valid
    one exists; an invalid one (a build that crashed) is dropped and built again.

    Checked under the model's advisory lock rather than left to `IF NOT EXISTS`: on
    Citus, CREATE INDEX CONCURRENTLY IF NOT EXISTS of an index that exists skips the
    build but marks the index invalid (citusdata/citus issue 8338), which a second
    tenant's backfill would do to the first one's index.
    """
    with owner_autocommit_connection() as owner, _model_lock(owner, embedder.model):
        state = model_index_state(embedder.model)
        if state == "valid":
            return
        if state == "invalid":
            drop_model_index(owner, embedder.model)
        owner.execute(model_index_sql(embedder))


def drop_model_index(owner: Any, model: str) -> None:
    name = sql.Identifier(model_index_name(model))
    owner.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))


# Who may change a tenant's model ----------------------------------------------------------


def _require_manager(tenant_id: uuid.UUID, by: User | None) -> None:
    """PermissionDenied unless `by` is None (an operator's command, the worker) or an owner
    or admin of the tenant, or an active superuser."""
    if by is None or (by.is_active and by.is_superuser):
        return
    if not Membership.objects.filter(
        tenant_id=tenant_id, user_id=by.pk, role__in=FULL_ACCESS_ROLES
    ).exists():
        raise PermissionDenied(
            "Only the tenant's owners and admins may change its embedding model."
        )


@contextmanager
def _whole_tenant(tenant_id: uuid.UUID, by: User | None, job: str) -> Iterator[None]:
    """A transaction that sees every chunk of the tenant: the manager's (`by`), or without
    a user a job's of that tenant alone (tenancy.context.job_scope), so a count of chunks
    lacking a vector includes restricted ones."""
    if by is not None:
        with tenant_context(tenant_id, user=by):
            yield
    else:
        with job_scope(job, tenant_id), tenant_context(tenant_id):
            yield


def _extra_model(model: str) -> Embedder:
    """The embedder of a model kept in chunk_embeddings; EMBEDDER's is refused by name."""
    embedder = model_embedder(model)
    if not in_chunk_embeddings(embedder.model):
        raise ValidationError({"model": _IN_CHUNKS_ALREADY.format(model=model)})
    return embedder


_IN_CHUNKS_ALREADY = (
    "{model} is EMBEDDER's model: its vectors are in chunks.embedding already "
    "(chunks_reembed re-embeds them); nothing to backfill."
)


# Reading a tenant's models ---------------------------------------------------------------


def current_model(tenant_id: uuid.UUID) -> str:
    """The model the tenant's searches use (in the caller's tenant context)."""
    model = (
        TenantEmbeddingModel.objects.filter(tenant_id=tenant_id, role=Role.CURRENT)
        .values_list("model", flat=True)
        .first()
    )
    return model or default_model()


def chunk_vectors_kept(tenant_id: uuid.UUID) -> bool:
    """Whether the tenant keeps EMBEDDER's vectors in chunks.embedding (in the caller's
    context): unless it searches with another model and has forgotten EMBEDDER's."""
    roles = dict(
        TenantEmbeddingModel.objects.filter(tenant_id=tenant_id).values_list("model", "role")
    )
    return default_model() in roles or Role.CURRENT not in roles.values()


def kept_embedders(tenant_id: uuid.UUID) -> list[Embedder]:
    """The embedders of the chunk_embeddings models the tenant keeps (current, previous,
    or backfilled), whose vectors its new chunks get too (in the caller's context). A
    model since taken out of EMBEDDING_MODELS is skipped: it cannot embed."""
    models = TenantEmbeddingModel.objects.filter(tenant_id=tenant_id).values_list(
        "model", flat=True
    )
    return [model_embedder(model) for model in models if in_chunk_embeddings(model)]


@dataclass(frozen=True)
class ModelState:
    """One model of a tenant, for embedding_models_status and the command."""

    model: str
    role: str  # current, previous, kept; "current" for EMBEDDER's when nothing else is
    status: str
    chunks_done: int
    chunks_total: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str = ""
    index: str | None = None  # valid, invalid or None; "chunks" for EMBEDDER's


def embedding_models_status(*, tenant: TenantRef, by: User | None = None) -> list[ModelState]:
    """The tenant's models with their role and backfill progress (EMBEDDER's first while it
    has no row, the tenant searching with it). EMBEDDER's progress counts the chunks whose
    chunks.embedding holds its vector; a forgotten EMBEDDER's model is not listed."""
    tenant_id = require_tenant(tenant)
    default = default_model()
    with _whole_tenant(tenant_id, by, "documents.embedding_models_status"):
        rows = list(TenantEmbeddingModel.objects.filter(tenant_id=tenant_id).order_by("model"))
        chunks = Chunk.objects.filter(tenant_id=tenant_id)
        total = chunks.count()
        in_chunks = chunks.filter(embedding__isnull=False, embedding_model=default).count()
    states = []
    if not any(row.model == default for row in rows) and not any(
        row.role == Role.CURRENT for row in rows
    ):
        states.append(
            ModelState(default, Role.CURRENT, Status.COMPLETE, in_chunks, total, index="chunks")
        )
    for row in rows:
        done, total_of_row = (
            (in_chunks, total) if row.model == default else (row.chunks_done, row.chunks_total)
        )
        states.append(
            ModelState(
                row.model,
                row.role,
                row.status,
                done,
                total_of_row,
                row.started_at,
                row.finished_at,
                row.error_message,
                "chunks" if row.model == default else model_index_state(row.model),
            )
        )
    return states


# Backfill --------------------------------------------------------------------------------


def embedding_backfill_start(
    *, tenant: TenantRef, model: str, by: User | None = None
) -> TenantEmbeddingModel:
    """Queue the worker's backfill of `model`'s vectors for the tenant's chunks.

    From now on the tenant keeps the model: its new chunks get the model's vectors too.
    A backfill already waiting is not queued twice; a failed or complete one runs again
    (it embeds only the chunks still lacking a vector). EMBEDDER's model, once the tenant
    has forgotten it, is backfilled by the re-embedding job, which fills chunks.embedding.
    ValidationError naming 'model' for a model that is not one of EMBEDDING_MODELS, or
    EMBEDDER's while the tenant keeps it (unless its backfill has not finished).
    """
    tenant_id = require_tenant(tenant)
    embedder = model_embedder(model)
    with tenant_context(tenant_id, user=by):
        _require_manager(tenant_id, by)
        in_chunks = not in_chunk_embeddings(embedder.model)
        pending = TenantEmbeddingModel.objects.filter(
            tenant_id=tenant_id, model=embedder.model
        ).exclude(status=Status.COMPLETE)
        if in_chunks and chunk_vectors_kept(tenant_id) and not pending.exists():
            raise ValidationError({"model": _IN_CHUNKS_ALREADY.format(model=model)})
        row, _ = TenantEmbeddingModel.objects.get_or_create(
            tenant_id=tenant_id,
            model=embedder.model,
            defaults={"role": Role.KEPT, "status": Status.QUEUED},
        )
        if row.status != Status.RUNNING:
            row.status, row.error_message, row.finished_at = Status.QUEUED, "", None
            row.save(update_fields=["status", "error_message", "finished_at"])
        if in_chunks:
            chunks_reembed_queue(tenant=tenant_id)
        else:
            defer_tenant_job(
                BACKFILL_TASK,
                tenant_id,
                queueing_lock=f"{BACKFILL_TASK}:{tenant_id}:{embedder.model}",
                model=embedder.model,
            )
    return row


def chunks_reembed_queue(*, tenant: TenantRef) -> bool:
    """Queue chunks_reembed of the tenant for the worker, with the embedder the worker is
    configured with (EMBEDDER). False when one is already waiting for the tenant: the
    waiting job re-embeds whatever is stale when it runs."""
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        job = defer_tenant_job(REEMBED_TASK, tenant_id, queueing_lock=f"{REEMBED_TASK}:{tenant_id}")
    return job is not None


def chunk_vectors_backfilled(tenant_id: uuid.UUID) -> None:
    """Mark the backfill of EMBEDDER's model complete (chunks_reembed, at its end, in the
    caller's context), where the tenant had forgotten it and backfills it again."""
    _update_row(
        tenant_id,
        default_model(),
        status=Status.COMPLETE,
        error_message="",
        finished_at=timezone.now(),
    )


@dataclass
class BackfillProgress:
    """Running totals of embeddings_backfill, passed to its on_batch callback."""

    chunks: int = 0
    batches: int = 0


_INSERT_COLUMNS = "tenant_id, chunk_id, model, dimension, embedding"


def write_model_vectors(
    tenant_id: uuid.UUID,
    embedder: Embedder,
    chunk_ids: Sequence[uuid.UUID],
    vectors: Sequence[list[float]],
) -> None:
    """Write (or replace) the chunks' vectors of `embedder`'s model, in the caller's
    transaction, parameters bound on the server in binary (vector_cursor)."""
    if not chunk_ids:
        return
    rows: list[tuple[Any, ...]] = [
        (tenant_id, chunk_id, embedder.model, embedder.dimension, Vector(vector))
        for chunk_id, vector in zip(chunk_ids, vectors, strict=True)
    ]
    with vector_cursor() as cursor:
        for start in range(0, len(rows), VECTOR_INSERT_BATCH):
            batch = rows[start : start + VECTOR_INSERT_BATCH]
            values = ", ".join(["(%s, %s, %s, %s, %b)"] * len(batch))
            cursor.execute(
                f"INSERT INTO chunk_embeddings ({_INSERT_COLUMNS}) VALUES {values} "
                "ON CONFLICT (tenant_id, chunk_id, model) DO UPDATE "
                "SET embedding = EXCLUDED.embedding, dimension = EXCLUDED.dimension",
                [value for row in batch for value in row],
            )


def write_kept_vectors(tenant_id: uuid.UUID, chunks: QuerySet[Chunk]) -> None:
    """Embed `chunks` (a queryset of the tenant's, new or with a new text) with every other
    model the tenant keeps and write their vectors, in the caller's transaction (the
    embedder called inside it, as chunks_reembed does): re-ingestion keeps them current."""
    kept = kept_embedders(tenant_id)
    if not kept:
        return
    rows = list(chunks.values_list("id", "content"))
    for embedder in kept:
        vectors = embed_with_cache(tenant_id, embedder, [text for _, text in rows])
        write_model_vectors(tenant_id, embedder, [pk for pk, _ in rows], vectors)


def _lacking(tenant_id: uuid.UUID, model: str) -> QuerySet[Chunk]:
    """The tenant's chunks without a vector of `model`."""
    vectors = ChunkEmbedding.objects.filter(
        tenant_id=tenant_id, model=model, chunk_id=OuterRef("pk")
    )
    return Chunk.objects.filter(~Exists(vectors), tenant_id=tenant_id)


def embeddings_backfill(
    *,
    tenant: TenantRef,
    model: str,
    batch_size: int = BACKFILL_BATCH_SIZE,
    on_batch: Callable[[BackfillProgress], None] | None = None,
) -> int:
    """The worker's backfill (documents.tasks.backfill_embeddings), in the job's scope:
    embed every chunk of the tenant lacking the model's vector, `batch_size` a
    transaction, through the tenant's embedding cache, recording the progress on the
    tenant's row, then build the model's index (CONCURRENTLY) unless it exists. Returns
    the chunks embedded. A failure marks the row failed with its reason and is raised
    (the job retries it); the batches done stay.
    """
    tenant_id = require_tenant(tenant)
    require_count("batch_size", batch_size, BACKFILL_MAX_BATCH_SIZE)
    embedder = _extra_model(model)
    with tenant_context(tenant_id):
        row = TenantEmbeddingModel.objects.filter(tenant_id=tenant_id, model=embedder.model).first()
    if row is None:
        # Forgotten since it was queued: a backfill would write vectors the prune removes.
        logger.info("backfill of a model the tenant no longer keeps", extra={"model": model})
        return 0
    progress = BackfillProgress()
    try:
        with tenant_context(tenant_id):
            total = Chunk.objects.filter(tenant_id=tenant_id).count()
            done = total - _lacking(tenant_id, embedder.model).count()
            _update_row(
                tenant_id,
                embedder.model,
                status=Status.RUNNING,
                started_at=timezone.now(),
                chunks_done=done,
                chunks_total=total,
                error_message="",
                finished_at=None,
            )
        while True:
            with tenant_context(tenant_id):
                batch = list(
                    _lacking(tenant_id, embedder.model)
                    .order_by("id")
                    .values_list("id", "content")[:batch_size]
                )
                if not batch:
                    break
                vectors = embed_with_cache(tenant_id, embedder, [text for _, text in batch])
                write_model_vectors(tenant_id, embedder, [pk for pk, _ in batch], vectors)
                done += len(batch)
                _update_row(
                    tenant_id, embedder.model, chunks_done=done, chunks_total=max(total, done)
                )
            progress.chunks += len(batch)
            progress.batches += 1
            if on_batch:
                on_batch(progress)
        # Built once the vectors are in: one bulk build is far cheaper than growing the
        # graph row by row (pgvector's advice), and nothing searches the model before the
        # switch, which checks the index. A second tenant's backfill finds it built and
        # adds its rows to it as they come.
        ensure_model_index(embedder)
        # Fresh statistics: a new table has none, and the planner then takes the
        # tenant's thousands of vectors for one row (a nested loop over all of them).
        with owner_autocommit_connection() as owner:
            owner.execute("ANALYZE chunk_embeddings")
        with tenant_context(tenant_id):
            total = Chunk.objects.filter(tenant_id=tenant_id).count()
            _update_row(
                tenant_id,
                embedder.model,
                status=Status.COMPLETE,
                chunks_done=total - _lacking(tenant_id, embedder.model).count(),
                chunks_total=total,
                finished_at=timezone.now(),
            )
    except Exception as error:
        message = f"{type(error).__name__}: {error}"[:ERROR_MESSAGE_MAX_LENGTH]
        with tenant_context(tenant_id):
            _update_row(tenant_id, embedder.model, status=Status.FAILED, error_message=message)
        raise
    logger.info(
        "embeddings backfilled",
        extra={"tenant_id": str(tenant_id), "model": embedder.model, "chunks": progress.chunks},
    )
    return progress.chunks


def _update_row(tenant_id: uuid.UUID, model: str, **values: Any) -> None:
    TenantEmbeddingModel.objects.filter(tenant_id=tenant_id, model=model).update(**values)


# Switch, rollback, forget -----------------------------------------------------------------


def missing_vectors(tenant_id: uuid.UUID, model: str) -> int:
    """The tenant's chunks without a vector of `model` (those the caller's context sees):
    in chunks.embedding for EMBEDDER's model, in chunk_embeddings for the others."""
    if in_chunk_embeddings(model):
        return _lacking(tenant_id, model).count()
    return (
        Chunk.objects.filter(tenant_id=tenant_id)
        .filter(Q(embedding__isnull=True) | ~Q(embedding_model=model))
        .count()
    )


def _require_complete(tenant_id: uuid.UUID, model: str) -> None:
    """Refused naming 'model' unless the tenant keeps the model, every chunk of the tenant
    has its vector and its index is built and valid: a search of it then misses nothing,
    fast. (chunks.embedding's index, EMBEDDER's, is the schema's own.)"""
    if not in_chunk_embeddings(model) and not chunk_vectors_kept(tenant_id):
        raise ValidationError(
            {
                "model": f"The tenant forgot {model}: start its backfill (backfill_embeddings), "
                "let it finish, then switch."
            }
        )
    missing = missing_vectors(tenant_id, model)
    if missing:
        raise ValidationError(
            {
                "model": f"{missing} chunk(s) of the tenant have no {model} vector yet: run its "
                "backfill (backfill_embeddings) to the end, then switch."
            }
        )
    if in_chunk_embeddings(model) and model_index_state(model) != "valid":
        raise ValidationError(
            {
                "model": f"The index of {model} is not built yet (the backfill builds it at "
                "its end): run the backfill again, then switch."
            }
        )


def embedding_model_switch(
    *, tenant: TenantRef, model: str, by: User | None = None
) -> TenantEmbeddingModel | None:
    """Make `model` the one the tenant's searches use; the model used until now is kept as
    `previous`, for embedding_model_rollback (an earlier previous model stays kept).

    Refused naming 'model' for an unknown model, the model already in use, or one whose
    vectors some chunk of the tenant still lacks (its backfill has not finished): a
    switch never leaves a chunk unfindable. Returns the new current row (None when the
    tenant goes back to EMBEDDER's model, which needs no row).
    """
    tenant_id = require_tenant(tenant)
    embedder = model_embedder(model)
    with _whole_tenant(tenant_id, by, "documents.embedding_model_switch"):
        _require_manager(tenant_id, by)
        rows = {
            row.model: row
            for row in TenantEmbeddingModel.objects.select_for_update().filter(tenant_id=tenant_id)
        }
        current = next((m for m, row in rows.items() if row.role == Role.CURRENT), default_model())
        if embedder.model == current:
            raise ValidationError({"model": f"The tenant searches with {current} already."})
        if in_chunk_embeddings(embedder.model) and embedder.model not in rows:
            raise ValidationError(
                {"model": f"{model} was never backfilled for this tenant: start its backfill."}
            )
        _require_complete(tenant_id, embedder.model)
        return _set_roles(tenant_id, rows, current=embedder.model, previous=current)


def _set_roles(
    tenant_id: uuid.UUID, rows: dict[str, TenantEmbeddingModel], *, current: str, previous: str
) -> TenantEmbeddingModel | None:
    """Give the tenant's models their new roles, in the caller's transaction: every row
    kept first (the one-current and one-previous keys are checked at each statement), then
    the two roles. EMBEDDER's model has no row while the tenant searches with it (no
    current row means EMBEDDER's), and one (previous or kept) while it is kept beside
    another."""
    rows_of = TenantEmbeddingModel.objects.filter(tenant_id=tenant_id)
    rows_of.update(role=Role.KEPT)
    if previous in rows:
        rows_of.filter(model=previous).update(role=Role.PREVIOUS)
    else:  # EMBEDDER's model, left for another
        TenantEmbeddingModel.objects.create(
            tenant_id=tenant_id, model=previous, role=Role.PREVIOUS, status=Status.COMPLETE
        )
    if current == default_model():
        # Searched without a row; kept otherwise, an earlier previous model included.
        rows_of.filter(model=current).delete()
    else:
        rows_of.filter(model=current).update(role=Role.CURRENT)
    return rows_of.filter(role=Role.CURRENT).first()


def embedding_model_rollback(*, tenant: TenantRef, by: User | None = None) -> str:
    """Search with the tenant's previous model again; the model left becomes previous, so
    a rollback can itself be rolled back. Returns the model now in use. ValidationError
    naming 'model' when the tenant has no previous model."""
    tenant_id = require_tenant(tenant)
    with _whole_tenant(tenant_id, by, "documents.embedding_model_rollback"):
        _require_manager(tenant_id, by)
        rows = {
            row.model: row
            for row in TenantEmbeddingModel.objects.select_for_update().filter(tenant_id=tenant_id)
        }
        previous = next((m for m, row in rows.items() if row.role == Role.PREVIOUS), None)
        if previous is None:
            raise ValidationError({"model": "The tenant has no previous model to roll back to."})
        current = next((m for m, row in rows.items() if row.role == Role.CURRENT), default_model())
        _require_complete(tenant_id, previous)
        _set_roles(tenant_id, rows, current=previous, previous=current)
    return previous


def embedding_model_forget(*, tenant: TenantRef, model: str, by: User | None = None) -> None:
    """Stop keeping `model`'s vectors for the tenant (its previous model once a switch has
    proven itself, or a backfill abandoned): its new chunks no longer get them, and the
    next embeddings_prune deletes them. EMBEDDER's model too, once the tenant searches
    with another: chunks.embedding is then left empty for its chunks. Refused naming
    'model' for the model in use and for a model the tenant does not keep."""
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id, user=by):
        _require_manager(tenant_id, by)
        rows = {
            row.model: row
            for row in TenantEmbeddingModel.objects.select_for_update().filter(tenant_id=tenant_id)
        }
        current = next((m for m, row in rows.items() if row.role == Role.CURRENT), default_model())
        if model == current:
            raise ValidationError(
                {"model": f"{model} is the tenant's current model: switch away from it first."}
            )
        if model not in rows:
            raise ValidationError({"model": f"The tenant keeps no {model!r} vectors."})
        rows[model].delete()


# Prune ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneSummary(JobSummary):
    """What embeddings_prune removed (or would remove, dry run)."""

    # (tenant slug, model) -> vectors: chunk_embeddings rows, and chunks.embedding cleared
    vectors: dict[tuple[str, str], int] = field(default_factory=dict)
    # (tenant slug, model) -> embedding_cache entries
    cached: dict[tuple[str, str], int] = field(default_factory=dict)
    indexes: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        verb = "Would delete" if self.dry_run else "Deleted"
        lines = [
            f"{verb} {count} {model} vector(s) of tenant {tenant}."
            for (tenant, model), count in sorted(self.vectors.items())
        ]
        lines += [
            f"{verb} {count} cached {model} vector(s) of tenant {tenant}."
            for (tenant, model), count in sorted(self.cached.items())
        ]
        drop = "Would drop" if self.dry_run else "Dropped"
        lines += [f"{drop} index {name}." for name in self.indexes]
        return lines or ["No vectors of a model no tenant keeps."]


def _kept_by_tenant(model: str | OuterRef) -> Q:
    """Whether the row's tenant keeps the model `model` names (an OuterRef to the row's
    model column, or a model name): it has a row of it, or the model is EMBEDDER's and
    the tenant searches with it (no current row)."""
    of_tenant = TenantEmbeddingModel.objects.filter(tenant_id=OuterRef("tenant_id"))
    kept = Q(Exists(of_tenant.filter(model=model)))
    searched_without_row = ~Q(Exists(of_tenant.filter(role=Role.CURRENT)))
    if isinstance(model, str):
        return kept | searched_without_row if model == default_model() else kept
    return kept | (Q(**{model.name: default_model()}) & searched_without_row)


def _prune_pairs(
    doomed: QuerySet[Any],
    model_column: str,
    remove: Callable[[QuerySet[Any]], int],
    *,
    dry_run: bool,
    batch_size: int,
) -> dict[tuple[str, str], int]:
    """Remove the `doomed` rows (filtered on what their tenant does not keep), tenant and
    model at a time, `batch_size` a statement; each batch checks again, so a tenant that
    starts keeping the model meanwhile keeps the rest. A system job (the logged bypass:
    every tenant's rows). Returns (tenant slug, model) -> rows."""
    with system_context("embeddings_prune: vectors of models no tenant keeps"):
        pairs = list(doomed.values_list("tenant_id", "tenant__slug", model_column).distinct())
    removed: dict[tuple[str, str], int] = {}
    for tenant_id, slug, model in pairs:
        count = 0
        while True:
            with system_context(f"embeddings_prune: {model} of {slug}"):
                rows = doomed.filter(tenant_id=tenant_id, **{model_column: model})
                if dry_run:
                    count = rows.count()
                    break
                ids = list(rows.values_list("id", flat=True)[:batch_size])
                if not ids:
                    break
                count += remove(doomed.model.objects.filter(tenant_id=tenant_id, pk__in=ids))
        if count:
            removed[(slug, model)] = count
    return removed


def embeddings_prune(*, dry_run: bool = False, batch_size: int = PRUNE_BATCH_SIZE) -> PruneSummary:
    """Remove the vectors of every (tenant, model) the tenant does not keep, `batch_size`
    a statement: its chunk_embeddings rows, EMBEDDER's vectors in chunks.embedding (set
    to NULL: its chunks stay, found by the model the tenant searches with), and its
    embedding cache entries; then drop the index of every model no tenant keeps. The
    index is dropped under the model's advisory lock, which a backfill takes to build
    it. chunks.embedding's own index is the schema's and stays: it holds no live entry
    once no tenant keeps EMBEDDER's model (docs/operations.md says how to give its space
    back)."""
    require_count("batch_size", batch_size, PRUNE_MAX_BATCH_SIZE)

    def delete(rows: QuerySet[Any]) -> int:
        return rows.delete()[0]

    def clear(rows: QuerySet[Any]) -> int:
        return rows.update(embedding=None, embedding_model="")

    def prune(
        doomed: QuerySet[Any], model_column: str, remove: Callable[[QuerySet[Any]], int]
    ) -> dict[tuple[str, str], int]:
        return _prune_pairs(doomed, model_column, remove, dry_run=dry_run, batch_size=batch_size)

    chunk_vectors = Chunk.objects.filter(embedding__isnull=False).exclude(
        _kept_by_tenant(default_model())
    )
    summary = PruneSummary(
        dry_run=dry_run,
        vectors={
            **prune(
                ChunkEmbedding.objects.exclude(_kept_by_tenant(OuterRef("model"))),
                "model",
                delete,
            ),
            **prune(chunk_vectors, "embedding_model", clear),
        },
        cached=prune(
            EmbeddingCacheEntry.objects.exclude(_kept_by_tenant(OuterRef("model"))),
            "model",
            delete,
        ),
    )
    with system_context("embeddings_prune: models no tenant keeps"):
        kept_models = set(TenantEmbeddingModel.objects.values_list("model", flat=True))
        stored_models = set(ChunkEmbedding.objects.values_list("model", flat=True).distinct())
    # An index has the model's hash for a name: the models it may be of are those stored
    # and those configured.
    for model in sorted((stored_models | set(settings.EMBEDDING_MODELS)) - kept_models):
        if model_index_state(model) is None:
            continue
        if dry_run:
            summary.indexes.append(model_index_name(model))
            continue
        with owner_autocommit_connection() as owner, _model_lock(owner, model):
            # Again under the lock: a backfill started meanwhile keeps its index.
            with system_context(f"embeddings_prune: is {model} kept"):
                still_kept = TenantEmbeddingModel.objects.filter(model=model).exists()
            if not still_kept:
                drop_model_index(owner, model)
                summary.indexes.append(model_index_name(model))
    return summary
