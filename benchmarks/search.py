"""chunk_search against a raw HNSW kNN, and HNSW recall@10 against the exact answer.

Queries are words of one of the tenant's own chunks: 16 for semantic search, a sentence
(four-word queries leave so many chunks almost equally near that "the" 10 nearest are a
draw, and recall measures the draw), 4 keywords for full-text and hybrid search, whose
websearch syntax requires every word. They are embedded with the EMBEDDER (the
project's calls embed inside chunk_search; the reference's vectors are embedded
beforehand, and the embedder's time per query is reported apart).

- chunk_search semantic, for tenants holding 1%, 10% and 50% of the chunks (in that
  order, on one connection, so a statement prepared for the small tenant serves the
  big ones after it), against a raw kNN (`ORDER BY embedding <=> q LIMIT k`, the
  vector sent in binary, only the columns a SearchResult carries) under the same
  tenant and the same HNSW settings
  chunk_search uses (documents.search: ef_search, iterative scan, max_scan_tuples),
  held to the index (INDEX_PLAN; the notes confirm the plan used it). Where its
  iterative scan gives up before k rows, it answers exactly, as chunk_search does
  (the notes count how often).
- full-text and hybrid chunk_search against their own statements replayed raw.
- chunk_search hybrid with its search log row against the same search with the write
  skipped (`chunk_search_log`): what logging costs a search.
- recall@10 of the index over an ef_search sweep (every tenant in scope, no iterative
  scan): the curve every vector-search user compares; and recall@10 per tenant share
  of chunk_search and of the raw kNN (means over the queries). A result counts when
  its distance is within the exact 10th distance, so ties do not count as misses.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from statistics import fmean

from pgvector import Vector

from benchmarks.data import Dataset, TenantData
from benchmarks.reference import Reference, Statement, own_statements
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import interleave, milliseconds, profile
from core.ids import uuid7

K = 10
SEMANTIC_QUERY_WORDS = 16
KEYWORD_QUERY_WORDS = 4
SEARCH_GOAL = 2.0
# Required by issue 10: 40, 100, 200; the others draw the rest of the curve.
EF_SWEEP = (10, 20, 40, 100, 200, 400)
COLUMNS = "id, document_id, ordinal, content, embedding <=> %(q)s AS distance"
# The LIMIT is part of the text, not a parameter: once psycopg prepares the statement
# (its 5th execution), a generic plan with an unknown LIMIT sorts the whole table
# instead of using the index.
KNN_SQL = (
    f"SELECT {COLUMNS} FROM chunks WHERE {{where}} AND embedding_model = %(model)s"
    f" ORDER BY embedding <=> %(q)s LIMIT {K}"
)
# `+ 0` keeps the index from serving the ORDER BY: every candidate is compared.
EXACT_SQL = (
    f"SELECT {COLUMNS} FROM chunks WHERE {{where}} AND embedding_model = %(model)s"
    f" ORDER BY (embedding <=> %(q)s) + 0, id LIMIT {K}"
)
HNSW_INDEX = "chunks_embedding_hnsw_idx"
TENANT_WHERE = "tenant_id = %(tenant)s"
# The references are HNSW kNNs: with sorting off the planner cannot choose the exact
# scan instead, as it does on a small table or at a high ef_search, which pgvector
# prices dearer (chunk_search turns sorting off the same way above its threshold).
INDEX_PLAN = {"enable_sort": "off"}
# The sweep measures the index alone: no iterative scan either.
SWEEP_SETTINGS = {**INDEX_PLAN, "hnsw.iterative_scan": "off"}
# Every tenant is in scope: row-level security admits every row.
ALL_WHERE = "embedding IS NOT NULL"


def _queries(rng: random.Random, data: TenantData, count: int, length: int) -> list[str]:
    queries = []
    for _ in range(count):
        words = rng.choice(data.sample_texts).split()
        queries.append(" ".join(rng.sample(words, min(length, len(words)))))
    return queries


def _cycle(items: list) -> Iterator:
    while True:
        yield from items


def _recall(found: list[float], exact: list[float]) -> float:
    """Share of the exact top-k matched by `found` (distances), ties counted as found."""
    if not exact:
        return 1.0
    bound = exact[-1] + 1e-9
    return min(len(exact), sum(1 for distance in found if distance <= bound)) / len(exact)


def chunk_search_settings() -> dict[str, str]:
    """The HNSW settings chunk_search uses for a k-row semantic search."""
    from documents.search import HNSW_ITERATIVE_SCAN, HNSW_MIN_EF_SEARCH, hnsw_max_scan_tuples

    return {
        "hnsw.ef_search": str(max(HNSW_MIN_EF_SEARCH, K)),
        "hnsw.iterative_scan": HNSW_ITERATIVE_SCAN,
        "hnsw.max_scan_tuples": str(hnsw_max_scan_tuples(K)),
    }


class Searcher:
    """Raw kNN and exact queries for one embedder model, on a Reference connection.

    With a `tenant_id` the query is that tenant's (`tenant_ids` should be just it);
    without, it reads every row the `tenant_ids` let through.
    """

    def __init__(self, ref: Reference, model: str) -> None:
        self.ref = ref
        self.model = model

    def _statement(self, template: str, vector: Vector, tenant_id) -> Statement:
        where = ALL_WHERE if tenant_id is None else TENANT_WHERE
        params = {"q": vector, "model": self.model, "tenant": tenant_id}
        return template.format(where=where), params

    def knn(self, tenant_ids, vector, *, settings: dict, tenant_id=None) -> list:
        statement = self._statement(KNN_SQL, vector, tenant_id)
        return self.ref.run(tenant_ids, [statement], settings=settings)[0]

    def uses_index(self, tenant_ids, vector, *, settings: dict, tenant_id=None) -> bool:
        """Whether the kNN's plan is an HNSW index scan (else it is no HNSW reference)."""
        sql, params = self._statement(KNN_SQL, vector, tenant_id)
        plan = self.ref.run(tenant_ids, [("EXPLAIN " + sql, params)], settings=settings)[0]
        return any(HNSW_INDEX in line for (line,) in plan)

    def exact(self, tenant_ids, vector, *, tenant_id=None) -> list[float]:
        """The exact k nearest distances."""
        statement = self._statement(EXACT_SQL, vector, tenant_id)
        return [row[4] for row in self.ref.run(tenant_ids, [statement])[0]]


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _share(
    data: TenantData, searcher: Searcher, texts: list[str], vectors: dict
) -> tuple[PathResult, dict]:
    """chunk_search semantic against the raw kNN for one tenant, with recall and exact times."""
    from documents.search import chunk_search

    tenant, scope = data.tenant, [data.tenant.pk]
    settings = {**chunk_search_settings(), **INDEX_PLAN}
    exact_times, exact = [], []
    for text in texts:
        elapsed, distances = _timed(
            lambda text=text: searcher.exact(scope, vectors[text], tenant_id=tenant.pk)
        )
        exact_times.append(elapsed)
        exact.append(distances)
    found: dict[str, list[list[float]]] = {"project": [], "reference": []}
    fallbacks: list[int] = []
    project_queries, reference_queries = _cycle(texts), _cycle(texts)

    def project() -> int:
        hits = chunk_search(tenant=tenant, query=next(project_queries), k=K, mode="semantic")
        found["project"].append([1.0 - hit.score for hit in hits])
        return len(hits)

    def reference() -> int:
        vector = vectors[next(reference_queries)]
        distances = [
            row[4] for row in searcher.knn(scope, vector, settings=settings, tenant_id=tenant.pk)
        ]
        if len(distances) < K:
            # The iterative scan gave up (max_scan_tuples, or its memory bound) before k
            # rows: like chunk_search, answer exactly, so both sides return the same rows.
            fallbacks.append(1)
            distances = searcher.exact(scope, vector, tenant_id=tenant.pk)
        found["reference"].append(distances)
        return len(distances)

    title = f"chunk_search semantic, {data.label} tenant"
    # Each side takes the queries in the same order, so round n compares query n.
    project_times, reference_times = interleave(
        title, project, reference, rounds=len(texts), warmup=0
    )
    recall = {
        side: fmean(_recall(hits, exact[n]) for n, hits in enumerate(found[side])) for side in found
    }
    result = PathResult(
        key=f"chunk_search_semantic_{round(data.share * 100)}",
        group="search",
        title=title,
        reference_title="raw HNSW kNN, same ef_search",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        goal=SEARCH_GOAL,
        notes={
            "recall_at_10": recall,
            "hnsw_settings": settings,
            "reference_exact_fallbacks": len(fallbacks),
            "profile": profile(
                lambda: chunk_search(tenant=tenant, query=texts[0], k=K, mode="semantic")
            ),
            "reference_uses_hnsw_index": searcher.uses_index(
                scope, vectors[texts[0]], settings=settings, tenant_id=tenant.pk
            ),
        },
    )
    share = {
        "tenant": data.slug,
        "share": data.share,
        "chunk_search": {"recall": recall["project"], **_ms(project_times)},
        "raw_knn": {"recall": recall["reference"], **_ms(reference_times)},
        # What exactness costs at this share.
        "exact": {"recall": 1.0, **_ms(exact_times)},
    }
    return result, share


