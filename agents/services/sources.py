"""Provenance: the chunks an execution retrieved, recorded with a snapshot of each."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError

from agents.models import AgentExecution, ExecutionSource
from agents.services._common import clean
from core.hashing import sha256_hex
from documents.models import Chunk
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef

logger = logging.getLogger(__name__)

_MISSING = object()


def _get(result: Mapping | object, name: str, default: Any = _MISSING) -> Any:
    if isinstance(result, Mapping):
        return result.get(name, default)
    return getattr(result, name, default)


def _result_chunk_id(result: Mapping | object) -> Any:
    chunk = _get(result, "chunk", None)
    if chunk is not None:
        return getattr(chunk, "pk", chunk)
    return _get(result, "chunk_id", None)


def execution_record_sources(
    *, tenant: TenantRef, execution: AgentExecution, results: Iterable[Mapping | object]
) -> list[ExecutionSource]:
    """Record the chunks an execution retrieved: rank, score, hash and content snapshot.

    Each result is a dict or object with `chunk` (or `chunk_id`), `score`, and optionally
    `rank` (default: its 1-based position in `results`) and `chunk_sha256` (default: the
    SHA-256 of the chunk's content; if given it must match, so a chunk that changed since
    retrieval is refused). Chunks are read in the tenant's context: another tenant's chunk
    is not found.
    """
    tenant_id = require_tenant(tenant, execution=execution)
    results = list(results)
    chunk_ids = []
    for result in results:
        chunk = _get(result, "chunk", None)
        if isinstance(chunk, Chunk):
            require_tenant(tenant_id, chunk=chunk)
        chunk_id = _result_chunk_id(result)
        if chunk_id is None:
            raise ValidationError({"chunk": "Every result names its chunk."})
        try:
            chunk_ids.append(uuid.UUID(str(chunk_id)))
        except ValueError:
            raise ValidationError({"chunk": f"{str(chunk_id)[:40]!r} is not a chunk id."}) from None
    if len(set(chunk_ids)) != len(chunk_ids):
        raise ValidationError({"chunk": "A chunk is listed more than once."})

    with tenant_context(tenant_id):
        chunks = Chunk.objects.filter(tenant_id=tenant_id, pk__in=chunk_ids).select_related(
            "document"
        )
        by_id = {chunk.pk: chunk for chunk in chunks}
        missing = [str(chunk_id) for chunk_id in chunk_ids if chunk_id not in by_id]
        if missing:
            raise ValidationError({"chunk": f"Chunks not found: {', '.join(missing)}."})
        recorded = set(
            ExecutionSource.objects.filter(
                tenant_id=tenant_id, execution=execution, chunk_id__in=chunk_ids
            ).values_list("chunk_id", flat=True)
        )
        if recorded:
            raise ValidationError(
                {"chunk": f"Already recorded for this execution: {', '.join(map(str, recorded))}."}
            )

        sources = []
        for position, (result, chunk_id) in enumerate(zip(results, chunk_ids, strict=True), 1):
            chunk = by_id[chunk_id]
            content_sha256 = sha256_hex(chunk.content)
            given_sha256 = _get(result, "chunk_sha256", None)
            if given_sha256 is not None and given_sha256 != content_sha256:
                raise ValidationError(
                    {"chunk_sha256": f"Chunk {chunk_id} changed since it was retrieved."}
                )
            rank = _get(result, "rank", None)
            source = ExecutionSource(
                tenant_id=tenant_id,
                execution=execution,
                chunk=chunk,
                rank=position if rank is None else rank,
                score=_get(result, "score", None),
                chunk_sha256=content_sha256,
                document_id=chunk.document_id,
                document_title=chunk.document.title,
                ordinal=chunk.ordinal,
                content=chunk.content,
            )
            # The execution and chunk were just read in this transaction.
            clean(source, exclude=("tenant", "execution", "chunk"))
            sources.append(source)
        ExecutionSource.objects.bulk_create(sources)
    logger.info(
        "execution sources recorded",
        extra={"execution_id": str(execution.pk), "sources": len(sources)},
    )
    return sources
