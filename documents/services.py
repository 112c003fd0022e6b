"""Writes of projects, document versions, project templates, knowledge documents and chunks."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import mimetypes
import os
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.db.models import Count, Q
from django.db.models.deletion import Collector
from django.utils import timezone
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg.types import TypeInfo

from core.db import ADVISORY_XACT_LOCK_SQL, require_sees_every_row
from core.embedding import Embedder, get_embedder
from core.files import OrphanSweep, delete_file, sweep_orphan_folders
from core.hashing import sha256_hex
from core.ids import uuid7
from core.models import TransactionNow
from core.validators import unstorable, validate_storable_arguments
from documents import templating
from documents.chunking import has_tokens, resolve_chunking, split_text
from documents.embeddings import check_embedder_dimension
from documents.models import (
    Chunk,
    Document,
    DocumentVersion,
    Project,
    ProjectTemplate,
    TemplateComplexity,
)
from tenancy.context import require_tenant, system_context, tenant_context

logger = logging.getLogger(__name__)


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
            _save_deleted_at(project)
    return project


def project_restore(*, tenant, project: Project) -> Project:
    require_tenant(tenant, project=project)
    with tenant_context(tenant):
        if project.deleted_at is not None:
            project.deleted_at = None
            _save_deleted_at(project)
    return project


def _save_deleted_at(project: Project) -> None:
    project.full_clean()
    project.save(update_fields=["deleted_at"])
    # The trigger set updated_at; show the caller the stored value.
    project.refresh_from_db(fields=["updated_at"])


class VersionConflict(ValidationError):
    """The document has a newer version than the one the write was based on (`latest`)."""

    def __init__(self, message, *, latest: DocumentVersion | None = None):
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
    tenant,
    project: Project,
    document_type: str,
    content: str,
    by=None,
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
            return DocumentVersion.objects.get(pk=latest.pk)
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


def _lock_document(project: Project, document_type: str, by) -> None:
    """Queue behind the other writers of the document, so versions come out 1..N in one
    chain; raise ValidationError naming `project` or `created_by` if either is gone.

    One statement does what took five: the advisory lock, and the project and author
    lookups of full_clean. The project's row is locked FOR KEY SHARE, so it cannot be
    deleted before the version commits.
    """
    author = getattr(by, "pk", by)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {ADVISORY_XACT_LOCK_SQL},"
            " %s::uuid IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = %s)"
            " FROM projects WHERE id = %s FOR KEY SHARE OF projects",
            [f"document_versions:{project.pk}:{document_type}", author, author, project.pk],
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
    unchanged or conflicting writes return.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, version, content_sha256 FROM document_versions"
            " WHERE project_id = %s AND document_type = %s ORDER BY version DESC LIMIT 1",
            [project.pk, document_type],
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
            latest=DocumentVersion.objects.get(pk=latest.pk) if latest else None,
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


# --- Purge of soft-deleted projects ------------------------------------------------


@dataclass(frozen=True)
class PurgeSummary:
    """What projects_purge_deleted removed, or would remove on a dry run."""

    cutoff: datetime
    applied: bool
    # Tenant slug -> projects purged.
    projects_by_tenant: dict[str, int]
    # Model label ("documents.DocumentVersion") -> rows deleted with the projects.
    rows_by_model: dict[str, int]

    @property
    def total_projects(self) -> int:
        return sum(self.projects_by_tenant.values())


def _rows_to_delete(queryset) -> dict[str, int]:
    """Rows a delete() of the queryset would remove, per model, without deleting them."""
    collector = Collector(using=DEFAULT_DB_ALIAS, origin=queryset)
    collector.collect(queryset)
    counts: Counter[str] = Counter()
    for fast in collector.fast_deletes:
        counts[fast.model._meta.label] += fast.count()
    for model, instances in collector.data.items():
        counts[model._meta.label] += len(instances)
    return {label: count for label, count in counts.items() if count}


def projects_purge_deleted(
    *, older_than: timedelta, apply: bool, now: datetime | None = None
) -> PurgeSummary:
    """Delete projects soft-deleted before `now - older_than`, in every tenant.

    A system job: runs in system_context (the logged bypass of row-level security), so
    it must not be called inside a transaction. Deleting cascades through the ORM and
    the database to versions, agent executions and exports; knowledge documents stay
    with the tenant (their project becomes NULL). Without `apply` nothing is deleted
    and the summary says what would be. Idempotent: purged rows are gone. Raises
    ImproperlyConfigured where the bypass cannot see every project (no DATABASE_OWNER_URL).
    """
    if older_than < timedelta(0):
        raise ValidationError({"older_than": "older_than must not be negative."})
    cutoff = (now or timezone.now()) - older_than
    with system_context(f"purge_deleted: projects deleted before {cutoff.isoformat()}"):
        # Seeing no project, it would report nothing to purge; say why instead.
        require_sees_every_row(Project._meta.db_table, job="projects_purge_deleted")
        doomed = Project.all_objects.filter(deleted_at__lt=cutoff)
        if apply:
            # Lock first: a project restored meanwhile no longer matches and is kept.
            ids = list(doomed.select_for_update().values_list("id", flat=True))
            doomed = Project.all_objects.filter(id__in=ids)
        projects_by_tenant = {
            row["tenant__slug"]: row["projects"]
            for row in doomed.order_by("tenant__slug")
            .values("tenant__slug")
            .annotate(projects=Count("id"))
        }
        if apply:
            _total, rows_by_model = doomed.delete()
            rows_by_model = {label: n for label, n in rows_by_model.items() if n}
        else:
            rows_by_model = _rows_to_delete(doomed)
    logger.info(
        "purge_deleted %s",
        "applied" if apply else "dry run",
        extra={
            "cutoff": cutoff.isoformat(),
            "projects_by_tenant": projects_by_tenant,
            "rows_by_model": rows_by_model,
        },
    )
    return PurgeSummary(
        cutoff=cutoff,
        applied=apply,
        projects_by_tenant=projects_by_tenant,
        rows_by_model=rows_by_model,
    )


# --- Project templates -------------------------------------------------------------


def _clean_names(value: Iterable[str] | None) -> list[str]:
    """A list of distinct non-blank strings, in the given order."""
    names: list[str] = []
    for item in value or ():
        item = str(item).strip()
        if item and item not in names:
            names.append(item)
    return names


def _validate_template_files(files: object, declared: set[str]) -> None:
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and name and isinstance(text, str) for name, text in files.items()
    ):
        raise ValidationError({"files": "files must map file names to text."})
    errors = []
    types: dict[str, str] = {}
    for name, text in files.items():
        try:
            used = templating.placeholders(text)
        except ValueError as error:
            errors.append(f"{name}: {error}.")
            continue
        undeclared = sorted(set(used) - declared - set(templating.BUILTIN_VARIABLES))
        if undeclared:
            errors.append(f"{name}: undeclared variables {', '.join(undeclared)}.")
        document_type = templating.document_type_for(name)
        if document_type in types:
            errors.append(f"{name} and {types[document_type]} both become the {document_type}.")
        elif document_type:
            types[document_type] = name
    if errors:
        raise ValidationError({"files": errors})


def project_template_create(
    *,
    tenant=None,
    name: str,
    files: dict[str, str],
    description: str = "",
    required_variables: Sequence[str] = (),
    optional_variables: Sequence[str] = (),
    tech_stack: Sequence[str] = (),
    tags: Sequence[str] = (),
    complexity: str = TemplateComplexity.SIMPLE,
    setup_minutes: int = 0,
) -> ProjectTemplate:
    """A template of `tenant`, or with tenant=None a template shared by all tenants.

    Files map a file name to text with `{variable}` placeholders; "about.md",
    "specification.md", "architecture.md" and "plan.md" (any extension) become the
    project's first document versions. Every placeholder must be declared (or be
    `project_name`). Shared templates are written by system jobs: tenant=None runs
    in system_context, so not inside a transaction of the runtime role.
    """
    required = _clean_names(required_variables)
    optional = _clean_names(optional_variables)
    errors = {}
    bad = [n for n in required + optional if not templating.VARIABLE_NAME_RE.match(n)]
    if bad:
        errors["required_variables"] = f"Not valid variable names: {', '.join(bad)}."
    reserved = sorted(set(required + optional) & set(templating.BUILTIN_VARIABLES))
    if reserved:
        errors["required_variables"] = f"Always provided, not declarable: {', '.join(reserved)}."
    both = sorted(set(required) & set(optional))
    if both:
        errors["optional_variables"] = f"Both required and optional: {', '.join(both)}."
    if errors:
        raise ValidationError(errors)
    _validate_template_files(files, set(required + optional))
    template = ProjectTemplate(
        tenant_id=getattr(tenant, "pk", tenant),
        name=name,
        description=description,
        files=files,
        required_variables=required,
        optional_variables=optional,
        tech_stack=_clean_names(tech_stack),
        tags=_clean_names(tags),
        complexity=complexity,
        setup_minutes=setup_minutes,
    )
    if tenant is None:
        scope = system_context(f"project_template_create: shared template {name!r}")
    else:
        scope = tenant_context(require_tenant(tenant))
    with scope:
        template.full_clean()
        template.save()
    return template


def _template_variables(template: ProjectTemplate, variables: dict) -> dict[str, str]:
    """The template's variables filled from `variables`, refusing missing and unknown ones."""
    if not isinstance(variables, dict):
        raise ValidationError({"variables": "variables must be a dict of names to values."})
    validate_storable_arguments(variables=variables)
    given = {name: value for name, value in variables.items() if value not in (None, "")}
    declared = set(template.required_variables) | set(template.optional_variables)
    errors = []
    missing = [name for name in template.required_variables if name not in given]
    if missing:
        errors.append(f"Missing required variables: {', '.join(missing)}.")
    unknown = sorted(str(name) for name in variables if name not in declared)
    if unknown:
        errors.append(f"Unknown variables: {', '.join(unknown)}.")
    if errors:
        raise ValidationError({"variables": errors})
    return {name: str(given.get(name, "")) for name in sorted(declared)}


