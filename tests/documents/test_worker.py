"""Ingestion on the worker: a real `manage.py procrastinate worker` process per test.

The upload queues its job in its own transaction; the worker chunks and embeds it in the
upload's tenant context, retries what may pass with backoff, ends what does not in
failed with the reason and the attempt count, and takes over the job of a worker killed
with SIGKILL once that worker's heartbeat and the document's lease have run out.
"""

import pytest
from django.db import transaction
from health_check.exceptions import ServiceUnavailable

from core.ops.health import WorkerQueue
from documents import services
from documents.models import Chunk, Document
from tenancy.context import tenant_context
from tenancy.jobs import defer_tenant_job
from tests.tenancy.test_audit import events
from tests.worker import clear_queue, jobs, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]

TEXT = "one two three four five six seven eight nine ten " * 40
EMBEDDERS = "tests.documents.worker_embedders"


@pytest.fixture(autouse=True)
def empty_queue():
    clear_queue()
    yield
    clear_queue()


@pytest.fixture
def worker_factory(tmp_path):
    started = []

    def start(name: str = "test-worker", **environment: str):
        worker = start_worker(tmp_path, name=name, **environment)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def document_state(tenant, document) -> tuple[str, int, str, int]:
    """(status, attempts, error_message, chunks) of the document as committed."""
    with tenant_context(tenant):
        row = Document.objects.get(pk=document.pk)
        chunks = Chunk.objects.filter(document_id=document.pk).count()
    return row.status, row.attempts, row.error_message, chunks


def ended(tenant, document):
    def check():
        state = document_state(tenant, document)
        return state if state[0] in (Document.Status.READY, Document.Status.FAILED) else None

    return check


@pytest.mark.slow
def test_an_upload_becomes_ready_through_the_worker_in_its_tenant_context(
    tenant_a, tenant_b, worker_factory
):
    document = services.document_create(tenant=tenant_a, title="Numbers", text=TEXT)
    assert document.status == Document.Status.QUEUED
    # A job forged for another tenant cannot reach the document: it runs in tenant_b's
    # context, where row-level security hides tenant_a's rows.
    with transaction.atomic():
        defer_tenant_job(services.INGEST_TASK, tenant_b, document_id=str(document.pk))
    worker = worker_factory()
    status, attempts, error, chunks = wait_for(ended(tenant_a, document), "ready", worker)
    assert (status, attempts, error) == (Document.Status.READY, 1, "")
    assert chunks > 1
    wait_for(lambda: all(job["status"] == "succeeded" for job in jobs()), "both jobs", worker)
    own, forged = jobs(services.INGEST_TASK)
    assert own["args"] == {"tenant_id": str(tenant_a.pk), "document_id": str(document.pk)}
    assert forged["args"]["tenant_id"] == str(tenant_b.pk)
    assert "Result: gone" in worker.output()
    # The stages and the chunks were written as the job, for the audit trail.
    stages = [
        event.changes["new"]["status"]
        for event in events(tenant_a, row_id=document.pk, action="update")
        if "status" in event.changes.get("new", {})
    ]
    assert stages == ["chunking", "embedding", "ready"]
    actors = {event.actor for event in events(tenant_a, table_name="chunks")}
    actors |= {event.actor for event in events(tenant_a, row_id=document.pk, action="update")}
    assert actors == {"job:documents.ingest"}
    assert events(tenant_a, row_id=document.pk, action="insert")[0].actor == "service"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("embedder", "reason"),
    [
        ("broken", "RuntimeError: embedding service unavailable"),
        ("hanging", "did not answer within 2 seconds (EMBEDDER_TIMEOUT_SECONDS)"),
        ("miscounting", "returned 1 vectors for 2 texts"),
    ],
)
def test_an_embedder_that_keeps_failing_ends_failed_after_the_retries(
    tenant_a, worker_factory, embedder, reason
):
    # Two different chunks of 60 tokens (the embedding cache embeds a repeated text once):
    # one embedder call.
    text = " ".join(f"word{number}" for number in range(120))
    document = services.document_create(tenant=tenant_a, title="Fails", text=text)
    worker = worker_factory(
        EMBEDDER_CALLABLE=f"{EMBEDDERS}.{embedder}",
        CHUNK_SIZE_TOKENS="60",
        CHUNK_OVERLAP_TOKENS="0",
    )
    status, attempts, error, chunks = wait_for(ended(tenant_a, document), "failed", worker)
    assert (status, attempts, chunks) == (Document.Status.FAILED, 3, 0)
    assert reason in error
    # The last attempt's reason, not a retry's.
    assert not error.startswith("Attempt")
    wait_for(lambda: jobs(services.INGEST_TASK)[0]["status"] == "failed", "job failed", worker)
    assert jobs(services.INGEST_TASK)[0]["attempts"] == 3
    assert worker.output().count(f"Starting job {services.INGEST_TASK}") == 3


