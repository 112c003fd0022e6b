"""chunk_search on a tenant switched to its second embedding model (issue 22, point 6).

The 50% tenant is taken through the switch as an operator would: embedding_backfill_start
(which queues the worker's backfill job), embeddings_backfill run here in-process (the
job's own function: the worker adds nothing to what is measured, and the queued job is
deleted afterwards so no worker runs it again), which embeds every chunk with the first
model of EMBEDDING_MODELS (`hashing-v2`, 768-d) and builds its partial HNSW index
CONCURRENTLY, then embedding_model_switch. Each step is timed once (notes
`switch_steps`): the closing note's "model switch on the seeded volume end to end".

Then, query by query interleaved: semantic chunk_search, which now embeds the query
with the new model and reads chunk_embeddings, against the same kNN written by hand on
chunk_embeddings (joined to chunks for the columns a SearchResult carries), sent raw as
the runtime role under the same tenant and with the very settings chunk_search set for
that search (captured from its own statements: ef_search, the iterative scan,
max_scan_tuples, and enable_sort where it turns sorting off). recall@10 of both against
the exact answer (the same rows ordered by `distance + 0`), counted as in
benchmarks.search.

At the end the tenant is rolled back to EMBEDDER's model, the second model forgotten and
embeddings_prune run, which deletes its vectors and drops its index (timed too); the run
stops if the index is still there. Other rows measured afterwards see the tenant as it was.
"""

from __future__ import annotations

import random
import time
from statistics import fmean

import psycopg
from pgvector import Vector
from psycopg import sql

from benchmarks.data import Dataset
from benchmarks.reference import Reference, own_statements
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.search import SEMANTIC_QUERY_WORDS, K, _cycle, _ms, _queries, _recall
from benchmarks.timing import Mismatch, interleave, milliseconds, profile

SWITCHED_GOAL = 2.0  # as the other semantic rows against their raw kNN
KNN_SQL = (
    "SELECT e.chunk_id, c.document_id, c.ordinal, c.content,"
    " e.embedding::vector({dimension}) <=> %(q)s AS distance"
    " FROM chunk_embeddings e JOIN chunks c ON c.tenant_id = e.tenant_id AND c.id = e.chunk_id"
    " WHERE e.tenant_id = %(tenant)s AND e.model = {model}"
    " ORDER BY {order} LIMIT " + str(K)
)
# The model is a constant of the text, as it is of the partial index's predicate: a
# parameter would leave a generic plan (psycopg prepares from the 5th execution) unable
# to prove the predicate and so to use the index.
INDEX_ORDER = "e.embedding::vector({dimension}) <=> %(q)s"
# `+ 0` keeps the index from serving the ORDER BY: every candidate is compared.
EXACT_ORDER = "(e.embedding::vector({dimension}) <=> %(q)s) + 0, e.chunk_id"


def second_model() -> str:
    """The model the tenant is switched to: the first of EMBEDDING_MODELS."""
    from django.conf import settings

    from documents.embeddings import in_chunk_embeddings

    models = [model for model in settings.EMBEDDING_MODELS if in_chunk_embeddings(model)]
    if not models:
        raise SystemExit("--only models needs a model in EMBEDDING_MODELS besides EMBEDDER's")
    return models[0]


def _statement(model: str, dimension: int, order: str) -> sql.Composed:
    return sql.SQL(KNN_SQL).format(
        dimension=sql.Literal(dimension),
        model=sql.Literal(model),
        order=sql.SQL(order.format(dimension=dimension)),
    )


def _project_settings(call) -> dict[str, str]:
    """The settings chunk_search set for its kNN (set_hnsw_iterative_scan's statement),
    from the statements it sent."""
    for statement, params in own_statements(call):
        if "set_config" in statement and params and "hnsw.ef_search" in params:
            read = statement.count("current_setting(")
            pairs = list(params)[read:]
            return dict(zip(pairs[::2], pairs[1::2], strict=True))
    raise Mismatch("chunk_search set no HNSW settings: it did not search through the index")


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _switch(tenant, model: str, owner: psycopg.Connection) -> dict:
    """Backfill and switch the tenant to `model`; the seconds of each step."""
    from documents.services.embedding_models import (
        BACKFILL_TASK,
        embedding_backfill_start,
        embedding_model_switch,
        embeddings_backfill,
    )

    steps = {}
    steps["backfill_start_s"], _ = _timed(
        lambda: embedding_backfill_start(tenant=tenant, model=model)
    )
    steps["backfill_s"], chunks = _timed(lambda: embeddings_backfill(tenant=tenant, model=model))
    # Done here in-process: the job start queued must not run again in a worker later.
    owner.execute(
        "DELETE FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo'", [BACKFILL_TASK]
    )
    steps["switch_s"], _ = _timed(lambda: embedding_model_switch(tenant=tenant, model=model))
    steps["chunks_backfilled"] = chunks
    return steps


