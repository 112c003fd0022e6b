"""Reads of projects, document versions, templates and chunks' search hits (search over
chunks: documents.search).

Selectors that return rows run inside `tenant_context(tenant)` themselves; those that
return a QuerySet must be evaluated where a tenant context is set (a request, or the
caller's `tenant_context`), since row-level security hides everything elsewhere.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connections, router
from django.db.models import Q, QuerySet

from documents.models import (
    Chunk,
    DocumentVersion,
    Project,
    ProjectTemplate,
    SearchQuery,
)
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef


def project_list(*, tenant: TenantRef, status: str | None = None) -> QuerySet[Project]:
    """A tenant's live projects, most recently changed first.

    With a status, projects_tenant_live_idx (tenant_id, status, updated_at DESC) WHERE
    deleted_at IS NULL returns them in order; without one, the tenant's live rows are
    sorted (the index cannot give one order across statuses).
    """
    projects = Project.objects.for_tenant(require_tenant(tenant)).order_by("-updated_at")
    return projects.filter(status=status) if status else projects


def latest_versions(*, tenant: TenantRef, project: Project) -> dict[str, DocumentVersion]:
    """The latest version of each document type of a project, keyed by type."""
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        rows = list(
            DocumentVersion.objects.filter(tenant_id=tenant_id, project=project)
            .order_by("document_type", "-version")
            .distinct("document_type")
        )
    return {row.document_type: row for row in rows}


def version_history(
    *, tenant: TenantRef, project: Project, document_type: str | None = None
) -> list[DocumentVersion]:
    """Every version of a project's documents, oldest first within each type."""
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        versions = DocumentVersion.objects.filter(tenant_id=tenant_id, project=project)
        if document_type:
            versions = versions.filter(document_type=document_type)
        return list(versions.order_by("document_type", "version"))


def previous_version(*, tenant: TenantRef, version: DocumentVersion) -> DocumentVersion | None:
    """The version before `version` of the same project and document type, if any."""
    tenant_id = require_tenant(tenant, version=version)
    with tenant_context(tenant_id):
        return DocumentVersion.objects.filter(
            tenant_id=tenant_id,
            project_id=version.project_id,
            document_type=version.document_type,
            version=version.version - 1,
        ).first()


@dataclass(frozen=True)
class VersionDiff:
    """Differences between two versions of one document: content and metadata."""

    old_label: str
    new_label: str
    # difflib.unified_diff lines joined by newlines; empty when the contents are equal.
    text: str
    # {"added": {key: new}, "removed": {key: old}, "changed": {key: {"old": .., "new": ..}}}
    metadata: dict[str, dict]

    @property
    def has_changes(self) -> bool:
        return bool(self.text) or any(self.metadata.values())

    @property
    def lines(self) -> list[tuple[str, str]]:
        """(kind, line) for each line of the diff: kind is add, del, hunk or context.

        What the template documents/version_diff.html colours each line by.
        """
        kinds = {"+": "add", "-": "del", "@": "hunk"}
        return [(kinds.get(line[:1], "context"), line) for line in self.text.splitlines()]


def _version_label(version: DocumentVersion) -> str:
    return f"{version.document_type} v{version.version}"


def _metadata_changes(old: dict, new: dict) -> dict[str, dict]:
    return {
        "added": {key: new[key] for key in sorted(new.keys() - old.keys())},
        "removed": {key: old[key] for key in sorted(old.keys() - new.keys())},
        "changed": {
            key: {"old": old[key], "new": new[key]}
            for key in sorted(old.keys() & new.keys())
            if old[key] != new[key]
        },
    }


def version_diff(*, tenant: TenantRef, old: DocumentVersion, new: DocumentVersion) -> VersionDiff:
    """A unified diff of two versions of the same project's document, plus metadata changes.

    Versions of different projects or document types are refused (ValidationError).
    """
    require_tenant(tenant, old=old, new=new)
    if old.project_id != new.project_id:
        raise ValidationError({"new": "The versions belong to different projects."})
    if old.document_type != new.document_type:
        raise ValidationError(
            {
                "new": f"The versions are of different document types "
                f"({old.document_type}, {new.document_type})."
            }
        )
    old_label, new_label = _version_label(old), _version_label(new)
    return VersionDiff(
        old_label=old_label,
        new_label=new_label,
        text=_unified_diff(old.content, new.content, old_label, new_label),
        metadata=_metadata_changes(old.metadata or {}, new.metadata or {}),
    )


def content_diff(
    *, tenant: TenantRef, base: DocumentVersion, content: str, label: str = "proposed"
) -> VersionDiff:
    """A unified diff from a version to content not (yet) stored as a version, e.g. a
    change proposal's; `label` names the new side. No metadata changes."""
    require_tenant(tenant, base=base)
    old_label = _version_label(base)
    return VersionDiff(
        old_label=old_label,
        new_label=label,
        text=_unified_diff(base.content, content, old_label, label),
        metadata=_metadata_changes({}, {}),
    )