@pytest.mark.slow
def test_a_file_that_is_not_text_fails_at_once_without_retries(tenant_a, worker_factory):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("image.bin", b"\xff\xfe\x00binary", content_type="image/png")
    document = services.document_create(tenant=tenant_a, file=upload)
    worker = worker_factory()
    status, attempts, error, chunks = wait_for(ended(tenant_a, document), "failed", worker)
    assert (status, attempts, chunks) == (Document.Status.FAILED, 1, 0)
    assert "not UTF-8 text" in error


@pytest.mark.slow
def test_a_job_whose_worker_was_killed_is_taken_over_after_its_lease(tenant_a, worker_factory):
    document = services.document_create(tenant=tenant_a, title="Killed", text=TEXT)
    first = worker_factory(
        "doomed", EMBEDDER_CALLABLE=f"{EMBEDDERS}.slow", EMBEDDER_TIMEOUT_SECONDS="120"
    )
    wait_for(
        lambda: document_state(tenant_a, document)[0] == Document.Status.EMBEDDING,
        "the first worker to be embedding",
        first,
    )
    first.kill()
    assert document_state(tenant_a, document)[:2] == (Document.Status.EMBEDDING, 1)
    second = worker_factory("survivor")
    # Its start, the stall (3 s), the next round of queue.retry_stalled_jobs (10 s) and
    # the rest of the lease (3 s), on a machine that may be busy.
    status, attempts, error, chunks = wait_for(
        ended(tenant_a, document), "ready", second, seconds=120
    )
    assert (status, attempts, error) == (Document.Status.READY, 2, "")
    assert chunks > 1
    (job,) = jobs(services.INGEST_TASK)
    assert job["status"] == "succeeded"
    assert "job of a stalled worker queued again" in second.output()


def test_an_upload_queues_its_job_in_its_own_transaction(tenant_a):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.document_create(tenant=tenant_a, title="Rolled back", text=TEXT)
        assert len(jobs(services.INGEST_TASK)) == 1
        raise RuntimeError("the caller's transaction fails")
    assert jobs() == []
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    document = services.document_create(tenant=tenant_a, title="Kept", text=TEXT)
    (job,) = jobs(services.INGEST_TASK)
    assert (job["status"], job["args"]["document_id"]) == ("todo", str(document.pk))


def test_requeueing_a_failed_document_queues_a_job_and_refuses_a_ready_one(tenant_a):
    document = services.document_create(tenant=tenant_a, title="Doc", text=TEXT, queue=False)
    with tenant_context(tenant_a):
        Document.objects.filter(pk=document.pk).update(status="failed", error_message="x")
    services.document_queue(tenant=tenant_a, document=document)
    assert document_state(tenant_a, document)[0] == Document.Status.QUEUED
    assert len(jobs(services.INGEST_TASK)) == 1
    with tenant_context(tenant_a):
        Document.objects.filter(pk=document.pk).update(status="ready", error_message="")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        services.document_queue(tenant=tenant_a, document=document)
    assert "not ready" in refused.value.message_dict["status"][0]
    assert len(jobs(services.INGEST_TASK)) == 1


def test_the_worker_queue_check_reports_the_oldest_waiting_job_and_fails_past_the_limit(
    tenant_a, settings
):
    check = WorkerQueue()
    check.run()
    assert check.pretty_status() == "OK"
    services.document_create(tenant=tenant_a, title="Waiting", text=TEXT + " waiting")
    settings.WORKER_QUEUE_MAX_AGE_SECONDS = 300
    check.run()
    assert check.pretty_status().startswith("OK: oldest waiting job 0 s old, 1 waiting")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_events SET at = now() - interval '10 minutes'")
    with pytest.raises(ServiceUnavailable) as failed:
        check.run()
    assert "oldest waiting job 600 s old, 1 waiting: past WORKER_QUEUE_MAX_AGE_SECONDS" in str(
        failed.value
    )
    settings.WORKER_QUEUE_MAX_AGE_SECONDS = 900
    check.run()


@pytest.mark.slow
def test_a_tenants_chunks_are_reembedded_by_the_worker(tenant_a, tenant_b, worker_factory):
    document = services.document_ingest(tenant=tenant_a, title="Old model", text=TEXT)
    other = services.document_ingest(tenant=tenant_b, title="Untouched", text=TEXT)
    assert services.chunks_reembed_queue(tenant=tenant_a) is True
    # One waiting job per tenant is enough.
    assert services.chunks_reembed_queue(tenant=tenant_a) is False
    worker = worker_factory(EMBEDDER_MODEL="hashing-v2")

    def models(tenant, doc) -> set[str]:
        with tenant_context(tenant):
            return set(
                Chunk.objects.filter(document_id=doc.pk).values_list("embedding_model", flat=True)
            )

    wait_for(lambda: models(tenant_a, document) == {"hashing-v2"}, "re-embedded", worker)
    assert models(tenant_b, other) == {"hashing-v1"}
    wait_for(lambda: jobs(services.REEMBED_TASK)[0]["status"] == "succeeded", "done", worker)
    assert jobs(services.REEMBED_TASK)[0]["args"] == {"tenant_id": str(tenant_a.pk)}