def project_create_from_template(
    *,
    tenant,
    template: ProjectTemplate,
    name: str,
    variables: dict,
    by=None,
    language: str = "en",
) -> Project:
    """A new project whose documents are the template's files rendered with `variables`.

    Files named after a document type become version 1 of that document; the others
    are kept, rendered, in project.metadata["template"]["files"]. Missing required
    and unknown variables are refused (ValidationError on "variables"); missing
    optional ones render as empty text. All or nothing.
    """
    tenant_id = require_tenant(tenant)
    if template.tenant_id not in (None, tenant_id):
        raise ValidationError({"template": "template belongs to another tenant."})
    values = _template_variables(template, variables)
    context = {**values, "project_name": name}
    documents, other_files = {}, {}
    for file_name, text in sorted(template.files.items()):
        rendered = templating.render(text, context)
        document_type = templating.document_type_for(file_name)
        if document_type:
            documents[document_type] = rendered
        else:
            other_files[file_name] = rendered
    metadata = {
        "template": {
            "id": str(template.pk),
            "name": template.name,
            "variables": values,
            "files": other_files,
        }
    }
    with tenant_context(tenant_id):
        project = project_create(
            tenant=tenant_id, name=name, by=by, language=language, metadata=metadata
        )
        for document_type in DocumentVersion.DocumentType.values:
            if document_type in documents:
                document_version_create(
                    tenant=tenant_id,
                    project=project,
                    document_type=document_type,
                    content=documents[document_type],
                    by=by,
                    metadata={"source": "template", "template_id": str(template.pk)},
                )
    return project


