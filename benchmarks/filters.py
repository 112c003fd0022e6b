"""chunk_search with a metadata filter that keeps 1 %, 10 % or 50 % of the tenant (issue 22).

In the 50% tenant, as the database owner, every knowledge document gets a rank 0-99
(`{"rank": r}`, its place in a seeded shuffle, spread evenly) and every chunk a tier
by its place in id order (`{"tier": "a"}` for 1 % of them, "b" for 9 %, "c" for 40 %,
"d" for the other half); then the chunks are vacuumed and analysed, as autovacuum would.
Two filters per share s:

- on the document's metadata, `{"document.rank": {"lt": s}}`: a range, which chunk_search
  serves from the matching documents (read exactly when they are few, else an HNSW
  iterative scan with the filter);
- on the chunk's metadata, `{"chunk.tier": {"in": [...]}}` with the tiers that make up
  s (["a"], ["a", "b"], ["a", "b", "c"]): JSON containment, which chunks_metadata_gin
  serves (read exactly when the planner expects few, else the HNSW scan).

For each: latency of the filtered semantic chunk_search (k = 10, no user) against the
same search unfiltered in the same tenant (the reference), interleaved query by query;
recall@10 against the exact answer over the chunks the filter keeps (a scan ordered by
distance over rows selected in SQL written here, not through documents/filters.py),
counted as in benchmarks.search (goal >= 0.95). Every result must satisfy the filter
and k must come back (every kept chunk, where fewer), or the run stops. At the end the
metadata is as it was.
"""

from __future__ import annotations

import random
from statistics import fmean

import psycopg
from pgvector import Vector

from benchmarks.data import Dataset
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.search import SEMANTIC_QUERY_WORDS, K, _cycle, _ms, _queries, _recall
from benchmarks.timing import Mismatch, interleave, milliseconds, profile
from tenancy.context import BYPASS_SETTING

SHARES = (1, 10, 50)  # percent of the tenant's chunks the filter keeps
FILTER_GOAL = 1.5
RECALL_GOAL = 0.95
EXACT_SQL = (
    "SELECT (c.embedding <=> %(q)s) + 0 AS distance FROM chunks c JOIN documents d"
    " ON d.tenant_id = c.tenant_id AND d.id = c.document_id"
    " WHERE c.tenant_id = %(tenant)s AND c.embedding_model = %(model)s"
    " AND c.embedding IS NOT NULL AND {where} ORDER BY 1, c.id LIMIT " + str(K)
)
KEPT_SQL = (
    "SELECT c.id FROM chunks c JOIN documents d"
    " ON d.tenant_id = c.tenant_id AND d.id = c.document_id"
    " WHERE c.tenant_id = %(tenant)s AND {where}"
)
WHERE = {
    "document": "(d.metadata ->> 'rank')::int < %(share)s",
    "chunk": "(c.metadata ->> 'bucket')::int < %(share)s",
}
# A chunk's tier from its bucket (0-99): each share s is the tiers of the buckets below s.
TIERS = {1: "a", 10: "b", 50: "c", 100: "d"}


def tiers_below(share: int) -> list[str]:
    return [tier for bound, tier in TIERS.items() if bound <= share]


def filters_for(target: str, share: int) -> dict:
    if target == "document":
        return {"document.rank": {"lt": share}}
    return {"chunk.tier": {"in": tiers_below(share)}}


