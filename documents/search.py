"""Retrieval over chunks: semantic (HNSW), full-text and hybrid search, and the planner
tuning that keeps a tenant's kNN query both fast and complete under row-level security.

`chunk_search` runs inside `tenant_context(tenant)` itself and returns rows; each search
is written to the search log (search_queries, `_log_search`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    Expression,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Model,
    Q,
    QuerySet,
    UUIDField,
    Value,
)
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, VectorField

from core.db.backend.base import DatabaseWrapper
from core.db.connections import begins_transaction
from core.db.replicas import unpinned_write
from core.expressions import QueryVector
from core.hashing import sha256_hex
from documents.embedding import Embedder, embed_texts
from documents.embeddings import chunk_embedder, in_chunk_embeddings, model_embedder
from documents.filters import MetadataFilter, parse_filters
from documents.models import SEARCH_CONFIG, Chunk, ChunkEmbedding, Document, Project, SearchMode
from documents.models import SearchQuery as LoggedSearch  # not the tsquery above
from documents.services.embedding_models import current_model, model_index_name
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

SEARCH_MODES = tuple(SearchMode.values)
SEARCH_MAX_K = 1000
# Reciprocal rank fusion constant (Cormack et al. 2009): score = sum of 1 / (60 + rank).
RRF_K = 60
# Candidates each list contributes to a hybrid search.
HYBRID_MIN_CANDIDATES = 50
# pgvector per-transaction settings. The index is shared by all tenants and row-level
# security filters after the scan; iterative scans keep reading the graph until k rows
# pass the filters, up to max_scan_tuples, so a small tenant still gets k results.
# max_scan_tuples grows with k (a tenant holding 1% of the rows needs ~100 tuples
# read per row returned), from a floor up to a cap; a scan that still comes back
# short is re-run exactly.
HNSW_ITERATIVE_SCAN = "relaxed_order"
HNSW_MIN_EF_SEARCH = 100
HNSW_MIN_SCAN_TUPLES = 40_000
HNSW_SCAN_TUPLES_PER_ROW = 200
HNSW_MAX_SCAN_TUPLES = 500_000
# A member (a user without full access to the tenant) searched through the HNSW index
# reads more rows than asked for, with a wider first pass, and keeps the nearest (see
# _semantic). The graph's first pass holds the query's nearest chunks of every tenant
# and access list; the member's nearest ones lie deeper in it, and the iterative scan's
# later passes (relaxed_order) return nearer chunks after further ones. Measured at 50%
# of a tenant visible (docs/security.md): 3k rows at ef_search 100 gave recall@10
# 0.934-0.985 over nine builds of the index, 4k rows at 130 0.966-0.983 over five,
# at about the same cost (the vectors are read from the rows, not TOAST). A search without
# a user (a system job) reads k, as before: it is the unrestricted search of a tenant
# that restricts nothing, which the extra rows would slow.
PARTIAL_ACCESS_OVERFETCH = 4
PARTIAL_ACCESS_EF_SEARCH = 130
# A metadata filter hides chunks near the query as access does, so a filtered search
# read through the index reads more rows and, above all, makes the scan's first pass
# wider (docs/architecture.md, "Filtered search"): when the filter keeps half the
# tenant, the rows asked for come from that first pass, whose width (ef_search) bounds
# their recall. Measured with half the tenant kept (make bench, one build each):
# 3k rows at ef_search 100 gave recall@10 0.941-0.961, 4k rows 0.934-0.937; at
# ef_search 200, over three further builds (seeds 1-3), 2k rows gave 0.943-0.978 (and
# 0.949 in one bench run) and 4k rows 0.970-0.985: the wider pass holds more of the
# kept rows, which more rows then reach. As the member's search, 4k rows.
FILTER_OVERFETCH = 4
FILTER_EF_SEARCH = 2 * HNSW_MIN_EF_SEARCH
# Settings of set_hnsw_iterative_scan that change how the caller's own later queries are
# planned, so a search inside a longer transaction puts them back; the hnsw.* ones only
# concern HNSW scans.
RESTORED_SETTINGS = ("enable_sort", "plan_cache_mode")


@dataclass(frozen=True)
class SearchResult:
    """One chunk found by chunk_search, with its score and 1-based rank."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    ordinal: int
    content: str
    score: float
    rank: int
    # Hex SHA-256 of the chunk's content (UTF-8), to pin what an agent actually read.
    chunk_sha256: str