# --- Knowledge documents and chunks ------------------------------------------------

# Texts per call to the embedder while ingesting.
EMBED_BATCH_SIZE = 64
# Chunks per transaction while re-embedding a tenant.
REEMBED_BATCH_SIZE = 256
ERROR_MESSAGE_MAX_LENGTH = 2000
# Uploaded files live under documents/<tenant_id>/<document_id>/ in the default storage.
DOCUMENTS_FOLDER = "documents"


class IngestionError(Exception):
    """A document could not be turned into chunks; the message is stored on the document."""


class _Superseded(Exception):
    """Another worker moved the document on while this one was processing it."""


def _document_storage_key(tenant_id: uuid.UUID, document_id: uuid.UUID) -> str:
    # Generated, never from user input: a file name cannot pick or overwrite a path.
    return f"{DOCUMENTS_FOLDER}/{tenant_id}/{document_id}/{uuid.uuid4().hex}"


def _max_upload_bytes() -> int:
    return settings.DOCUMENT_MAX_UPLOAD_BYTES


def _too_large(field_name: str, size: int | None, limit: int) -> ValidationError:
    found = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return ValidationError(
        {field_name: f"The {field_name} is {found}; documents may hold at most {limit} bytes."}
    )


def _measure_upload(file: File, limit: int) -> tuple[File, int, str]:
    """The file to store, its size and hex SHA-256, read chunk by chunk up to `limit` bytes.

    A seekable file is read again by the storage, so only one chunk is in memory at a
    time; a stream that cannot rewind is kept (at most `limit` bytes) and stored from memory.
    """
    try:
        declared = file.size
    except (AttributeError, OSError, ValueError):  # a stream that cannot tell its size
        declared = None
    if declared is not None and declared > limit:
        raise _too_large("file", declared, limit)
    rewinds = file.seekable()
    kept: list[bytes] = []
    # Streaming needs an incremental digest; it matches core.hashing.sha256_hex of the bytes.
    digest = hashlib.sha256()
    size = 0
    for chunk in file.chunks():
        size += len(chunk)
        if size > limit:
            raise _too_large("file", None, limit)
        digest.update(chunk)
        if not rewinds:
            kept.append(chunk)
    return (file if rewinds else ContentFile(b"".join(kept))), size, digest.hexdigest()