def _unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_label, tofile=new_label, lineterm=""
    )
    return "\n".join(lines)


def templates_find(
    *,
    tenant: TenantRef,
    tags: Sequence[str] | None = None,
    tech_stack: Sequence[str] | None = None,
    complexity: str | None = None,
) -> list[ProjectTemplate]:
    """The shared templates and the tenant's own, by name.

    `tags`: templates carrying all of them (tags @> ...); `tech_stack`: templates
    using any of them (tech_stack && ...). Both are served by the GIN indexes.
    """
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        templates = ProjectTemplate.objects.filter(Q(tenant__isnull=True) | Q(tenant_id=tenant_id))
        if tags:
            templates = templates.filter(tags__contains=list(tags))
        if tech_stack:
            templates = templates.filter(tech_stack__overlap=list(tech_stack))
        if complexity:
            templates = templates.filter(complexity=complexity)
        return list(templates.order_by("name", "id"))


# A chunk's hits in the search log -----------------------------------------------------

CHUNK_HITS_LATEST = 10


@dataclass(frozen=True)
class ChunkHits:
    """How many logged searches returned a chunk, and the latest of them, newest first."""

    count: int
    latest: list[SearchQuery]


# The chunks whose hits chunk_hit_counts counts in one call (a page of a document's chunks).
CHUNK_HIT_COUNTS_MAX = 100


def chunk_hit_counts(*, tenant: TenantRef, chunks: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many logged searches returned each chunk (ids): chunk_hits' count for a page
    of chunks in one statement, each through search_queries_chunk_hits (0 for a chunk
    the caller may not see). At most CHUNK_HIT_COUNTS_MAX chunks."""
    tenant_id = require_tenant(tenant)
    ids = list(dict.fromkeys(chunks))
    if not all(isinstance(chunk_id, uuid.UUID) for chunk_id in ids):
        raise ValidationError({"chunks": "Chunk ids (UUIDs)."})
    if len(ids) > CHUNK_HIT_COUNTS_MAX:
        raise ValidationError({"chunks": f"At most {CHUNK_HIT_COUNTS_MAX} chunks at a time."})
    if not ids:
        return {}
    with tenant_context(tenant_id), connections[router.db_for_read(SearchQuery)].cursor() as cursor:
        cursor.execute(
            "SELECT id, search_queries_chunk_hits(%s, id) FROM unnest(%s::uuid[]) AS id",
            [tenant_id, ids],
        )
        return {chunk_id: count or 0 for chunk_id, count in cursor.fetchall()}


def chunk_hits(
    *, tenant: TenantRef, chunk: Chunk | uuid.UUID, latest: int = CHUNK_HITS_LATEST
) -> ChunkHits:
    """The chunk's hits (a chunk, or its id: a SearchResult's chunk_id): the searches of
    the log (search_queries) that returned it, in the tenant.

    Counted from the log itself through search_queries_chunk_ids_gin (chunk_ids @>
    ARRAY[id]), not kept on the chunk: a counter there would rewrite the chunk's row
    (and its HNSW index entry's heap tuple, and an audit event) on every search. The
    count is what the log still holds: retention and erasure shorten it.

    Every member who sees the chunk gets the whole count, from
    search_queries_chunk_hits (documents.0026): it counts the tenant's searches under
    the owner's bypass, only once the caller's policies show the chunk (0 otherwise).
    `latest` is what the caller may read of the log: a member's own searches, every
    search for the tenant's owners and admins (docs/security.md, "The search log").
    """
    tenant_id = require_tenant(tenant, chunk=chunk if isinstance(chunk, Chunk) else None)
    chunk_id = chunk.pk if isinstance(chunk, Chunk) else chunk
    if not isinstance(chunk_id, uuid.UUID):
        raise ValidationError({"chunk": "A chunk, or its id (a UUID)."})
    if isinstance(latest, bool) or not isinstance(latest, int) or not 0 <= latest <= 100:
        raise ValidationError({"latest": "A whole number from 0 to 100."})
    with tenant_context(tenant_id), connections[router.db_for_read(SearchQuery)].cursor() as cursor:
        cursor.execute("SELECT search_queries_chunk_hits(%s, %s)", [tenant_id, chunk_id])
        (count,) = cursor.fetchone()
        hits = SearchQuery.objects.filter(tenant_id=tenant_id, chunk_ids__contains=[chunk_id])
        return ChunkHits(
            count=count or 0,
            latest=list(hits.defer("chunk_ids", "filters").order_by("-id")[:latest]),
        )