def _ms(seconds: list[float]) -> dict:
    stats = milliseconds(seconds)
    return {"median_ms": stats.median, "p25_ms": stats.p25, "p75_ms": stats.p75}


def _ef_sweep(dataset: Dataset, searcher: Searcher, texts: list[str], vectors: dict) -> list[dict]:
    """Recall@10 and latency of the index alone at each ef_search, every tenant in scope."""
    scope = dataset.tenant_ids()
    exact = {text: searcher.exact(scope, vectors[text]) for text in texts}
    times: dict[int, list[float]] = {ef: [] for ef in EF_SWEEP}
    recalls: dict[int, list[float]] = {ef: [] for ef in EF_SWEEP}
    for n, text in enumerate(texts):
        # A different ef_search first each time, so none always runs on a cold cache.
        order = EF_SWEEP[n % len(EF_SWEEP) :] + EF_SWEEP[: n % len(EF_SWEEP)]
        for ef in order:
            settings = {**SWEEP_SETTINGS, "hnsw.ef_search": str(ef)}
            elapsed, rows = _timed(
                lambda vector=vectors[text], settings=settings: searcher.knn(
                    scope, vector, settings=settings
                )
            )
            times[ef].append(elapsed)
            recalls[ef].append(_recall([row[4] for row in rows], exact[text]))
    return [{"ef_search": ef, "recall": fmean(recalls[ef]), **_ms(times[ef])} for ef in EF_SWEEP]


