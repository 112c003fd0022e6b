"""Document versions: append-only, hash-chained, one writer per document at a time."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection

from core.db.locks import ADVISORY_XACT_LOCK_SQL
from core.hashing import sha256_hex
from core.validators import validate_storable_arguments
from documents.models import (
    DocumentVersion,
    Project,
)
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User


class VersionConflict(ValidationError):
    """The document has a newer version than the one the write was based on (`latest`)."""

    def __init__(
        self, message: str | dict[str, str], *, latest: DocumentVersion | None = None
    ) -> None:
        super().__init__(message)
        self.latest = latest


def validate_version_content(content: str) -> None:
    """Raise ValidationError naming `content` unless a version could hold it.

    Text, at most DOCUMENT_VERSION_MAX_BYTES of UTF-8, and storable by PostgreSQL: what
    document_version_create checks first, for callers that keep content to write later.
    """
    _check_version_size(content)
    validate_storable_arguments(content=content)


def document_version_create(
    *,
    tenant: TenantRef,
    project: Project,
    document_type: str,
    content: str,
    by: User | None = None,
    metadata: dict | None = None,
    readability_score: float | None = None,
    grammar_score: float | None = None,
    expected_latest: DocumentVersion | None = None,
) -> DocumentVersion:
    """Append the next version of a project's document, or return the latest if unchanged.

    The new version's prev_sha256 is the previous version's content_sha256, so the
    versions of a document form a hash chain that shows tampering.

    `expected_latest` is the version the new content was written from (Wagtail's
    expected-revision check): if another version was written since, VersionConflict
    (a ValidationError naming `expected_latest`) is raised and nothing is written. The
    comparison is made under the document's lock, so it holds against concurrent writers.
    """
    require_tenant(tenant, project=project, expected_latest=expected_latest)
    if document_type not in DocumentVersion.DocumentType.values:
        raise ValidationError(
            {
                "document_type": f"Unknown document type {document_type!r}; expected one of "
                f"{', '.join(DocumentVersion.DocumentType.values)}."
            }
        )
    validate_version_content(content)  # before hashing, which needs UTF-8
    content_sha256 = sha256_hex(content)
    with tenant_context(tenant):
        _lock_document(project, document_type, by)
        latest = _latest_head(project, document_type)
        if expected_latest is not None:
            _check_expected_latest(expected_latest, latest, project, document_type)
        if latest is not None and latest.content_sha256 == content_sha256:
            return DocumentVersion.objects.get(tenant_id=project.tenant_id, pk=latest.pk)
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
        # No lookups: _lock_document checked the project and the author, the id is a
        # new UUIDv7, and the constraints are the database's, behind the document's lock.
        version.full_clean(
            exclude=["tenant", "project", "created_by"],
            validate_unique=False,
            validate_constraints=False,
        )
        version.save()
    return version


def _lock_document(project: Project, document_type: str, by: User | None) -> None:
    """Queue behind the other writers of the document, so versions come out 1..N in one
    chain; raise ValidationError naming `project` or `created_by` if either is gone.

    One statement does what took five: the advisory lock, and the project and author
    lookups of full_clean. The project's row is locked FOR SHARE, the lock the
    versions' project_live trigger takes too: a soft delete or a purge of the project
    (FOR NO KEY UPDATE, FOR UPDATE) waits for the version to commit, or the version
    waits for the delete and the trigger refuses it. (FOR KEY SHARE would not keep a
    soft delete out.)
    """
    author = by.pk if by is not None else None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {ADVISORY_XACT_LOCK_SQL},"
            " %s::uuid IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = %s)"
            " FROM projects WHERE tenant_id = %s AND id = %s FOR SHARE OF projects",
            [
                f"document_versions:{project.pk}:{document_type}",
                author,
                author,
                project.tenant_id,
                project.pk,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        raise ValidationError({"project": f"Project {project.pk} does not exist."})
    if not row[1]:
        raise ValidationError({"created_by": f"User {author} does not exist."})


class _Head(NamedTuple):
    """What appending a version needs of the latest one."""

    pk: uuid.UUID
    version: int
    content_sha256: str


def _latest_head(project: Project, document_type: str) -> _Head | None:
    """The latest version's id, number and hash, read after the document's lock.

    Three columns in plain SQL: the whole row (content included) through a queryset
    cost more than a third of a version's time in Python, for what only the rare
    unchanged or conflicting writes return. Filtered on the tenant too: on Citus that
    routes it to the tenant's shard instead of asking all 32 (a version write took 11x
    one server's time before).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, version, content_sha256 FROM document_versions"
            " WHERE tenant_id = %s AND project_id = %s AND document_type = %s"
            " ORDER BY version DESC LIMIT 1",
            [project.tenant_id, project.pk, document_type],
        )
        row = cursor.fetchone()
    return _Head(*row) if row else None


def _check_expected_latest(
    expected: DocumentVersion,
    latest: _Head | None,
    project: Project,
    document_type: str,
) -> None:
    if (expected.project_id, expected.document_type) != (project.pk, document_type):
        raise ValidationError(
            {"expected_latest": "The expected version is of another project or document type."}
        )
    if latest is None or latest.pk != expected.pk:
        newest = f"v{latest.version}" if latest is not None else "no version"
        raise VersionConflict(
            {
                "expected_latest": f"{document_type} v{expected.version} is no longer the "
                f"latest version: {newest} was written since."
            },
            latest=(
                DocumentVersion.objects.get(tenant_id=project.tenant_id, pk=latest.pk)
                if latest
                else None
            ),
        )


def _check_version_size(content: str) -> None:
    if not isinstance(content, str):
        raise ValidationError({"content": "The content must be text."})
    limit = settings.DOCUMENT_VERSION_MAX_BYTES
    # UTF-8 takes at most 4 bytes a character: most contents need no encoding to pass.
    if len(content) * 4 <= limit:
        return
    size = len(content.encode("utf-8"))
    if size > limit:
        raise ValidationError(
            {"content": f"The content is {size} bytes; a version may hold at most {limit} bytes."}
        )
