"""The documents app's jobs on the worker (tenancy.jobs): ingestion of an upload,
re-embedding a tenant's chunks (`documents.reembed`, queued by chunks_reembed_queue), and
backfilling another model's vectors (`documents.backfill`, queued by
embedding_backfill_start).

document_create queues `documents.ingest` in the transaction that creates the document;
the worker runs document_process, the same code a synchronous caller runs, with the
job's attempts deciding what a failure becomes:

- a failure that may pass (the embedder raising, timing out or answering wrongly, the
  database) with attempts left: the document goes back to queued with its reason, and
  the job is retried after its backoff (TransientJobError);
- the last attempt, or a failure that cannot pass (the file is not text): failed, with
  its reason and its attempt count, and the job fails too (JobFailed);
- a document another worker holds under its lease (that worker died, and its job was
  queued again by queue.retry_stalled_jobs): the job waits out the rest of the lease,
  then takes the document over (RetryLater).

A document `queued` with no job behind it (migrated from the old `uploaded` status, its
job removed by hand) is queued again by the periodic `documents.queue_stranded`.
"""

from __future__ import annotations

import logging
import uuid

from django.core.exceptions import ValidationError
from procrastinate.contrib.django import app

from documents.models import Document
from documents.services import (
    BACKFILL_TASK,
    INGEST_TASK,
    REEMBED_TASK,
    DocumentStillProcessing,
    chunks_reembed,
    document_process,
    documents_queue_stranded,
    embeddings_backfill,
)
from tenancy.context import tenant_context
from tenancy.jobs import (
    QUEUE,
    JobAttempt,
    JobFailed,
    RetryLater,
    TransientJobError,
    tenant_task,
)

logger = logging.getLogger(__name__)


# Not atomic: each stage commits as it starts, so the document shows it.
@tenant_task(INGEST_TASK, atomic=False)
def ingest(tenant_id: uuid.UUID, attempt: JobAttempt, *, document_id: str) -> str:
    """Chunk and embed the document; its final status is the job's result."""
    with tenant_context(tenant_id):
        document = Document.objects.filter(tenant_id=tenant_id, pk=document_id).first()
    if document is None:
        # Deleted (or erased) since its upload: nothing is left to do.
        logger.info("document to ingest is gone", extra={"document_id": document_id})
        return "gone"
    if document.status == Document.Status.READY:
        # Queued twice (the admin's action while a job ran): the first one did the work.
        return "ready"
    try:
        document = document_process(tenant=tenant_id, document=document, retry=not attempt.last)
    except DocumentStillProcessing as held:
        raise RetryLater(held.seconds_left + 1, " ".join(held.messages)) from held
    if document.status == Document.Status.QUEUED:
        raise TransientJobError(document.error_message)
    if document.status == Document.Status.FAILED:
        raise JobFailed(document.error_message)
    return str(document.status)


# Not atomic: chunks_reembed commits batch by batch, so a retry carries on where it stopped.
@tenant_task(REEMBED_TASK, atomic=False)
def reembed(tenant_id: uuid.UUID, attempt: JobAttempt) -> int:
    """Re-embed the tenant's chunks not of the configured model; how many."""
    try:
        return chunks_reembed(tenant=tenant_id)
    except Exception as error:
        # The embedder raising or answering wrongly may pass; the batches done are kept.
        raise TransientJobError(f"{type(error).__name__}: {error}") from error


# Not atomic: each batch commits, so a retry (or a job queued again after a crash)
# embeds only the chunks still lacking the model's vector.
@tenant_task(BACKFILL_TASK, atomic=False)
def backfill_embeddings(tenant_id: uuid.UUID, attempt: JobAttempt, *, model: str) -> int:
    """Build `model`'s index and embed the tenant's chunks lacking its vector; how many."""
    try:
        return embeddings_backfill(tenant=tenant_id, model=model)
    except ValidationError as error:
        # An unknown model (EMBEDDING_MODELS changed since the job was queued): no retry helps.
        raise JobFailed(" ".join(error.messages)) from error
    except Exception as error:
        # The embedder raising or answering wrongly may pass; the batches done are kept.
        raise TransientJobError(f"{type(error).__name__}: {error}") from error


QUEUE_STRANDED_TASK = "documents.queue_stranded"


# Every 10 seconds, like queue.retry_stalled_jobs (the sixth field is the seconds): two
# short queries.
@app.periodic(cron="* * * * * */10", periodic_id="every_10_seconds")
@app.task(name=QUEUE_STRANDED_TASK, queue=QUEUE, queueing_lock=QUEUE_STRANDED_TASK)
def queue_stranded(timestamp: int) -> int:
    """Queue the ingestion of queued documents no job waits for (documents_queue_stranded)."""
    return documents_queue_stranded()