def _switch_back(tenant, model: str) -> dict:
    """Back to EMBEDDER's model, the second one forgotten, its vectors and index pruned."""
    from documents.services.embedding_models import (
        embedding_model_forget,
        embedding_model_rollback,
        embeddings_prune,
        model_index_state,
    )

    steps = {}
    steps["rollback_s"], _ = _timed(lambda: embedding_model_rollback(tenant=tenant))
    steps["forget_s"], _ = _timed(lambda: embedding_model_forget(tenant=tenant, model=model))
    steps["prune_s"], _ = _timed(embeddings_prune)
    if model_index_state(model) is not None:
        raise AssertionError(f"the index of {model} is still there after embeddings_prune")
    return steps


def _search(
    dataset: Dataset, ref: Reference, texts: list[str], model: str
) -> tuple[PathResult, dict]:
    from documents.embeddings import model_embedder
    from documents.search import chunk_search
    from documents.services.embedding_models import model_index_name

    tenant, scope = dataset.hot.tenant, [dataset.hot.tenant.pk]
    embedder = model_embedder(model)
    # One query at a time, as chunk_search embeds them: its time is in the project's
    # figure and not the reference's (reported apart, as the other semantic rows do).
    embed_times, vectors = [], {}
    for text in texts:
        elapsed, [vector] = _timed(lambda text=text: embedder.embed([text]))
        embed_times.append(elapsed)
        vectors[text] = Vector(vector)
    knn = _statement(model, embedder.dimension, INDEX_ORDER)
    exact_sql = _statement(model, embedder.dimension, EXACT_ORDER)

    def search(text: str) -> list:
        return chunk_search(tenant=tenant, query=text, k=K, mode="semantic")

    settings = _project_settings(lambda: search(texts[0]))

    def exact_distances(text: str) -> list[float]:
        params = {"q": vectors[text], "tenant": tenant.pk}
        return [row[4] for row in ref.run(scope, [(exact_sql, params)])[0]]

    exact = {text: exact_distances(text) for text in texts}
    found: dict[str, list[float]] = {"project": [], "reference": []}
    fallbacks: list[int] = []
    project_queries, reference_queries = _cycle(texts), _cycle(texts)

    def project() -> int:
        text = next(project_queries)
        hits = search(text)
        found["project"].append(_recall([1.0 - hit.score for hit in hits], exact[text]))
        return len(hits)

    def reference() -> int:
        text = next(reference_queries)
        params = {"q": vectors[text], "tenant": tenant.pk}
        rows = ref.run(scope, [(knn, params)], settings=settings)[0]
        if len(rows) < K:
            # The iterative scan gave up before k rows: answer exactly, as chunk_search does.
            fallbacks.append(1)
            rows = ref.run(scope, [(exact_sql, params)])[0]
        found["reference"].append(_recall([row[4] for row in rows], exact[text]))
        return len(rows)

    title = f"chunk_search semantic, {dataset.hot.label} tenant switched to {model}"
    project_times, reference_times = interleave(
        title, project, reference, rounds=len(texts), warmup=1
    )
    recall = {side: fmean(values) for side, values in found.items()}
    plan = ref.run(
        scope,
        [(sql.SQL("EXPLAIN ") + knn, {"q": vectors[texts[0]], "tenant": tenant.pk})],
        settings=settings,
    )[0]
    result = PathResult(
        key="chunk_search_switched_model",
        group="search",
        title=title,
        reference_title="raw kNN on chunk_embeddings, same settings",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        goal=SWITCHED_GOAL,
        notes={
            "model": model,
            "dimension": embedder.dimension,
            "recall_at_10": recall,
            "hnsw_settings": settings,
            "embedder_ms_per_query": milliseconds(embed_times).median,
            "reference_exact_fallbacks": len(fallbacks),
            "reference_uses_model_index": any(model_index_name(model) in line for (line,) in plan),
            "profile": profile(lambda: search(texts[0])),
        },
    )
    point = {
        "label": f"chunk_search, {dataset.hot.label} tenant on {model}",
        "model": model,
        "recall": recall["project"],
        **_ms(project_times),
        "raw_knn": {"recall": recall["reference"], **_ms(reference_times)},
    }
    return result, point


def measure(
    dataset: Dataset, owner: psycopg.Connection, ref: Reference, scale: Scale, *, seed: int
) -> tuple[list[PathResult], dict]:
    tenant = dataset.hot.tenant
    model = second_model()
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    texts = _queries(rng, dataset.hot, scale.queries, SEMANTIC_QUERY_WORDS)
    steps = _switch(tenant, model, owner)
    try:
        result, point = _search(dataset, ref, texts, model)
    finally:
        steps.update(_switch_back(tenant, model))
    result.notes["switch_steps"] = steps
    return [result], {"switched_model": point, "summary": [point]}
