"""A worker that dies mid-ingest (issue 17, point 7), and database errors while processing.

The server cancels the statement of a client that is gone (the runtime role's
client_connection_check_interval), so a dead worker's locks do not outlive it; a retry
that fails all the same is recorded on the document with a plain reason.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction

from documents import services
from documents.models import Chunk, Document
from tenancy.context import tenant_context
from tests.documents.test_ingestion import TEXT, chunks_of, mark_processing, status_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]

# How long the test waits for the server to notice, far above the check interval.
DEADLINE_SECONDS = 60
LOCK_MESSAGE = "held by another transaction for longer than the lock timeout"

# A worker processing one document, printing its backend's pid first. Its session has
# no statement or lock timeout: only the server's check of its client may end its work.
WORKER = """
import sys

import django

django.setup()
from django.conf import settings

settings.DATABASES["default"]["NAME"] = sys.argv[1]
from django.db import connection

from documents.models import Document
from documents.services import document_process
from tenancy.context import tenant_context

with connection.cursor() as cursor:
    cursor.execute("SET statement_timeout = 0")
    cursor.execute("SET lock_timeout = 0")
    cursor.execute("SELECT pg_backend_pid()")
    print(cursor.fetchone()[0], flush=True)
with tenant_context(sys.argv[2]):
    document = Document.objects.get(pk=sys.argv[3])
document_process(tenant=sys.argv[2], document=document)
"""


def raw_connection() -> psycopg.Connection:
    """A session of the runtime role of its own, outside Django."""
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"],
        password=params["PASSWORD"] or None,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
    )


def activity(pid: int) -> tuple[str, str, object] | None:
    """(state, wait_event_type, query_start) of the backend, or None once it has ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state, wait_event_type, query_start FROM pg_stat_activity WHERE pid = %s",
            [pid],
        )
        return cursor.fetchone()


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    pytest.fail(f"waited {DEADLINE_SECONDS} s for {what}")


@pytest.mark.slow
def test_the_server_ends_the_work_of_a_killed_worker_and_a_retry_then_succeeds(
    tenant_a, file_storages, settings
):
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    holder = raw_connection()
    # Held as long as the test needs it, whatever the role's idle limit.
    holder.execute("SET idle_in_transaction_session_timeout = 0")
    # The worker's chunk INSERT waits behind this lock: a statement still running, with
    # the document's row locked, when the worker is killed.
    holder.execute("LOCK TABLE chunks IN SHARE MODE")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, connection.settings_dict["NAME"], str(tenant_a.pk)]
        + [str(document.pk)],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "MEDIA_ROOT": str(file_storages.media)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    try:
        line = worker.stdout.readline()
        if not line.strip():
            worker.wait(30)
            pytest.fail(f"the worker did not start: {worker.stderr.read()[-4000:]}")
        pid = int(line)
        wait_for(lambda: (activity(pid) or (None, None))[1] == "Lock", "the worker's INSERT")
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        # The lock is still held: only the server's check of the vanished client can
        # end the statement that waits for it.
        wait_for(lambda: activity(pid) is None, "the server to end the dead worker's backend")
    finally:
        holder.rollback()
        holder.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        if pid is not None and activity(pid) is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert status_of(tenant_a, document) == Document.Status.EMBEDDING
    settings.DOCUMENT_PROCESSING_LEASE_SECONDS = 0
    services.document_process(tenant=tenant_a, document=document)
    assert (document.status, status_of(tenant_a, document)) == (Document.Status.READY,) * 2
    assert len(chunks_of(tenant_a, document)) == 1


def set_lock_timeout(value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [value])


def test_a_retry_that_times_out_on_the_row_lock_records_it_on_the_document(tenant_a):
    """The claim of a retry waits on the row of a transaction still running; it fails,
    and the failure is recorded on the document once the row can be written."""
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    mark_processing(tenant_a, document, age=timedelta(hours=1))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [retry_pid] = cursor.fetchone()
    locked, finished, waits = threading.Event(), threading.Event(), []

    def hold_the_row_until_the_second_wait() -> None:
        try:
            with transaction.atomic(), tenant_context(tenant_a):
                Document.objects.select_for_update().filter(pk=document.pk).exists()
                locked.set()

                def waiting_again():
                    with connections["default"].cursor() as cursor:
                        cursor.execute("SELECT pg_stat_clear_snapshot()")
                        cursor.execute(
                            "SELECT wait_event_type, query_start FROM pg_stat_activity "
                            "WHERE pid = %s",
                            [retry_pid],
                        )
                        wait_type, started = cursor.fetchone()
                    if wait_type == "Lock" and started not in waits:
                        waits.append(started)
                    return len(waits) == 2 or finished.is_set()

                # Released while the second statement (the failure's record) waits, or
                # once the retry is over.
                wait_for(waiting_again, "the retry to wait on the row twice")
        finally:
            connections["default"].close()

    holder = threading.Thread(target=hold_the_row_until_the_second_wait)
    holder.start()
    try:
        assert locked.wait(30)
        set_lock_timeout("2s")
        result = services.document_process(tenant=tenant_a, document=document)
    finally:
        finished.set()
        set_lock_timeout(django_settings.DATABASE_RUNTIME_ROLE_SETTINGS["lock_timeout"])
        holder.join(DEADLINE_SECONDS)
    assert len(waits) == 2
    assert (result.status, status_of(tenant_a, document)) == (Document.Status.FAILED,) * 2
    assert LOCK_MESSAGE in result.error_message
    assert "canceling statement" not in result.error_message
    # Failed documents are processed again at once.
    services.document_process(tenant=tenant_a, document=document)
    assert status_of(tenant_a, document) == Document.Status.READY


def test_a_database_error_while_processing_is_stored_as_a_plain_reason(tenant_a, caplog):
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    holder = raw_connection()
    holder.execute("LOCK TABLE chunks IN SHARE MODE")
    try:
        set_lock_timeout("200ms")
        services.document_process(tenant=tenant_a, document=document)
    finally:
        set_lock_timeout(django_settings.DATABASE_RUNTIME_ROLE_SETTINGS["lock_timeout"])
        holder.rollback()
        holder.close()
    assert status_of(tenant_a, document) == Document.Status.FAILED
    assert LOCK_MESSAGE in document.error_message
    # The database's own words go to the log, not to the document the admin shows.
    assert "canceling statement" not in document.error_message
    assert "canceling statement due to lock timeout" in caplog.text
    with tenant_context(tenant_a):
        assert not Chunk.objects.filter(document=document).exists()