@pytest.mark.slow
def test_a_queued_document_without_a_job_is_queued_again_and_becomes_ready(
    tenant_a, worker_factory, settings
):
    # As a document migrated from the old `uploaded` status: queued, no job behind it.
    document = services.document_create(tenant=tenant_a, title="Stranded", text=TEXT, queue=False)
    waiting = services.document_create(tenant=tenant_a, title="Waiting", text=TEXT + " waiting")
    assert [job["args"]["document_id"] for job in jobs(services.INGEST_TASK)] == [str(waiting.pk)]
    # Nothing is queued for a document younger than the lease (its job may be committing).
    assert services.documents_queue_stranded() == 0
    settings.DOCUMENT_PROCESSING_LEASE_SECONDS = 0
    # The one with a waiting job keeps it alone; the stranded one gets its job.
    assert services.documents_queue_stranded() == 1
    assert services.documents_queue_stranded() == 0
    clear_queue()
    # Now through the worker's periodic sweep alone: neither has a job.
    worker = worker_factory()
    for each in (document, waiting):
        status, attempts, error, chunks = wait_for(ended(tenant_a, each), "ready", worker)
        assert (status, attempts, error) == (Document.Status.READY, 1, "")
    assert "queued document without a job queued again" in worker.output()


def test_the_queues_upkeep_tasks_are_scheduled():
    from procrastinate.contrib.django import app

    schedules = {
        (periodic.task.name, periodic.cron)
        for periodic in app.periodic_registry.periodic_tasks.values()
    }
    assert {
        ("queue.retry_stalled_jobs", "* * * * * */10"),
        ("documents.queue_stranded", "* * * * * */10"),
        ("queue.remove_finished_jobs", "15 3 * * *"),
        ("tenancy.audit_seal", "* * * * *"),
        ("retention.enforce", "30 3 * * *"),
    } <= schedules


@pytest.mark.slow
def test_finished_jobs_older_than_the_setting_are_removed_by_the_worker(tenant_a, worker_factory):
    from django.db import connection
    from procrastinate.contrib.django import app

    old = services.document_create(tenant=tenant_a, title="Old", text=TEXT)
    recent = services.document_create(tenant=tenant_a, title="Recent", text=TEXT + " recent")
    worker = worker_factory(WORKER_KEEP_FINISHED_JOBS_HOURS="24")
    for each in (old, recent):
        wait_for(ended(tenant_a, each), "ready", worker)
    wait_for(
        lambda: [job["status"] for job in jobs(services.INGEST_TASK)] == ["succeeded"] * 2,
        "both jobs succeeded",
        worker,
    )
    old_job, recent_job = jobs(services.INGEST_TASK)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_events SET at = at - interval '25 hours' WHERE job_id = %s",
            [old_job["id"]],
        )
    with transaction.atomic():
        app.configure_task("queue.remove_finished_jobs").defer(timestamp=0)
    wait_for(
        lambda: [job["id"] for job in jobs(services.INGEST_TASK)] == [recent_job["id"]],
        "the old job removed",
        worker,
    )


@pytest.mark.slow
def test_documents_of_a_restricted_project_are_ingested_and_swept_like_any_other(
    tenant_a, alice, worker_factory, settings
):
    """A job has no member's view: it sees its tenant whole (tenancy.context.job_scope),
    so an upload into a restricted project is ingested, and one stranded there is found
    by the sweep, although a context without a user sees neither."""
    project = services.project_create(tenant=tenant_a, name="Merger", by=alice)
    services.project_restrict(tenant=tenant_a, project=project, by=alice)
    # Uploaded as the owner (a request's context is its user's).
    with tenant_context(tenant_a, user=alice):
        uploaded = services.document_create(
            tenant=tenant_a, project=project, title="Terms", text=TEXT, by=alice
        )
        stranded = services.document_create(
            tenant=tenant_a, project=project, title="Letter", text=TEXT + "eleven", queue=False
        )
    with tenant_context(tenant_a):
        assert not Document.objects.filter(pk__in=[uploaded.pk, stranded.pk]).exists()
    settings.DOCUMENT_PROCESSING_LEASE_SECONDS = 0
    assert services.documents_queue_stranded() == 1
    worker = worker_factory()

    def ended_as_owner(document):
        def check():
            with tenant_context(tenant_a, user=alice):
                row = Document.objects.get(pk=document.pk)
                chunks = Chunk.objects.filter(document_id=document.pk).count()
            return (row.status, chunks) if row.status in ("ready", "failed") else None

        return check

    for document in (uploaded, stranded):
        status, chunks = wait_for(ended_as_owner(document), "ready", worker)
        assert status == Document.Status.READY and chunks > 0