def document_create(
    *,
    tenant,
    title: str = "",
    text: str | None = None,
    file: File | None = None,
    project: Project | None = None,
    content_type: str | None = None,
    metadata: dict | None = None,
    by=None,
) -> Document:
    """Store a knowledge document's bytes (from `text` or an uploaded `file`) as uploaded.

    The bytes go to the `default` storage under a generated key; the row records
    their size, SHA-256 and content type. More than settings.DOCUMENT_MAX_UPLOAD_BYTES
    is refused (ValidationError on "file" or "text") before anything is stored.
    document_process() makes the chunks. Should the caller's transaction roll back,
    the stored file is left for documents_sweep_orphan_files.
    """
    tenant_id = require_tenant(tenant, project=project)
    if (text is None) == (file is None):
        raise ValidationError({"file": "Give either text or file, not both or neither."})
    limit = _max_upload_bytes()
    if text is not None:
        validate_storable_arguments(text=text)  # an indexed text becomes chunks: text columns
        data = text.encode("utf-8")
        if len(data) > limit:
            raise _too_large("text", len(data), limit)
        content, size, sha256 = ContentFile(data), len(data), sha256_hex(data)
        content_type = content_type or "text/plain"
    else:
        content, size, sha256 = _measure_upload(file, limit)
        file_name = os.path.basename(file.name or "")
        title = title or file_name
        content_type = (
            content_type
            or getattr(file, "content_type", None)
            or mimetypes.guess_type(file_name)[0]
            or "application/octet-stream"
        )
    if not title:
        raise ValidationError({"title": "A title is required for a document from text."})
    document = Document(
        id=uuid7(),
        tenant_id=tenant_id,
        project=project,
        title=title,
        content_type=content_type,
        size_bytes=size,
        sha256=sha256,
        metadata=metadata or {},
        created_by=by,
    )
    document.storage_key = _document_storage_key(tenant_id, document.id)
    with tenant_context(tenant_id):
        # Inside the context: validating the project foreign key reads the project row.
        document.full_clean()
        document.storage_key = default_storage.save(document.storage_key, content)
        try:
            document.save()
        except BaseException:
            default_storage.delete(document.storage_key)
            raise
    return document


def document_delete(*, tenant, document: Document) -> None:
    """Delete a knowledge document and its chunks; its file goes once the deletion commits.

    A rollback keeps both the row and the file. Should deleting the file fail after the
    commit, the error is logged and documents_sweep_orphan_files removes it later.
    Deleting a document that is already gone does nothing.
    """
    tenant_id = require_tenant(tenant, document=document)
    with tenant_context(tenant_id):
        rows = Document.objects.filter(tenant_id=tenant_id, pk=document.pk)
        # The stored key, not the instance's: the instance may be stale.
        storage_key = rows.values_list("storage_key", flat=True).first()
        if storage_key is None:
            return
        rows.delete()
        transaction.on_commit(
            functools.partial(delete_file, default_storage, storage_key), robust=True
        )
    logger.info(
        "document deleted",
        extra={"document_id": str(document.pk), "tenant_id": str(tenant_id)},
    )