def _label(owner: psycopg.Connection, tenant_id, seed: int) -> None:
    """Ranks on the tenant's documents, buckets on its chunks, as the owner."""
    with owner.transaction():
        owner.execute("SELECT set_config(%s, 'on', true)", [BYPASS_SETTING])
        documents = [
            row[0]
            for row in owner.execute(
                "SELECT id FROM documents WHERE tenant_id = %s ORDER BY id", [tenant_id]
            ).fetchall()
        ]
        random.Random(seed).shuffle(documents)  # noqa: S311 - benchmark data
        ranks = [(100 * place) // len(documents) for place in range(len(documents))]
        owner.execute(
            "UPDATE documents d SET metadata = d.metadata || jsonb_build_object('rank', r.rank)"
            " FROM unnest(%s::uuid[], %s::int[]) AS r(id, rank)"
            " WHERE d.tenant_id = %s AND d.id = r.id",
            [documents, ranks, tenant_id],
        )
        # The bucket (kept for the exact answer's SQL) and its tier (what the filter asks).
        owner.execute(
            "UPDATE chunks c SET metadata = c.metadata"
            " || jsonb_build_object('bucket', n.bucket, 'tier', CASE WHEN n.bucket < 1 THEN 'a'"
            " WHEN n.bucket < 10 THEN 'b' WHEN n.bucket < 50 THEN 'c' ELSE 'd' END)"
            " FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) %% 100 AS bucket"
            "       FROM chunks WHERE tenant_id = %s) n"
            " WHERE c.tenant_id = %s AND c.id = n.id",
            [tenant_id, tenant_id],
        )
    owner.execute("VACUUM ANALYZE chunks, documents")


def _unlabel(owner: psycopg.Connection, tenant_id) -> None:
    with owner.transaction():
        owner.execute("SELECT set_config(%s, 'on', true)", [BYPASS_SETTING])
        owner.execute(
            "UPDATE documents SET metadata = metadata - 'rank' WHERE tenant_id = %s", [tenant_id]
        )
        owner.execute(
            "UPDATE chunks SET metadata = metadata - 'bucket' - 'tier' WHERE tenant_id = %s",
            [tenant_id],
        )
    owner.execute("VACUUM ANALYZE chunks, documents")


def _as_owner(owner: psycopg.Connection, sql: str, params: dict) -> list[tuple]:
    """Rows read by the database owner with the bypass: the rows, not a policy."""
    with owner.transaction():
        owner.execute("SELECT set_config(%s, 'on', true)", [BYPASS_SETTING])
        return owner.execute(sql, params).fetchall()


def _measure_one(
    dataset: Dataset,
    owner: psycopg.Connection,
    target: str,
    share: int,
    texts: list[str],
    vectors: dict[str, Vector],
    model: str,
) -> tuple[PathResult, dict]:
    from documents.search import chunk_search

    tenant = dataset.hot.tenant
    params = {"tenant": tenant.pk, "share": share, "model": model}
    where = WHERE[target]
    kept = {row[0] for row in _as_owner(owner, KEPT_SQL.format(where=where), params)}
    exact = {
        text: [
            distance
            for (distance,) in _as_owner(
                owner, EXACT_SQL.format(where=where), {**params, "q": vectors[text]}
            )
        ]
        for text in texts
    }
    filters = filters_for(target, share)
    label = f"{target} metadata keeps {share}%"
    found: list[float] = []
    filtered_queries, plain_queries = _cycle(texts), _cycle(texts)

    def filtered() -> int:
        text = next(filtered_queries)
        hits = chunk_search(tenant=tenant, query=text, k=K, mode="semantic", filters=filters)
        outside = [hit.chunk_id for hit in hits if hit.chunk_id not in kept]
        if outside:
            raise Mismatch(f"chunk_search returned chunks outside the filter {outside} ({label})")
        if len(hits) != min(K, len(kept)):
            raise Mismatch(f"chunk_search returned {len(hits)} of {K} chunks ({label})")
        found.append(_recall([1.0 - hit.score for hit in hits], exact[text]))
        return len(hits)

    def unfiltered() -> int:
        return len(chunk_search(tenant=tenant, query=next(plain_queries), k=K, mode="semantic"))

    title = f"chunk_search semantic, {label} of the 50% tenant"
    # At the tiny scale 1% of the tenant can be fewer than k chunks: all of them come back.
    filtered_times, plain_times = interleave(
        title, filtered, unfiltered, rounds=len(texts), warmup=1, same_rows=len(kept) >= K
    )
    recall = fmean(found)
    result = PathResult(
        key=f"chunk_search_filter_{target}_{share}",
        group="search",
        title=title,
        reference_title="unfiltered, same tenant",
        unit="ms",
        project=milliseconds(filtered_times),
        reference=milliseconds(plain_times),
        goal=FILTER_GOAL,
        notes={
            "recall_at_10": recall,
            "recall_goal": RECALL_GOAL,
            "filters": filters,
            "kept_chunks": len(kept),
            "profile": profile(
                lambda: chunk_search(
                    tenant=tenant, query=texts[0], k=K, mode="semantic", filters=filters
                )
            ),
        },
    )
    point = {
        "target": target,
        "share": share,
        "kept_chunks": len(kept),
        "recall": recall,
        "goal": RECALL_GOAL,
        **_ms(filtered_times),
        "unfiltered": _ms(plain_times),
    }
    return result, point


def measure(
    dataset: Dataset, owner: psycopg.Connection, scale: Scale, *, seed: int
) -> tuple[list[PathResult], dict]:
    from documents.embedding import get_embedder

    data = dataset.hot
    embedder = get_embedder()
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    texts = _queries(rng, data, scale.queries, SEMANTIC_QUERY_WORDS)
    embedded = embedder.embed(texts)
    vectors = {text: Vector(vector) for text, vector in zip(texts, embedded, strict=True)}
    results, points = [], []
    _label(owner, data.tenant.pk, seed)
    try:
        for target in ("document", "chunk"):
            for share in SHARES:
                result, point = _measure_one(
                    dataset, owner, target, share, texts, vectors, embedder.model
                )
                results.append(result)
                points.append(point)
    finally:
        _unlabel(owner, data.tenant.pk)
    summary = [
        {"label": f"chunk_search, {p['target']} filter keeps {p['share']}%", **p} for p in points
    ]
    return results, {"by_filter_share": points, "summary": summary}