def _validate_search(query: str, k: int, mode: str) -> None:
    errors = {}
    if mode not in SEARCH_MODES:
        errors["mode"] = f"Unknown search mode {mode!r}; expected one of {', '.join(SEARCH_MODES)}."
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= SEARCH_MAX_K:
        errors["k"] = f"k must be an integer from 1 to {SEARCH_MAX_K}, not {k!r}."
    if not isinstance(query, str) or not query.strip():
        errors["query"] = "The query must be non-empty text."
    if errors:
        raise ValidationError(errors)


def _scope(
    project: Project | None,
    documents: Sequence[Document | uuid.UUID] | None,
    through: str = "document__",
) -> Q:
    """The chunks a search is limited to, by project and/or documents, beyond its tenant;
    with `through=""`, the documents it is limited to."""
    scope = Q()
    if project is not None:
        scope &= Q(**{f"{through}project_id": project.pk})
    if documents is not None:
        scope &= Q(**{f"{through}pk__in": [getattr(d, "pk", d) for d in documents]})
    return scope


@dataclass(frozen=True)
class _SearchScope:
    """What a search is limited to beyond its tenant, as the queries need it."""

    # The chunks in scope: project, documents, and every metadata condition (the
    # document's through a join).
    chunks: Q
    # The documents in scope: project, documents and the document conditions.
    documents: Q
    # The chunk conditions alone, for a read of chosen documents' chunks.
    chunk_conditions: Q
    by_document_metadata: bool
    by_chunk_metadata: bool
    filtered: bool


def _search_scope(
    project: Project | None,
    documents: Sequence[Document | uuid.UUID] | None,
    metadata: MetadataFilter,
) -> _SearchScope:
    return _SearchScope(
        chunks=_scope(project, documents) & metadata.document_q() & metadata.chunk_q(),
        documents=_scope(project, documents, through="") & metadata.document_q(through=""),
        chunk_conditions=metadata.chunk_q(),
        by_document_metadata=bool(metadata.of("document")),
        by_chunk_metadata=bool(metadata.of("chunk")),
        filtered=bool(metadata),
    )


def _chunk_reads() -> BaseDatabaseWrapper:
    """The connection chunk reads are routed to (a replica, core.db.replicas): the search
    settings must be set in the transaction the search query runs in."""
    return connections[router.db_for_read(Chunk)]


def hnsw_max_scan_tuples(limit: int) -> int:
    """Index tuples an iterative scan may read to return `limit` rows."""
    return min(max(HNSW_MIN_SCAN_TUPLES, limit * HNSW_SCAN_TUPLES_PER_ROW), HNSW_MAX_SCAN_TUPLES)


def set_hnsw_iterative_scan(
    limit: int, *, index_order: bool = False, ef_search: int | None = None
) -> dict[str, str]:
    """Iterative HNSW index scans for the current transaction only (SET LOCAL).

    ef_search is at least the LIMIT so one pass can return it (and `ef_search`, by
    default HNSW_MIN_EF_SEARCH as it is when called, wider for a filtered search, up to
    pgvector's 1000); max_scan_tuples grows
    with the LIMIT and bounds the work when the tenant's rows are rare in the shared
    index. `index_order` also turns sorting off, which leaves the ordered index scan as
    the plan of an `ORDER BY distance LIMIT n` query (see _index_threshold).

    Plans are made afresh for each statement (plan_cache_mode): the kNN statement is
    the same text for every tenant, and once the connection has prepared it
    (DATABASE_PREPARED_STATEMENTS) PostgreSQL may reuse a generic plan made for another
    tenant under other settings, ignoring both the tenant's share and enable_sort (a
    small tenant's sort reused for a big tenant). Returns the settings that outlive
    the search in its transaction as they were, for restoring; all in one statement.
    """
    if ef_search is None:
        ef_search = HNSW_MIN_EF_SEARCH
    settings = {
        "hnsw.iterative_scan": HNSW_ITERATIVE_SCAN,
        # pgvector's bound is 1000; so is SEARCH_MAX_K, the largest limit.
        "hnsw.ef_search": str(min(max(ef_search, limit), SEARCH_MAX_K)),
        "hnsw.max_scan_tuples": str(hnsw_max_scan_tuples(limit)),
        "plan_cache_mode": "force_custom_plan",
    }
    if index_order:
        settings["enable_sort"] = "off"
    restored = [name for name in RESTORED_SETTINGS if name in settings]
    columns = ["current_setting(%s)"] * len(restored) + ["set_config(%s, %s, true)"] * len(settings)
    params = [*restored, *(part for pair in settings.items() for part in pair)]
    with _chunk_reads().cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(columns), params)
        row = cursor.fetchone()
    return dict(zip(restored, row, strict=False))