def _read_text(document: Document) -> str:
    with default_storage.open(document.storage_key, "rb") as stored:
        data = stored.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestionError(
            f"The file is not UTF-8 text ({document.content_type}): byte "
            f"0x{data[error.start]:02x} at position {error.start} cannot be decoded."
        ) from error
    if reason := unstorable(text):
        raise IngestionError(f"The file's text {reason}")
    return text


def _failure_message(error: Exception) -> str:
    if isinstance(error, IngestionError):
        message = str(error)
    elif isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        message = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items()
        )
    else:
        message = f"{type(error).__name__}: {error}"
    return message[:ERROR_MESSAGE_MAX_LENGTH]


def _embed(embedder: Embedder, texts: Sequence[str], batch_size: int) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        vectors.extend(embedder.embed(texts[start : start + batch_size]))
    return vectors


# Every chunk of a document in one INSERT whose parameters are arrays in binary, the
# vectors in pgvector's own format. COPY would be as fast but PostgreSQL refuses COPY
# FROM into a table whose row-level security applies to the role; this INSERT goes
# through the policies, triggers and constraints like any other.
INSERT_CHUNKS_SQL = """
INSERT INTO chunks (
    tenant_id, document_id, ordinal, content, token_count, embedding, embedding_model, metadata
)
SELECT %(tenant_id)s, %(document_id)s, piece.ordinal, piece.content, piece.token_count,
       piece.embedding, %(model)s, jsonb_build_object('start', piece.start, 'end', piece.stop)
FROM unnest(
    %(ordinals)s::integer[], %(contents)s::text[], %(token_counts)s::integer[],
    %(embeddings)b::vector[], %(starts)s::integer[], %(stops)s::integer[]
) AS piece (ordinal, content, token_count, embedding, start, stop)
"""
# The vector type of each connection's database (its oid differs between databases).
_vector_types: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _insert_chunks(
    tenant_id: uuid.UUID,
    document: Document,
    pieces: Sequence,
    vectors: Sequence[Sequence[float]],
    model: str,
) -> None:
    """Write the chunks of `pieces` in one statement with binary parameters.

    Bulk_create sent each vector as 1536 numbers in text, which Python formats and the
    server parses again: most of an ingestion's time besides the HNSW index.
    """
    raw = connection.connection
    if raw not in _vector_types:
        _vector_types[raw] = TypeInfo.fetch(raw, "vector")
    # A cursor of its own: psycopg binds its parameters on the server, in binary, where
    # Django's cursors interpolate text. It runs no prepared statement (prepare_threshold
    # is None), so it is safe behind PgBouncer's transaction pooling.
    binary = psycopg.Cursor(raw)
    register_vector_info(binary, _vector_types[raw])
    wrapped = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrapped(binary) as cursor:
        cursor.execute(
            INSERT_CHUNKS_SQL,
            {
                "tenant_id": tenant_id,
                "document_id": document.pk,
                "model": model,
                "ordinals": [piece.ordinal for piece in pieces],
                "contents": [piece.content for piece in pieces],
                "token_counts": [piece.token_count for piece in pieces],
                "embeddings": [Vector(vector) for vector in vectors],
                "starts": [piece.start for piece in pieces],
                "stops": [piece.end for piece in pieces],
            },
        )


def _processing_lease() -> timedelta:
    return timedelta(seconds=settings.DOCUMENT_PROCESSING_LEASE_SECONDS)


def _claim_for_processing(tenant_id: uuid.UUID, document: Document) -> None:
    """Move the document to processing in one conditional UPDATE, or refuse naming 'status'.

    Claimable: uploaded, failed, or processing for longer than the lease (its worker
    died). The row lock of the UPDATE makes a concurrent claim wait and then find the
    row freshly processing, so only one worker gets it.
    """
    lease = _processing_lease()
    with tenant_context(tenant_id):
        documents = Document.objects.filter(tenant_id=tenant_id, pk=document.pk)
        claimed = documents.filter(
            Q(status__in=[Document.Status.UPLOADED, Document.Status.FAILED])
            | Q(status=Document.Status.PROCESSING, updated_at__lt=TransactionNow() - lease)
        ).update(status=Document.Status.PROCESSING, error_message="")
        if not claimed:
            status = documents.values_list("status", flat=True).get()
            if status == Document.Status.PROCESSING:
                message = (
                    "The document is being processed; it can be processed again once it "
                    f"has been processing for {int(lease.total_seconds())} seconds."
                )
            else:
                message = f"Only uploaded or failed documents are processed, not {status}."
            raise ValidationError({"status": message})
    document.status, document.error_message = Document.Status.PROCESSING, ""