def _with_a_new_log_id(statement: Statement) -> Statement:
    """The search log's INSERT (the project's call makes the row's id) with an id of its
    own, as the project's next call would: replayed as captured, its key is taken."""
    sql, params = statement
    if not sql.startswith('INSERT INTO "search_queries" '):
        return statement
    columns = sql[sql.index("(") + 1 : sql.index(")")].split(", ")
    fresh = list(params)
    fresh[columns.index('"id"')] = uuid7()
    return sql, fresh


def _replayed(
    dataset: Dataset, ref: Reference, texts: list[str], mode: str, rounds: int
) -> PathResult:
    """chunk_search in `mode` against its own statements, replayed raw, query by query."""
    from documents.search import chunk_search

    tenant = dataset.hot.tenant

    def search(text: str) -> list:
        return chunk_search(tenant=tenant, query=text, k=K, mode=mode)

    replays: dict[str, list[Statement]] = {
        text: own_statements(lambda t=text: search(t)) for text in texts
    }
    project_queries, reference_queries = _cycle(texts), _cycle(texts)

    def reference() -> int:
        statements = [
            _with_a_new_log_id(statement) for statement in replays[next(reference_queries)]
        ]
        results = ref.run([tenant.pk], statements)
        # The chunk rows the statements returned, fused to k as chunk_search does.
        ids = {row[0] for rows in results for row in rows if len(row) == 5}
        return min(K, len(ids))

    project_times, reference_times = interleave(
        f"chunk_search {mode}",
        lambda: len(search(next(project_queries))),
        reference,
        rounds=rounds,
        warmup=0,
    )
    return PathResult(
        key=f"chunk_search_{mode}",
        group="search",
        title=f"chunk_search {mode}, {dataset.hot.label} tenant",
        reference_title="its statements, raw",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        notes={"profile": profile(lambda: search(texts[0]))},
    )