def _restore_settings(previous: dict[str, str]) -> None:
    columns = ", ".join(["set_config(%s, %s, true)"] * len(previous))
    with _chunk_reads().cursor() as cursor:
        cursor.execute("SELECT " + columns, [part for pair in previous.items() for part in pair])


def semantic_queryset(
    chunks: QuerySet[Chunk],
    vector: Sequence[float],
    model: str,
    *,
    exact: bool = False,
    tenant_id: uuid.UUID | None = None,
) -> QuerySet:
    """Chunks nearest to `vector` by cosine distance, as `ORDER BY embedding <=> q`.

    Only vectors of the same embedding model are comparable, so others are skipped.
    The vectors are read where `model` keeps them (_vector_source): chunks.embedding for
    EMBEDDER's model, chunk_embeddings for one of EMBEDDING_MODELS, whose rows of
    `tenant_id` are ordered by `(embedding::vector(D)) <=> q`, the expression of the
    model's partial HNSW index, and kept when their chunk is one of `chunks` (the
    search's scope, filters and access); the rows are the same either way.
    The planner picks the plan: chunks_embedding_hnsw_idx with the tenant filter
    applied after the scan for a big tenant, or the tenant's rows from
    chunks_tenant_document_idx sorted exactly when they are few (a tiny tenant would
    otherwise exhaust max_scan_tuples before finding its k rows). `exact` orders by
    `(embedding <=> q) + 0` (then id), which the HNSW index cannot serve: the tenant's
    rows are read without it and sorted, so every matching row can be returned. The
    vector is one parameter (QueryVector): read the rows with _knn_rows to send it in
    binary.
    """
    source = _vector_source(chunks, model, tenant_id)
    distance: Expression = CosineDistance(source.column, QueryVector(vector))
    # Ties go by id when sorting exactly; the index gives one order key only.
    order: tuple[str, ...] = ("distance",)
    if exact:
        distance = ExpressionWrapper(distance + Value(0.0), output_field=FloatField())
        order = ("distance", source.columns[0])
    return (
        source.rows.annotate(distance=distance)
        .order_by(*order)
        .values_list(*source.columns, "distance")
    )


@dataclass(frozen=True)
class _VectorSource:
    """Where a model's vectors are read: the rows, the vector's expression, and the
    columns giving (chunk id, document id, ordinal, content)."""

    rows: QuerySet
    column: Expression | str
    columns: tuple[str, str, str, str]


def _vector_source(
    chunks: QuerySet[Chunk], model: str, tenant_id: uuid.UUID | None
) -> _VectorSource:
    if not in_chunk_embeddings(model):
        return _VectorSource(
            chunks.filter(embedding__isnull=False, embedding_model=model),
            "embedding",
            ("id", "document_id", "ordinal", "content"),
        )
    if tenant_id is None:
        raise ValueError("a search of chunk_embeddings needs its tenant_id")
    dimension = model_embedder(model).dimension
    # tenant_id and model as constants of the query: the partial index's predicate, and
    # on Citus the tenant's shard.
    rows = ChunkEmbedding.objects.filter(
        tenant_id=tenant_id, model=model, chunk__in=chunks.values("pk")
    )
    return _VectorSource(
        rows,
        Cast("embedding", VectorField(dimensions=dimension)),
        ("chunk_id", "chunk__document_id", "chunk__ordinal", "chunk__content"),
    )


