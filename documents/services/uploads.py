"""Knowledge documents: stored uploads, and their deletion."""

from __future__ import annotations

import functools
import hashlib
import logging
import mimetypes
import os
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction

from core.files import delete_file, save_new_file
from core.hashing import sha256_hex
from core.ids import uuid7
from core.models import TransactionNow
from core.validators import validate_storable_arguments
from documents.models import (
    Document,
    Project,
)
from tenancy.context import job_scope, require_tenant, tenant_context
from tenancy.jobs import defer_tenant_job
from tenancy.models import Tenant, TenantRef, User

logger = logging.getLogger(__name__)


# The worker's ingestion task (documents.tasks), queued by name.
INGEST_TASK = "documents.ingest"
# Uploaded files live under documents/<tenant_id>/<document_id>/ in the default storage.
DOCUMENTS_FOLDER = "documents"


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


def ingestion_queueing_lock(document_id: uuid.UUID) -> str:
    """The queueing lock of a document's ingestion jobs: one waits at a time, and a
    document's page finds its latest job by it."""
    return f"{INGEST_TASK}:{document_id}"


def _queue_ingestion(tenant_id: uuid.UUID, document: Document) -> None:
    """The document's ingestion job, unless one is already waiting for it."""
    defer_tenant_job(
        INGEST_TASK,
        tenant_id,
        queueing_lock=ingestion_queueing_lock(document.pk),
        document_id=str(document.pk),
    )


# The unique index of one document per tenant and SHA-256 (Document.Meta).
DUPLICATE_KEY = "documents_tenant_sha256_uniq"
DUPLICATE_CODE = "duplicate"


def _duplicate_error(field_name: str, tenant_id: uuid.UUID, sha256: str) -> ValidationError:
    """The refusal of bytes the tenant already holds, naming the document if the caller
    may see it.

    Read in the caller's context: a restricted document the caller may not see is not
    found, and the message then says only that such a document exists (the rule is
    tenant-wide, so that much is told), never its title or id. The id is in the error's
    params (`document_id`) for a caller that links to it (the admin).
    """
    existing = (
        Document.objects.filter(tenant_id=tenant_id, sha256=sha256)
        .order_by("id")
        .values_list("id", "title")
        .first()
    )
    keep = "Pass allow_duplicate=True (the admin's “Keep both”) to store it again."
    if existing is None:
        error = ValidationError(
            "The tenant already holds a document with the same content (the same SHA-256), "
            f"one you may not see: ask an owner or admin of the tenant. {keep}",
            code=DUPLICATE_CODE,
        )
    else:
        error = ValidationError(
            "The tenant already holds this content: document %(document_id)s "
            f"(“%(title)s”) has the same SHA-256. {keep}",
            code=DUPLICATE_CODE,
            params={"document_id": str(existing[0]), "title": existing[1]},
        )
    return ValidationError({field_name: error})


def _is_duplicate(error: IntegrityError) -> bool:
    diag = getattr(error.__cause__, "diag", None)
    return diag is not None and diag.constraint_name == DUPLICATE_KEY