def _lock_claim(tenant_id: uuid.UUID, document: Document) -> None:
    """Lock the row and check it is still processing (no other worker finished it)."""
    status = (
        Document.objects.select_for_update()
        .values_list("status", flat=True)
        .get(tenant_id=tenant_id, pk=document.pk)
    )
    if status != Document.Status.PROCESSING:
        raise _Superseded(status)


def document_process(
    *,
    tenant,
    document: Document,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedder: Embedder | None = None,
) -> Document:
    """Split an uploaded (or failed) document into embedded chunks: processing -> ready.

    On any failure (bytes not UTF-8, no text, the embedder raising or returning
    vectors of the wrong size) no chunk is kept and the document is committed as
    failed with the reason in error_message; it is returned, not raised, so check
    `document.status`. Bad arguments (chunking, an embedder of the wrong dimension)
    are refused with a ValidationError before anything changes, and so is a document
    that is ready, or processing for less than settings.DOCUMENT_PROCESSING_LEASE_SECONDS
    (a worker that died leaves it processing; after the lease it can be claimed again).
    If another worker claimed it meanwhile and finished first, its result stands.
    """
    tenant_id = require_tenant(tenant, document=document)
    chunk_size, chunk_overlap = resolve_chunking(chunk_size, chunk_overlap)
    embedder = embedder or get_embedder()
    check_embedder_dimension(embedder)
    _claim_for_processing(tenant_id, document)
    try:
        # One transaction (a savepoint inside the caller's): chunks and "ready" commit
        # together or not at all.
        with tenant_context(tenant_id):
            pieces = split_text(
                _read_text(document), chunk_size=chunk_size, chunk_overlap=chunk_overlap
            )
            if not pieces:
                raise IngestionError("The document has no text to index.")
            vectors = _embed(embedder, [piece.content for piece in pieces], EMBED_BATCH_SIZE)
            _lock_claim(tenant_id, document)
            _insert_chunks(tenant_id, document, pieces, vectors, embedder.model)
            document.status = Document.Status.READY
            document.save(update_fields=["status"])
    except _Superseded as superseded:
        logger.warning(
            "document processing superseded",
            extra={
                "document_id": str(document.pk),
                "tenant_id": str(tenant_id),
                "status": str(superseded),
            },
        )
        with tenant_context(tenant_id):
            document.refresh_from_db(fields=["status", "error_message"])
    except Exception as error:
        message = _failure_message(error)
        logger.warning(
            "document processing failed",
            extra={"document_id": str(document.pk), "tenant_id": str(tenant_id)},
            exc_info=not isinstance(error, IngestionError | ValidationError),
        )
        with tenant_context(tenant_id):
            # Only our own claim turns failed: a worker that finished first keeps its result.
            Document.objects.filter(
                tenant_id=tenant_id, pk=document.pk, status=Document.Status.PROCESSING
            ).update(status=Document.Status.FAILED, error_message=message)
            document.refresh_from_db(fields=["status", "error_message"])
    return document


def document_ingest(
    *,
    tenant,
    title: str = "",
    text: str | None = None,
    file: File | None = None,
    project: Project | None = None,
    content_type: str | None = None,
    metadata: dict | None = None,
    by=None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    embedder: Embedder | None = None,
) -> Document:
    """document_create then document_process: uploaded -> processing -> ready (or failed).

    Arguments that can never work (chunking, an embedder of the wrong dimension, a
    `text` with nothing to index or with characters PostgreSQL cannot store) are
    refused with a ValidationError before anything is stored.
    """
    chunk_size, chunk_overlap = resolve_chunking(chunk_size, chunk_overlap)
    embedder = embedder or get_embedder()
    check_embedder_dimension(embedder)
    if text is not None:
        # A text is known before it is stored: what processing would fail on is refused
        # now, leaving no failed document and no file behind.
        validate_storable_arguments(text=text)
        if not has_tokens(text):
            raise ValidationError({"text": "The text has nothing to index."})
    document = document_create(
        tenant=tenant,
        title=title,
        text=text,
        file=file,
        project=project,
        content_type=content_type,
        metadata=metadata,
        by=by,
    )
    return document_process(
        tenant=tenant,
        document=document,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        embedder=embedder,
    )