def measure_log_cost(dataset: Dataset, texts: list[str], rounds: int) -> PathResult:
    """What the search log costs a search: chunk_search (hybrid, the default mode), which
    writes its search_queries row, against the same search with the write skipped
    (documents.search._chunk_search(log=False)), query by query, interleaved. Each call
    is its own transaction, as a request's search outside an atomic block is."""
    from documents.search import _chunk_search, chunk_search

    tenant = dataset.hot.tenant
    logged_queries, unlogged_queries = _cycle(texts), _cycle(texts)

    def logged() -> int:
        return len(chunk_search(tenant=tenant, query=next(logged_queries), k=K, mode="hybrid"))

    def unlogged() -> int:
        return len(
            _chunk_search(
                tenant=tenant,
                query=next(unlogged_queries),
                k=K,
                mode="hybrid",
                project=None,
                documents=None,
                embedder=None,
                user=None,
                filters=None,
                execution=None,
                log=False,
            )
        )

    project_times, reference_times = interleave(
        "chunk_search with its log", logged, unlogged, rounds=rounds, warmup=1
    )
    return PathResult(
        key="chunk_search_log",
        group="search",
        title=f"chunk_search hybrid with its log row, {dataset.hot.label} tenant",
        reference_title="the same search, log write skipped",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
    )


def measure(
    dataset: Dataset, ref: Reference, scale: Scale, *, seed: int
) -> tuple[list[PathResult], dict]:
    from documents.embedding import get_embedder

    embedder = get_embedder()
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    queries = {
        data.slug: _queries(rng, data, scale.queries, SEMANTIC_QUERY_WORDS)
        for data in dataset.measured()
    }
    texts = [text for group in queries.values() for text in group]
    embed_times, vectors = [], {}
    for text in texts:
        elapsed, embedded = _timed(lambda text=text: embedder.embed([text])[0])
        embed_times.append(elapsed)
        vectors[text] = Vector(embedded)
    searcher = Searcher(ref, embedder.model)
    # Smallest tenant first, then the bigger ones, on the one connection chunk_search
    # keeps: the order in which a plan cached for a small tenant (whose chunks are
    # sorted) would be reused for a big one (whose chunks go through the index).
    by_size = sorted(dataset.measured(), key=lambda data: data.share)
    measured = [_share(data, searcher, queries[data.slug], vectors) for data in by_size]
    results = [result for result, _share_data in measured]
    shares = [share for _result, share in measured]
    embedder_ms = milliseconds(embed_times).median
    for result in results:
        result.notes["embedder_ms_per_query"] = embedder_ms
    keywords = _queries(rng, dataset.hot, scale.queries, KEYWORD_QUERY_WORDS)
    results += [
        _replayed(dataset, ref, keywords, mode, scale.queries) for mode in ("fulltext", "hybrid")
    ]
    results.append(measure_log_cost(dataset, keywords, scale.rounds))
    sweep = _ef_sweep(dataset, searcher, queries[dataset.hot.slug], vectors)
    summary = [
        {"label": f"ef_search {point['ef_search']}", **point}
        for point in sweep
        if point["ef_search"] in (40, 100, 200)
    ] + [
        {"label": f"chunk_search, {share['share']:.0%} tenant", **share["chunk_search"]}
        for share in shares
    ]
    return results, {"ef_sweep": sweep, "by_share": shares, "summary": summary}