def document_create(
    *,
    tenant: TenantRef,
    title: str = "",
    text: str | None = None,
    file: File | None = None,
    project: Project | None = None,
    content_type: str | None = None,
    metadata: dict | None = None,
    by: User | None = None,
    queue: bool = True,
    allow_duplicate: bool = False,
) -> Document:
    """Store a knowledge document's bytes (from `text` or an uploaded `file`), queued.

    The bytes go to the `default` storage under a generated key; the row records
    their size, SHA-256 and content type. More than settings.DOCUMENT_MAX_UPLOAD_BYTES
    is refused (ValidationError on "file" or "text") before anything is stored, and so
    is a full storage, after removing what was written.
    Bytes the tenant already holds (a document with the same SHA-256) are refused with
    a ValidationError on "file" or "text" (code "duplicate") naming that document when
    the caller may see it, unless `allow_duplicate`: then both are kept, and the new
    one is marked `duplicate_allowed`. Two concurrent uploads of the same bytes: the
    database's unique index lets one through and the other is refused the same way.
    The worker's ingestion job (documents.tasks) is queued in the same transaction as
    the row: both commit or neither, so a document never waits for a job that does not
    exist. `queue=False` leaves that to the caller (document_ingest processes it at once,
    synchronously). Should the caller's transaction roll back, the stored file is left
    for documents_sweep_orphan_files.
    """
    tenant_id = require_tenant(tenant, project=project)
    if (text is None) == (file is None):
        raise ValidationError({"file": "Give either text or file, not both or neither."})
    limit = _max_upload_bytes()
    content: File
    if text is not None:
        validate_storable_arguments(text=text)  # an indexed text becomes chunks: text columns
        data = text.encode("utf-8")
        if len(data) > limit:
            raise _too_large("text", len(data), limit)
        content, size, sha256 = ContentFile(data), len(data), sha256_hex(data)
        content_type = content_type or "text/plain"
    else:
        assert file is not None  # exactly one of text and file, checked above
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
    field_name = "text" if file is None else "file"
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
        duplicate_allowed=allow_duplicate,
    )
    document.storage_key = _document_storage_key(tenant_id, document.id)
    with tenant_context(tenant_id):
        # Checked before the bytes are stored, and before full_clean (its check of the
        # unique constraint says less); the unique index decides between two uploads
        # that both pass (below).
        if (
            not allow_duplicate
            and Document.objects.filter(tenant_id=tenant_id, sha256=sha256).exists()
        ):
            raise _duplicate_error(field_name, tenant_id, sha256)
        # Inside the context: validating the project foreign key reads the project row.
        document.full_clean()
        document.storage_key = save_new_file(
            default_storage, document.storage_key, content, field=field_name
        )
        try:
            # A savepoint: after a refused insert the transaction reads on (the error's
            # message reads the existing document).
            with transaction.atomic():
                document.save()
            if queue:
                _queue_ingestion(tenant_id, document)
        except IntegrityError as error:
            default_storage.delete(document.storage_key)
            if _is_duplicate(error):
                raise _duplicate_error(field_name, tenant_id, sha256) from error
            raise
        except BaseException:
            default_storage.delete(document.storage_key)
            raise
    return document


def document_queue(*, tenant: TenantRef, document: Document) -> Document:
    """Queue the ingestion of a failed (or queued) document again: the admin's "Chunk and
    embed", and the way back for a document whose job was lost.

    The document turns queued, its last reason kept until the worker replaces it, and
    its job is queued in the same transaction (unless one already waits for it). A ready
    document, or one a worker holds
    (chunking, embedding), is refused naming 'status'.
    """
    tenant_id = require_tenant(tenant, document=document)
    with tenant_context(tenant_id):
        queued = Document.objects.filter(
            tenant_id=tenant_id,
            pk=document.pk,
            status__in=[Document.Status.QUEUED, Document.Status.FAILED],
        ).update(status=Document.Status.QUEUED)
        if not queued:
            status = (
                Document.objects.filter(tenant_id=tenant_id, pk=document.pk)
                .values_list("status", flat=True)
                .first()
            )
            raise ValidationError(
                {"status": f"Only queued or failed documents are queued again, not {status}."}
            )
        _queue_ingestion(tenant_id, document)
    document.status = Document.Status.QUEUED
    return document


def documents_queue_stranded() -> int:
    """Queue the ingestion of every document left `queued` with no job behind it; how many.

    Such a document waits for nothing: one migrated from the old `uploaded` status on a
    live database, or one whose job was removed by hand. The worker's periodic
    `documents.queue_stranded` runs this. A document must have been queued for
    DOCUMENT_PROCESSING_LEASE_SECONDS first: its own job commits with it, so a younger
    one is never mistaken for stranded between the two reads below.

    Two queries, never a join: the queue's tables stay on the coordinator under Citus
    while documents are distributed. First the documents a job waits or runs for, then
    the queued documents of every tenant but those.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT args->>'document_id' FROM procrastinate_jobs "
            "WHERE task_name = %s AND status IN ('todo', 'doing')",
            [INGEST_TASK],
        )
        with_job = [row[0] for row in cursor.fetchall() if row[0]]
    tenant_ids = list(Tenant.objects.values_list("pk", flat=True))
    if not tenant_ids:
        return 0
    lease = timedelta(seconds=settings.DOCUMENT_PROCESSING_LEASE_SECONDS)
    # As the worker's job: every tenant seen whole, restricted documents included.
    with job_scope("documents.queue_stranded", *tenant_ids), tenant_context(*tenant_ids):
        stranded = list(
            Document.objects.filter(
                status=Document.Status.QUEUED, updated_at__lt=TransactionNow() - lease
            )
            .exclude(pk__in=with_job)
            .values_list("tenant_id", "pk")
        )
    for tenant_id, document_id in stranded:
        logger.warning(
            "queued document without a job queued again",
            extra={"tenant_id": str(tenant_id), "document_id": str(document_id)},
        )
        with tenant_context(tenant_id):
            _queue_ingestion(tenant_id, Document(pk=document_id, tenant_id=tenant_id))
    return len(stranded)


def document_delete(*, tenant: TenantRef, document: Document) -> None:
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
