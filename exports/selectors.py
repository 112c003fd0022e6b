"""Reads of exports: those holding a version built on changed sources."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL

from documents.models import DocumentVersion, Project
from exports.models import Export
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef


@dataclass(frozen=True)
class StaleExport:
    """An export whose file holds versions built on changed sources, and those versions."""

    export: Export
    versions: list[DocumentVersion]


def holding_versions(exports: QuerySet[Export], versions: list[DocumentVersion]) -> QuerySet:
    """The exports whose manifest lists one of `versions` (GIN on manifest)."""
    if not versions:
        return exports.none()
    holds = Q()
    for version in versions:
        holds |= Q(manifest__contains={"documents": [{"version_id": str(version.pk)}]})
    return exports.filter(holds)


def holds_changed_version() -> RawSQL:
    """Whether an export's file holds a version built on changed sources: an annotation
    of a queryset of exports (the admin's badge and filter). The versions are read by the
    export's tenant and project (docversions_tenant_proj_idx; one shard on Citus); a
    manifest's documents that are not objects name no version."""
    return RawSQL(
        "EXISTS (SELECT 1 FROM document_versions v WHERE v.tenant_id = exports.tenant_id "
        "AND v.project_id = exports.project_id AND v.sources_changed_at IS NOT NULL "
        "AND v.id::text IN (SELECT d ->> 'version_id' FROM jsonb_array_elements("
        "CASE WHEN jsonb_typeof(exports.manifest -> 'documents') = 'array' "
        "THEN exports.manifest -> 'documents' ELSE '[]'::jsonb END) d "
        "WHERE jsonb_typeof(d) = 'object'))",
        [],
        output_field=BooleanField(),
    )


def manifest_version_ids(export: Export) -> set[str]:
    """The ids of the versions an export's file holds, from its manifest."""
    documents = export.manifest.get("documents") if isinstance(export.manifest, dict) else None
    return {
        str(entry["version_id"])
        for entry in documents or []
        if isinstance(entry, dict) and entry.get("version_id")
    }


def exports_on_changed_sources(*, tenant: TenantRef, project: Project) -> list[StaleExport]:
    """The project's exports whose file holds a version built on changed sources
    (`sources_changed_at`, set by agents' stale-source triggers), newest first, each with
    those versions. As the user of the surrounding scope may see them."""
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        versions = list(
            DocumentVersion.objects.filter(
                tenant_id=tenant_id, project=project, sources_changed_at__isnull=False
            ).defer("content")
        )
        exports = holding_versions(
            Export.objects.filter(tenant_id=tenant_id, project=project), versions
        ).order_by("-created_at", "-id")
        by_id = {str(version.pk): version for version in versions}
        return [
            StaleExport(
                export=export,
                versions=[by_id[i] for i in sorted(manifest_version_ids(export)) if i in by_id],
            )
            for export in exports
        ]
