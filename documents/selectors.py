"""Reads of projects and document versions.

Selectors that return rows run inside `tenant_context(tenant)` themselves; those that
return a QuerySet must be evaluated where a tenant context is set (a request, or the
caller's `tenant_context`), since row-level security hides everything elsewhere.
"""

from __future__ import annotations

from django.db.models import QuerySet

from documents.models import DocumentVersion, Project
from tenancy.context import require_tenant, tenant_context


def project_list(*, tenant, status: str | None = None) -> QuerySet[Project]:
    """A tenant's live projects, most recently changed first (projects_tenant_live_idx)."""
    projects = Project.objects.for_tenant(require_tenant(tenant)).order_by("-updated_at")
    return projects.filter(status=status) if status else projects


def latest_versions(*, tenant, project: Project) -> dict[str, DocumentVersion]:
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
    *, tenant, project: Project, document_type: str | None = None
) -> list[DocumentVersion]:
    """Every version of a project's documents, oldest first within each type."""
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        versions = DocumentVersion.objects.filter(tenant_id=tenant_id, project=project)
        if document_type:
            versions = versions.filter(document_type=document_type)
        return list(versions.order_by("document_type", "version"))
