"""Writes of projects and document versions."""

from __future__ import annotations

import hashlib

from django.db import connection
from django.utils import timezone

from documents.models import DocumentVersion, Project
from tenancy.context import require_tenant, tenant_context


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def project_create(
    *,
    tenant,
    name: str,
    by=None,
    status: str = Project.Status.DRAFT,
    current_step: int = 1,
    language: str = "en",
    metadata: dict | None = None,
) -> Project:
    require_tenant(tenant)
    with tenant_context(tenant):
        project = Project(
            tenant_id=getattr(tenant, "pk", tenant),
            name=name,
            created_by=by,
            status=status,
            current_step=current_step,
            language=language,
            metadata=metadata or {},
        )
        project.full_clean()
        project.save()
    return project


def project_soft_delete(*, tenant, project: Project) -> Project:
    """Hide the project from the default manager; its rows stay until purged."""
    require_tenant(tenant, project=project)
    with tenant_context(tenant):
        if project.deleted_at is None:
            project.deleted_at = timezone.now()
            project.save(update_fields=["deleted_at", "updated_at"])
    return project


def project_restore(*, tenant, project: Project) -> Project:
    require_tenant(tenant, project=project)
    with tenant_context(tenant):
        if project.deleted_at is not None:
            project.deleted_at = None
            project.save(update_fields=["deleted_at", "updated_at"])
    return project


def _lock_version_sequence(project: Project, document_type: str) -> None:
    """Serialise writers of one (project, document type) until the transaction ends.

    A transaction-level advisory lock (safe behind PgBouncer's transaction pooling):
    the next writer reads the latest version only after this one committed, so
    versions come out 1..N with no duplicates or gaps and an unbroken hash chain.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"document_versions:{project.pk}:{document_type}"],
        )


def document_version_create(
    *,
    tenant,
    project: Project,
    document_type: str,
    content: str,
    by=None,
    metadata: dict | None = None,
    readability_score: float | None = None,
    grammar_score: float | None = None,
) -> DocumentVersion:
    """Append the next version of a project's document, or return the latest if unchanged.

    The new version's prev_sha256 is the previous version's content_sha256, so the
    versions of a document form a hash chain that shows tampering.
    """
    require_tenant(tenant, project=project)
    if document_type not in DocumentVersion.DocumentType.values:
        from django.core.exceptions import ValidationError

        raise ValidationError(
            {
                "document_type": f"Unknown document type {document_type!r}; expected one of "
                f"{', '.join(DocumentVersion.DocumentType.values)}."
            }
        )
    content_sha256 = sha256_hex(content)
    with tenant_context(tenant):
        _lock_version_sequence(project, document_type)
        latest = (
            DocumentVersion.objects.filter(project=project, document_type=document_type)
            .order_by("-version")
            .first()
        )
        if latest is not None and latest.content_sha256 == content_sha256:
            return latest
        version = DocumentVersion(
            tenant_id=project.tenant_id,
            project=project,
            document_type=document_type,
            version=(latest.version + 1) if latest else 1,
            content=content,
            content_sha256=content_sha256,
            prev_sha256=latest.content_sha256 if latest else None,
            metadata=metadata or {},
            readability_score=readability_score,
            grammar_score=grammar_score,
            created_by=by,
        )
        version.full_clean(validate_constraints=False)
        version.save()
    return version
