"""Deleting a tenant's knowledge documents by a metadata filter, with a dry run."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count

from core.jobs import JobSummary
from documents.filters import FIELD, parse_filters
from documents.models import Chunk, Document, Project
from documents.services.uploads import document_delete
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

# Titles a report lists before "and N more".
REPORT_TITLES = 20


@dataclass(frozen=True)
class FilteredDeletion(JobSummary):
    """The documents a filter matched: deleted or, on a dry run, that would be."""

    tenant_id: uuid.UUID
    filters: dict
    # (id, title, chunks) of each matching document, oldest first.
    documents: list[tuple[uuid.UUID, str, int]] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return sum(chunks for _id, _title, chunks in self.documents)

    def report(self) -> list[str]:
        verb = "Would delete" if self.dry_run else "Deleted"
        lines = [
            f"{verb} {len(self.documents)} knowledge document(s) with {self.chunks} chunk(s)"
            f" of tenant {self.tenant_id} matching {self.filters}."
        ]
        lines += [
            f"  {document_id}  {title} ({chunks} chunks)"
            for document_id, title, chunks in self.documents[:REPORT_TITLES]
        ]
        if len(self.documents) > REPORT_TITLES:
            lines.append(f"  ... and {len(self.documents) - REPORT_TITLES} more.")
        return lines


def documents_delete_by_filter(
    *,
    tenant: TenantRef,
    filters: dict,
    project: Project | None = None,
    by: User | None = None,
    dry_run: bool = False,
) -> FilteredDeletion:
    """Delete the tenant's knowledge documents whose metadata matches `filters`.

    `filters` is the grammar of chunk_search (documents/filters.py) with `document.` keys
    only: a document matches on its own metadata. At least one condition: an empty filter
    would match every document. Optionally within `project`. Runs as `by` (the documents
    they may not see are neither matched nor deleted; without a user, unrestricted ones
    only, unless the caller holds the system bypass, as the delete_documents command does).
    Each document goes through document_delete, in one transaction: its chunks with it,
    its file once the deletion commits. A dry run reads the same documents and deletes
    nothing. ValidationError on `filters` naming the key for a malformed filter.
    """
    metadata = parse_filters(filters)
    if not metadata:
        raise ValidationError(
            {FIELD: "Give at least one condition: an empty filter would match every document."}
        )
    chunk_keys = sorted({condition.key for condition in metadata.of("chunk")})
    if chunk_keys:
        raise ValidationError(
            {
                FIELD: f"{chunk_keys[0]!r}: documents are deleted by their own metadata; "
                "use 'document.' keys."
            }
        )
    tenant_id = require_tenant(tenant, project=project)
    with transaction.atomic(), tenant_context(tenant_id, user=by):
        matching = Document.objects.filter(metadata.document_q(through=""), tenant_id=tenant_id)
        if project is not None:
            matching = matching.filter(project_id=project.pk)
        documents = list(matching.order_by("created_at", "id").values_list("pk", "title"))
        # Counted apart: a GROUP BY the document's id alone is refused on Citus, where the
        # primary key is (tenant_id, id).
        counts = dict(
            Chunk.objects.filter(tenant_id=tenant_id, document_id__in=[pk for pk, _ in documents])
            .values_list("document_id")
            .annotate(chunks=Count("id"))
            .values_list("document_id", "chunks")
        )
        found = [(pk, title, counts.get(pk, 0)) for pk, title in documents]
        if not dry_run:
            for document_id, _title, _chunks in found:
                document_delete(
                    tenant=tenant_id, document=Document(pk=document_id, tenant_id=tenant_id)
                )
    summary = FilteredDeletion(
        dry_run=dry_run, tenant_id=tenant_id, filters=dict(filters), documents=found
    )
    logger.info(
        "documents deleted by filter" if not dry_run else "documents matched by filter (dry run)",
        extra={"tenant_id": str(tenant_id), "documents": len(found), "chunks": summary.chunks},
    )
    return summary