def _knn_rows(queryset: QuerySet) -> list[tuple]:
    """The rows of a semantic_queryset, its query vector sent in pgvector's binary form.

    Through the server-binding cursor of core.db.backend rather than the QuerySet's own
    client-side binding, which would format 1536 floats into the SQL text. The columns
    need no conversion from the database (uuid, integer, text, float), so the rows are
    what iterating the QuerySet gives.
    """
    sql, params = queryset.query.sql_with_params()
    # Every alias's ENGINE is core.db.backend (settings), whose wrapper has this cursor.
    with cast(DatabaseWrapper, connections[queryset.db]).server_binding_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fulltext_queryset(chunks: QuerySet[Chunk], query: str) -> QuerySet:
    """Chunks matching `query` (websearch syntax) ranked by ts_rank_cd, best first.

    Under row-level security PostgreSQL lets only leakproof operators into an index
    condition, and `@@` (ts_match_vq) is not leakproof by default: unless a superuser
    marks it LEAKPROOF, chunks_search_vector_gin is not used and the tenant's rows
    are matched one by one after chunks_tenant_document_idx finds them.
    """
    tsquery = SearchQuery(query, config=SEARCH_CONFIG, search_type="websearch")
    return (
        chunks.filter(search_vector=tsquery)
        .annotate(text_rank=SearchRank(F("search_vector"), tsquery, cover_density=True))
        .order_by("-text_rank", "id")
        .values_list("id", "document_id", "ordinal", "content", "text_rank")
    )


# Choosing between the two plans of a kNN query. Sorting the candidates exactly reads
# every one of them (each a 1536-d vector: from its row since documents.0028, which made
# 500 of them some ten times cheaper to read, from TOAST before; the figures below are
# from before, and the crossing point was not measured again); the HNSW index visits about
# limit / selectivity entries, each costing some six sorted rows here (measured: 2,000
# candidates sorted in 16 ms; 50 of them through the index, with the tenant holding 9%
# of the chunks, in 27 ms). The planner prices a distance like any cheap operator and
# keeps sorting far too long (10,000 candidates: 42 ms sorted, 5 ms through the index),
# so above the crossing point sorting is switched off for that one query, which leaves
# the ordered index scan as the plan.
INDEX_VISIT_COST = 6
# Below this many chunks in the whole table the planner's own choice is good enough.
INDEX_HINT_MIN_TABLE_ROWS = 10_000


@dataclass(frozen=True)
class _SearchFacts:
    """What a semantic search reads before choosing its plan, in one statement."""

    # The planner's estimates of the chunks and documents of every tenant: every role
    # may read them (pg_class), whatever row-level security hides.
    table_chunks: float
    table_documents: float
    # The transaction sees every chunk of the tenant (an owner or admin there, or an
    # active superuser): app.full_access_tenant_ids, as the row-level security policy
    # reads it.
    full_access: bool