@dataclass
class ReembedProgress:
    """Running totals of chunks_reembed, passed to its on_batch callback."""

    chunks: int = 0
    batches: int = 0


def chunks_reembed(
    *,
    tenant,
    embedder: Embedder | None = None,
    batch_size: int = REEMBED_BATCH_SIZE,
    on_batch: Callable[[ReembedProgress], None] | None = None,
) -> int:
    """Embed every chunk of a tenant not yet embedded by `embedder`'s model (default: EMBEDDER).

    Batches of chunks whose embedding is missing or of another model are embedded and
    written, each in its own transaction, until none is left: a long run holds no lock
    for long, chunks ingested meanwhile with the old model are picked up too, and an
    interrupted run started again carries on where it stopped. Chunks already of this
    model are left alone. Returns the number of chunks re-embedded.
    """
    tenant_id = require_tenant(tenant)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError({"batch_size": "batch_size must be an integer >= 1."})
    embedder = embedder or get_embedder()
    check_embedder_dimension(embedder)
    progress = ReembedProgress()
    while True:
        with tenant_context(tenant_id):
            stale = Chunk.objects.filter(
                Q(embedding__isnull=True) | ~Q(embedding_model=embedder.model),
                tenant_id=tenant_id,
            )
            # FOR UPDATE re-checks the filter after waiting on a lock, so two runs never
            # embed a chunk twice; id order keeps their locks from deadlocking.
            locked = stale.order_by("id").only("id", "content").select_for_update()
            batch = list(locked[:batch_size])
            if not batch:
                break
            vectors = embedder.embed([chunk.content for chunk in batch])
            for chunk, vector in zip(batch, vectors, strict=True):
                chunk.embedding, chunk.embedding_model = vector, embedder.model
            Chunk.objects.bulk_update(batch, ["embedding", "embedding_model"])
        progress.chunks += len(batch)
        progress.batches += 1
        if on_batch:
            on_batch(progress)
    logger.info(
        "chunks re-embedded",
        extra={"tenant_id": str(tenant_id), "model": embedder.model, "chunks": progress.chunks},
    )
    return progress.chunks


# --- Orphaned upload files ----------------------------------------------------------

# A folder without a document row is kept while anything in it is younger than this:
# document_create stores the file before its transaction commits the row.
ORPHAN_FILE_GRACE = timedelta(hours=1)


def documents_sweep_orphan_files(
    *,
    dry_run: bool = False,
    grace: timedelta = ORPHAN_FILE_GRACE,
    now: datetime | None = None,
) -> OrphanSweep:
    """Delete upload files whose document row is gone, in every tenant.

    Walks documents/<tenant_id>/<document_id>/ in the default storage and deletes the
    files of each folder without a matching document row (rows deleted by the admin,
    by cascades, or never committed because the caller's transaction rolled back).
    A folder anything in which is younger than `grace` is kept, so an upload whose
    transaction has not committed yet is never swept. A system job, in system_context:
    call it outside any transaction. Idempotent. Raises ImproperlyConfigured, deleting
    nothing, where the bypass cannot see every document (no DATABASE_OWNER_URL).
    """
    if grace < timedelta(0):
        raise ValidationError({"grace": "grace must not be negative."})
    with system_context("documents_sweep_orphan_files: upload folders without a document"):
        summary = sweep_orphan_folders(
            storage=default_storage,
            root=DOCUMENTS_FOLDER,
            rows=Document.objects.all(),
            cutoff=(now or timezone.now()) - grace,
            dry_run=dry_run,
            job="documents_sweep_orphan_files",
        )
    logger.info("orphan document files swept", extra=dataclasses.asdict(summary))
    return summary
