"""Comparing two embedding models on a tenant's own searches, to decide a switch
(`manage.py compare_embedding_models`; docs/operations.md, "Switching embedding models").

The last logged queries of the tenant that kept their text (search_queries.query) are run
again, semantic, with the tenant's current model and with the other one: overlap@k says
how much of each answer the other model also returns, and both models' latencies are
measured on the same queries. The searches run as a job of the tenant (every chunk
visible, restricted ones too) and are not logged themselves.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy
from django.core.exceptions import ValidationError

from core.validators import require_count
from documents.embeddings import model_embedder
from documents.models import SearchQuery
from documents.search import SEARCH_MAX_K, _chunk_search
from documents.services.embedding_models import current_model, missing_vectors
from tenancy.context import job_scope, require_tenant, tenant_context
from tenancy.models import TenantRef

COMPARE_MAX_SAMPLE = 1000
COMPARE_JOB = "documents.compare_embedding_models"


@dataclass(frozen=True)
class ModelComparison:
    current: str
    other: str
    queries: int
    k: int
    overlaps: list[float]
    latencies_ms: dict[str, list[float]]

    @property
    def overlap_mean(self) -> float:
        return float(numpy.mean(self.overlaps))

    @property
    def overlap_min(self) -> float:
        return float(numpy.min(self.overlaps))

    def latency(self, model: str, percentile: float) -> float:
        return float(numpy.percentile(self.latencies_ms[model], percentile))


def compare_models(
    *, tenant: TenantRef, model: str, sample: int = 50, k: int = 10
) -> ModelComparison:
    """Run the tenant's last `sample` logged queries with its current model and with
    `model`; ValidationError naming the field for a bad argument, a model the tenant
    already searches, one whose backfill is not complete, or no query with its text."""
    tenant_id = require_tenant(tenant)
    require_count("sample", sample, COMPARE_MAX_SAMPLE)
    require_count("k", k, SEARCH_MAX_K)
    other = model_embedder(model)
    with job_scope(COMPARE_JOB, tenant_id), tenant_context(tenant_id):
        current = model_embedder(current_model(tenant_id))
        if other.model == current.model:
            raise ValidationError(
                {"model": f"The tenant searches with {model} already: name the other model."}
            )
        for embedder in (current, other):
            if missing := missing_vectors(tenant_id, embedder.model):
                raise ValidationError(
                    {
                        "model": f"{missing} chunk(s) have no {embedder.model} vector: finish "
                        "its backfill first, or its answers would lack them."
                    }
                )
        queries = list(
            SearchQuery.objects.filter(tenant_id=tenant_id)
            .exclude(query="")
            .order_by("-id")
            .values_list("query", flat=True)[:sample]
        )
    if not queries:
        raise ValidationError(
            {
                "sample": "No logged search of the tenant kept its query text: with "
                "SEARCH_LOG_QUERY_TEXT off only hashes are logged. Turn it on and let "
                "searches be logged, then compare."
            }
        )
    latencies: dict[str, list[float]] = {current.model: [], other.model: []}
    overlaps = []
    with job_scope(COMPARE_JOB, tenant_id):
        # One search each first, not counted: the first search of a model pays for
        # loading its index pages and its embedder.
        for embedder in (current, other):
            _run(tenant_id, queries[0], k, embedder)
        for number, query in enumerate(queries):
            # Alternating which model goes first, so neither always finds the other's
            # pages in the cache.
            order = (current, other) if number % 2 == 0 else (other, current)
            answers = {}
            for embedder in order:
                started = time.perf_counter()
                answers[embedder.model] = _run(tenant_id, query, k, embedder)
                latencies[embedder.model].append((time.perf_counter() - started) * 1000)
            a, b = answers[current.model], answers[other.model]
            size = min(k, max(len(a), len(b)))
            overlaps.append(len(set(a) & set(b)) / size if size else 1.0)
    return ModelComparison(current.model, other.model, len(queries), k, overlaps, latencies)


def _run(tenant_id: uuid.UUID, query: str, k: int, embedder) -> list[uuid.UUID]:
    results = _chunk_search(
        tenant=tenant_id,
        query=query,
        k=k,
        mode="semantic",
        project=None,
        documents=None,
        embedder=embedder,
        user=None,
        filters=None,
        execution=None,
        log=False,
    )
    return [result.chunk_id for result in results]