def _search_facts(tenant_id: uuid.UUID, model: str | None = None) -> _SearchFacts:
    """For a model of chunk_embeddings, the vectors are its index's entries (the rows of
    every tenant that keeps it), the chunks' count until it is built."""
    index = model_index_name(model) if model and in_chunk_embeddings(model) else None
    with _chunk_reads().cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE((SELECT i.reltuples FROM pg_class i WHERE i.oid = to_regclass(%s)"
            " AND i.reltuples >= 0), c.reltuples), d.reltuples,"
            " %s = ANY (app_full_access_tenant_ids())"
            " FROM pg_class c, pg_class d"
            " WHERE c.oid = 'chunks'::regclass AND d.oid = 'documents'::regclass",
            [index, tenant_id],
        )
        chunks, documents, full_access = cursor.fetchone()
    return _SearchFacts(chunks, documents, bool(full_access))


def _index_threshold(limit: int, table_chunks: float) -> int | None:
    """Candidates above which the index is cheaper: n > sqrt(cost * limit * all chunks).

    From n (rows sorted) > cost * limit * all / n (entries the index visits at
    selectivity n / all). The table's size is the planner's estimate (_search_facts);
    None for a small (or never analysed) table, where the planner decides alone.
    """
    if table_chunks < INDEX_HINT_MIN_TABLE_ROWS:
        return None
    return math.isqrt(int(INDEX_VISIT_COST * limit * table_chunks))


def _candidates_estimate(scope: Q, model: str) -> float:
    """The planner's estimate of the chunks a kNN query compares, without counting them.

    From EXPLAIN: pg_stats, which holds the tenants' frequencies, shows nothing of a
    table under row-level security. The query leaves the tenant to the row-level
    security policy, whose tenant list the planner reads from the transaction's setting
    when it estimates; that alone gives the tenant's share, and a `tenant_id = ...` on
    top would count the share twice.
    """
    candidates = Chunk.objects.filter(scope)
    if not in_chunk_embeddings(model):
        candidates = candidates.filter(embedding__isnull=False, embedding_model=model)
    # (A model of chunk_embeddings: every chunk of a tenant searching it has its vector.)
    [plan] = json.loads(candidates.explain(format="json"))
    return plan["Plan"]["Plan Rows"]


def _visible_documents(
    tenant_id: uuid.UUID, document_scope: Q, facts: _SearchFacts, threshold: int
) -> list[uuid.UUID] | None:
    """The documents in scope a member who sees part of the tenant may search, when
    their chunks are fewer than `threshold`; None when they may be more.

    Read under row-level security from documents, which is small beside chunks: the
    member's visible documents are exactly those whose chunks they see (a chunk's access
    list is its document's). Their chunks are estimated at the table's average per
    document, so at most threshold / average ids are read, whatever the tenant holds.
    """
    per_document = max(facts.table_chunks / facts.table_documents, 1.0)
    most = int(threshold / per_document)
    visible = Document.objects.filter(document_scope, tenant_id=tenant_id).values_list(
        "pk", flat=True
    )[: most + 1]
    ids = list(visible)
    return ids if len(ids) <= most else None


def _exact_rows(
    chunks: QuerySet[Chunk], vector: Sequence[float], model: str, limit: int, tenant_id: uuid.UUID
) -> list:
    rows = _knn_rows(
        semantic_queryset(chunks, vector, model, exact=True, tenant_id=tenant_id)[:limit]
    )
    return [(*row[:4], 1.0 - row[4]) for row in rows]


def _semantic(
    tenant_id: uuid.UUID,
    scope: _SearchScope,
    query: str,
    limit: int,
    embedder: Embedder,
    *,
    transaction_continues: bool,
    member: bool,
) -> list:
    [vector] = embed_texts(embedder, [query])
    chunks = Chunk.objects.filter(scope.chunks, tenant_id=tenant_id)
    facts = _search_facts(tenant_id, embedder.model)
    fetch = limit  # rows read from the index, of which the nearest `limit` are kept
    ef_search = HNSW_MIN_EF_SEARCH
    threshold = _index_threshold(limit, facts.table_chunks)
    partial_access = not facts.full_access and facts.table_documents >= 1
    if threshold is None:
        index_order = False  # a small table: the planner's choice is good enough
    elif not partial_access and not scope.filtered:
        index_order = _candidates_estimate(scope.chunks, embedder.model) > threshold
    else:
        # A member who may see only part of the tenant, or a metadata filter: the
        # planner cannot tell how many chunks remain (it knows the share of open chunks
        # and of a JSON value across the whole table, not this tenant's or this user's),
        # and would walk the HNSW graph past every hidden or filtered-out chunk near the
        # query. The documents that remain tell, and the GIN index of the chunks'
        # metadata: when they hold few chunks, reading exactly those is both exact and
        # cheaper; otherwise the index is, as for any large set of candidates.
        if partial_access or scope.by_document_metadata:
            visible = _visible_documents(tenant_id, scope.documents, facts, threshold)
            if visible is not None:
                if not visible:
                    return []
                chosen = Chunk.objects.filter(
                    scope.chunk_conditions, tenant_id=tenant_id, document_id__in=visible
                )
                return _exact_rows(chosen, vector, embedder.model, limit, tenant_id)
        if scope.by_chunk_metadata and (
            _candidates_estimate(scope.chunks, embedder.model) <= threshold
        ):
            # Few chunks match by the planner's estimate, which reads the statistics of
            # chunks.metadata for JSON containment (jsonb_contains is LEAKPROOF, so row-level
            # security does not hide them from it): read them exactly, through
            # chunks_metadata_gin. Planned only, nothing counted; a wrong guess costs time,
            # never rows (the index path below falls back to the exact read when short).
            return _exact_rows(chunks, vector, embedder.model, limit, tenant_id)
        index_order = True
        # Both when both hide chunks; at most SEARCH_MAX_K rows, which also keeps
        # ef_search (at least the rows read) within pgvector's bound.
        if scope.filtered:
            fetch = max(fetch, min(limit * FILTER_OVERFETCH, SEARCH_MAX_K))
            ef_search = max(ef_search, FILTER_EF_SEARCH)
        if partial_access and member:
            fetch = max(fetch, min(limit * PARTIAL_ACCESS_OVERFETCH, SEARCH_MAX_K))
            ef_search = max(ef_search, PARTIAL_ACCESS_EF_SEARCH)
    settings_before = set_hnsw_iterative_scan(fetch, index_order=index_order, ef_search=ef_search)
    rows = _knn_rows(semantic_queryset(chunks, vector, embedder.model, tenant_id=tenant_id)[:fetch])
    if len(rows) < limit:
        # The index scan gave up at max_scan_tuples, or the tenant has fewer matching
        # chunks; reading the tenant's rows exactly tells both apart and costs little
        # in the second case. (It sorts whatever enable_sort says: it has no other plan.)
        exact = semantic_queryset(chunks, vector, embedder.model, exact=True, tenant_id=tenant_id)
        rows = _knn_rows(exact[:limit])
    if transaction_continues:
        # SET LOCAL would outlive this search for the rest of the caller's transaction.
        _restore_settings(settings_before)
    # relaxed_order may return rows out of order: sort the few we got, keep the nearest.
    rows.sort(key=lambda row: (row[4], row[0]))
    return [(*row[:4], 1.0 - row[4]) for row in rows[:limit]]


def _fulltext(tenant_id: uuid.UUID, scope: Q, query: str, limit: int) -> list:
    chunks = Chunk.objects.filter(scope, tenant_id=tenant_id)
    return list(fulltext_queryset(chunks, query)[:limit])


def _fuse(ranked_lists: Sequence[list], k: int) -> list:
    """Reciprocal rank fusion of ranked (id, document_id, ordinal, content, score) lists."""
    scores: dict[uuid.UUID, float] = {}
    rows: dict[uuid.UUID, tuple] = {}
    for ranked in ranked_lists:
        for position, row in enumerate(ranked, start=1):
            scores[row[0]] = scores.get(row[0], 0.0) + 1.0 / (RRF_K + position)
            rows.setdefault(row[0], row)
    best = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [(*rows[chunk_id][:4], scores[chunk_id]) for chunk_id in best]


def chunk_search(
    *,
    tenant: TenantRef,
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    project: Project | None = None,
    documents: Sequence[Document | uuid.UUID] | None = None,
    embedder: Embedder | None = None,
    user: User | None = None,
    filters: Mapping[str, Any] | None = None,
    execution: Model | uuid.UUID | None = None,
) -> list[SearchResult]:
    """The tenant's k chunks most relevant to `query`, best first.

    Modes: "semantic" (cosine kNN on chunks_embedding_hnsw_idx; score = cosine
    similarity), "fulltext" (search_vector @@ websearch_to_tsquery on
    chunks_search_vector_gin; score = ts_rank_cd) and "hybrid" (reciprocal rank
    fusion of both, constant 60; score = the fused score). Optionally limited to one
    project's documents and/or a list of documents (instances or ids). The query is
    embedded with `embedder`, by default the EMBEDDER setting, and only chunks
    embedded by the same model are compared. Runs in tenant_context(tenant, user=user):
    the chunks of restricted documents (and of restricted projects' documents) are
    searched only where `user` may see them, and the k results come from what they may
    see (without a user, and outside a request, unrestricted chunks only).

    `filters` limits the search further by the metadata of the chunks' documents and of
    the chunks themselves (documents.filters: equality, `in`, ranges, `exists`,
    `contains`), in every mode; a malformed filter is a ValidationError on `filters`
    naming its key.

    Every search is logged in search_queries (`_log_search`): the user of the tenant
    context (`user`, or a request's), `execution` (an agent execution, or its id) when
    an agent searched, the mode, the query (or only its SHA-256, SEARCH_LOG_QUERY_TEXT),
    the filters, k, the latency and the chunk ids returned. A log that cannot be written is a
    warning, never the search's failure.
    """
    return _chunk_search(
        tenant=tenant,
        query=query,
        k=k,
        mode=mode,
        project=project,
        documents=documents,
        embedder=embedder,
        user=user,
        filters=filters,
        execution=execution,
        log=True,
    )


def _chunk_search(
    *,
    tenant: TenantRef,
    query: str,
    k: int,
    mode: str,
    project: Project | None,
    documents: Sequence[Document | uuid.UUID] | None,
    embedder: Embedder | None,
    user: User | None,
    filters: Mapping[str, Any] | None,
    execution: Model | uuid.UUID | None,
    log: bool,
) -> list[SearchResult]:
    """chunk_search; `log=False` skips the log's write, for `make bench` alone
    (benchmarks/search.py measures what the log costs a search against it)."""
    started = time.perf_counter()
    _validate_search(query, k, mode)
    metadata = parse_filters(filters)
    tenant_id = require_tenant(tenant, project=project)
    execution_id = _execution_id(execution, tenant_id)
    if documents is not None and any(
        isinstance(d, Document) and d.tenant_id != tenant_id for d in documents
    ):
        raise ValidationError({"documents": "A document belongs to another tenant."})
    if embedder is not None:
        embedder = _given_embedder(embedder)
    scope = _search_scope(project, documents, metadata)
    # Settings the search makes for its own queries need no restoring when its
    # transaction ends with it.
    transaction_continues = not begins_transaction()
    with tenant_context(tenant_id, user=user):
        if mode != "fulltext" and embedder is None:
            # The tenant's model (documents.services.embedding_models): EMBEDDER's until
            # it switches to one of EMBEDDING_MODELS.
            embedder = model_embedder(current_model(tenant_id))
        if mode == "fulltext" or embedder is None:
            rows = _fulltext(tenant_id, scope.chunks, query, k)
        elif mode == "semantic":
            rows = _semantic(
                tenant_id,
                scope,
                query,
                k,
                embedder,
                transaction_continues=transaction_continues,
                member=user is not None,
            )
        else:
            candidates = min(max(2 * k, HYBRID_MIN_CANDIDATES), SEARCH_MAX_K)
            # Full-text first: the semantic query's settings then end with the
            # transaction and need no restoring.
            text = _fulltext(tenant_id, scope.chunks, query, candidates)
            semantic = _semantic(
                tenant_id,
                scope,
                query,
                candidates,
                embedder,
                transaction_continues=transaction_continues,
                member=user is not None,
            )
            rows = _fuse([semantic, text], k)
        if log:
            _log_search(
                tenant_id,
                execution_id=execution_id,
                mode=mode,
                query=query,
                # As given: parse_filters accepted it, so it is JSON of bounded size.
                filters=dict(filters or {}),
                k=k,
                latency_ms=(time.perf_counter() - started) * 1000,
                chunk_ids=[row[0] for row in rows],
                search_transaction=not transaction_continues,
            )
    return [
        SearchResult(
            chunk_id=chunk_id,
            document_id=document_id,
            ordinal=ordinal,
            content=content,
            score=float(score),
            rank=rank,
            chunk_sha256=sha256_hex(content),
        )
        for rank, (chunk_id, document_id, ordinal, content, score) in enumerate(rows, start=1)
    ]


def _given_embedder(embedder: Embedder) -> Embedder:
    """An embedder a caller passes: one of EMBEDDING_MODELS at its configured dimension,
    or one whose vectors fit chunks.embedding."""
    if not in_chunk_embeddings(embedder.model):
        return chunk_embedder(embedder)
    expected = model_embedder(embedder.model).dimension
    if embedder.dimension != expected:
        raise ValidationError(
            {
                "embedding": f"embedder {embedder.model} makes {embedder.dimension}-dimensional "
                f"vectors; EMBEDDING_MODELS gives it {expected}."
            }
        )
    return embedder


# The search log -----------------------------------------------------------------------


def _execution_id(execution: Model | uuid.UUID | None, tenant_id: uuid.UUID) -> uuid.UUID | None:
    """The id of the agent execution a search is made for (a row, or its id), checked to be
    of the tenant when a row is given; documents does not import agents, so any row with
    a UUID `pk` and `tenant_id` is taken for one."""
    if execution is None:
        return None
    execution_id = execution if isinstance(execution, uuid.UUID) else getattr(execution, "pk", None)
    if not isinstance(execution_id, uuid.UUID):
        raise ValidationError({"execution": "An agent execution, or its id (a UUID)."})
    if getattr(execution, "tenant_id", tenant_id) != tenant_id:
        raise ValidationError({"execution": "The execution belongs to another tenant."})
    return execution_id


class _CurrentUserId(Func):
    """The user of the transaction's tenant context (app.user_id; NULL without one)."""

    function = "app_current_user_id"
    template = "%(function)s()"
    output_field = UUIDField()


def _log_search(
    tenant_id: uuid.UUID,
    *,
    execution_id: uuid.UUID | None,
    mode: str,
    query: str,
    filters: dict,
    k: int,
    latency_ms: float,
    chunk_ids: list[uuid.UUID],
    search_transaction: bool,
) -> None:
    """Write one search_queries row, inside the search's tenant context
    (`search_transaction`: chunk_search began the default connection's transaction).

    On the primary (writes always are, core.db.replicas), in the transaction of the
    tenant context, whose settings give the row its tenant and user: a search whose
    chunks were read on a replica writes nothing there. The insert runs in a savepoint:
    when it fails (a read-only transaction of the caller's, a missing month partition,
    a lock or statement timeout) the savepoint is rolled back, the caller's transaction
    goes on and the search returns its results; the failure is logged as a warning. It
    does not pin the unit of work's later reads to the primary (unpinned_write): nothing
    the request reads depends on its own log row. Inside a caller's transaction the row
    commits or rolls back with it.
    """
    keep_text = settings.SEARCH_LOG_QUERY_TEXT
    entry = LoggedSearch(  # type: ignore[misc]  # the stubs type user_id's value, not an expression the INSERT evaluates
        tenant_id=tenant_id,
        user_id=_CurrentUserId(),
        execution_id=execution_id,
        mode=mode,
        query=query if keep_text else "",
        query_sha256=sha256_hex(query),
        filters=filters,
        k=k,
        latency_ms=latency_ms,
        chunk_ids=chunk_ids,
    )
    using = router.db_for_write(LoggedSearch)
    # A transaction of the search's own (chunk_search began it, on this connection, or
    # the atomic block below does): its commit need not wait for the WAL flush. The log
    # row is all it writes, and a crash may lose it; a caller's transaction keeps its
    # own durability (docs/operations.md, "The search log").
    own_transaction = begins_transaction(using) or (
        search_transaction and using == DEFAULT_DB_ALIAS
    )
    try:
        with unpinned_write(), transaction.atomic(using=using):
            if own_transaction:
                with connections[using].cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit = off")
            # An INSERT without RETURNING (save() would return the database defaults):
            # RETURNING needs the new row to pass the read policy too, and a search
            # without a user writes a row that no context without a user may read
            # (docs/security.md, "The search log"). The id is made here (uuid7).
            fields = [f for f in LoggedSearch._meta.local_concrete_fields if not f.generated]
            LoggedSearch._base_manager._insert(  # type: ignore[attr-defined]  # save()'s own insert; the stubs leave it out
                [entry], fields=fields, using=using
            )
    except DatabaseError as error:
        logger.warning(
            "search log not written: %s",
            error,
            extra={"tenant_id": str(tenant_id), "mode": mode},
        )
