"""A knowledge document's page (documents.admin.knowledge): its processing stages and its
ingestion job, its chunks with their hits in the search log, a page at a time, and the
outputs flagged as built on it (the agents' panel, agents.admin.page_panels).

Requests go through the tenant middleware; rows are made through the services.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.services import (
    execution_create,
    execution_finish,
    execution_record_sources,
    execution_start,
)
from documents.embedding import Embedder
from documents.models import Chunk, Document, DocumentVersion, SearchQuery
from documents.search import chunk_search
from documents.services import (
    document_create,
    document_ingest,
    document_process,
    document_reingest,
    document_version_create,
    project_create,
)
from tenancy.context import tenant_context
from tests.admin_helpers import REFUSED, admin_url, logged_in
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKING = {"chunk_size": 4, "chunk_overlap": 0}
TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


def page(client, user, document: Document, **params):
    return logged_in(client, user).get(admin_url(Document, "change", document.pk), params)


def section(html: str, start: str, end: str | None = None) -> str:
    html = html[html.index(start) :]
    return html[: html.index(end)] if end else html


# --- Processing -----------------------------------------------------------------------------


def test_the_stages_of_an_upload_the_worker_processed(client, alice, tenant_a, file_storages):
    document = document_create(tenant=tenant_a, title="Manual", text=TEXT, by=alice)
    document_process(tenant=tenant_a, document=document, **CHUNKING)
    html = page(client, alice, document).content.decode()
    processing = section(html, "<h2>Processing</h2>", "<h2>Chunks")
    stages = re.findall(r"<tr><td>(\w+)</td><td>([\d: .-]+)</td><td>([^<]*)</td>", processing)
    assert [stage for stage, _, _ in stages] == ["Queued", "Chunking", "Embedding", "Ready"]
    # Each stage lasts until the next began; the last one goes on.
    assert [until.split(" (")[0] for _, _, until in stages[:-1]] == [
        start for _, start, _ in stages[1:]
    ]
    assert stages[-1][2] == "now"
    assert "Now: <strong>Ready</strong>" in processing
    # The upload's job waits in the queue (no worker runs here).
    assert re.search(r"Latest ingestion job in the worker's queue: #\d+, todo", processing)
    assert ": deferred</li>" in processing


def test_a_superuser_gets_the_jobs_page_in_the_queues_admin(
    client, superuser, tenant_a, file_storages
):
    document = document_create(tenant=tenant_a, title="Manual", text=TEXT)
    html = page(client, superuser, document).content.decode()
    job = re.search(r'queue: <a href="/admin/procrastinate/procrastinatejob/(\d+)/change/">', html)
    assert job is not None
    assert (
        logged_in(client, superuser)
        .get(f"/admin/procrastinate/procrastinatejob/{job.group(1)}/change/")
        .status_code
        == 200
    )


def test_a_failed_processing_shows_its_reason(client, alice, tenant_a, file_storages):
    def broken(texts):
        raise RuntimeError("the embedder is down")

    document = document_create(tenant=tenant_a, title="Manual", text=TEXT, by=alice)
    document_process(
        tenant=tenant_a,
        document=document,
        embedder=Embedder(function=broken, model="broken", dimension=1536),
        **CHUNKING,
    )
    processing = section(
        page(client, alice, document).content.decode(), "<h2>Processing</h2>", "<h2>Chunks"
    )
    assert "Now: <strong>Failed</strong>" in processing
    failed = re.search(r"<tr><td>Failed</td>.*?</tr>", processing).group(0)
    assert "the embedder is down" in failed


def test_a_document_without_a_job_says_so(client, alice, tenant_a, file_storages):
    document = document_ingest(tenant=tenant_a, title="Direct", text=TEXT, **CHUNKING)
    html = page(client, alice, document).content.decode()
    assert "No ingestion job of this document is in the worker's queue" in html


# --- Chunks and their hits ------------------------------------------------------------------


def test_each_chunks_hits_are_the_logged_searches_that_returned_it(
    client, alice, tenant_a, file_storages
):
    document = document_ingest(tenant=tenant_a, title="Handbook", text=TEXT, **CHUNKING)
    for query in ("alpha beta", "alpha", "epsilon zeta", "nothing matches this"):
        chunk_search(tenant=tenant_a, query=query, k=1, mode="fulltext")
    # As an owner: the log is read whole by the tenant's owners and admins only.
    with tenant_context(tenant_a, user=alice):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
        expected = [
            SearchQuery.objects.filter(chunk_ids__contains=[chunk.pk]).count() for chunk in chunks
        ]
    assert expected == [2, 1, 0]
    html = page(client, alice, document).content.decode()
    chunk_table = section(html, "<h2>Chunks (3)</h2>", "</table>")
    hits = re.findall(r"<td>(?:<a [^>]*>)?(\d+)(?:</a>)?</td></tr>", chunk_table)
    assert [int(count) for count in hits] == expected
    for chunk in chunks:
        assert f"/admin/documents/chunk/{chunk.pk}/change/" in chunk_table
    # The owner may read the log: a count links to the searches behind it.
    assert f"/admin/documents/searchquery/?chunk={chunks[0].pk}" in chunk_table
    assert "how many searches in the search log returned the chunk" in html


def test_a_viewer_sees_the_counts_not_the_log_and_no_save_button(client, tenant_a, file_storages):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    document = document_ingest(tenant=tenant_a, title="Handbook", text=TEXT, **CHUNKING)
    chunk_search(tenant=tenant_a, query="alpha beta", k=1, mode="fulltext")
    response = page(client, viewer, document)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    chunk_table = section(html, "<h2>Chunks (3)</h2>", "</table>")
    assert "/admin/documents/searchquery/" not in chunk_table
    assert re.findall(r"<td>(\d+)</td></tr>", chunk_table) == ["1", "0", "0"]


def test_chunks_come_a_page_at_a_time(client, alice, tenant_a, file_storages):
    words = " ".join(f"word{i}" for i in range(4 * 60))
    document = document_ingest(tenant=tenant_a, title="Long", text=words, **CHUNKING)

    def ordinals(**params) -> list[int]:
        html = page(client, alice, document, **params).content.decode()
        table = section(html, "<h2>Chunks (60)</h2>", "</table>")
        return [int(n) for n in re.findall(r'/change/">(\d+)</a></td>', table)]

    assert ordinals() == list(range(50))
    assert ordinals(chunks="2") == list(range(50, 60))
    # A page that is no page shows the first or the last, never an error.
    assert ordinals(chunks="abc") == list(range(50))
    assert ordinals(chunks="99") == list(range(50, 60))
    html = page(client, alice, document).content.decode()
    assert 'href="?chunks=2">next</a>' in html


def test_another_tenants_document_is_missing(client, bob, tenant_a, file_storages):
    document = document_ingest(tenant=tenant_a, title="Ours", text=TEXT, **CHUNKING)
    assert page(client, bob, document).status_code in REFUSED


# --- The outputs built on it ----------------------------------------------------------------


def grounded_run(tenant, document, name: str) -> dict:
    """A run whose retriever read the document's chunks and whose writer wrote a version."""
    project = project_create(tenant=tenant, name=name)
    root = execution_start(
        tenant=tenant,
        execution=execution_create(tenant=tenant, project=project, agent_type="planner"),
    )
    retriever = execution_start(
        tenant=tenant,
        execution=execution_create(
            tenant=tenant, project=project, agent_type="retriever", parent=root
        ),
    )
    with tenant_context(tenant):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    execution_record_sources(
        tenant=tenant, execution=retriever, results=[{"chunk": c, "score": 0.5} for c in chunks]
    )
    execution_finish(tenant=tenant, execution=retriever)
    version = document_version_create(
        tenant=tenant, project=project, document_type="about", content=f"About {name}"
    )
    execution_finish(tenant=tenant, execution=root, produced_version=version)
    return {"retriever": retriever, "version": version}


def test_the_outputs_flagged_as_built_on_it_are_listed(client, alice, tenant_a, file_storages):
    document = document_ingest(tenant=tenant_a, title="Handbook", text=TEXT, **CHUNKING)
    other = document_ingest(tenant=tenant_a, title="Other", text="one two three four")
    first = grounded_run(tenant_a, document, "Gemini")
    untouched = grounded_run(tenant_a, other, "Mercury")
    html = page(client, alice, document).content.decode()
    assert "No output is flagged as built on this document" in html

    changed = "alpha beta gamma delta EPSILON ZETA ETA THETA iota kappa lambda mu"
    document_reingest(tenant=tenant_a, document=document, text=changed, **CHUNKING)
    html = page(client, alice, document).content.decode()
    panel = section(html, "<h2>Outputs built on this document</h2>")
    assert "1 flags: an agent run read a chunk of this document that changed since" in panel
    assert f"/admin/agents/agentexecution/{first['retriever'].pk}/change/" in panel
    assert "Re-ingested (text changed)" in panel
    version_url = admin_url(DocumentVersion, "change", first["version"].pk)
    assert f'<a href="{version_url}">about v1</a>' in panel
    assert str(untouched["retriever"].pk) not in panel
    assert f"/admin/agents/stalesource/?q={document.pk}" in panel


def test_the_page_reads_a_bounded_number_of_queries(client, alice, tenant_a, file_storages):
    def queries(document) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert page(client, alice, document).status_code == 200
        return len(captured)

    changed = "alpha beta gamma delta EPSILON ZETA ETA THETA iota kappa lambda mu"
    small = document_ingest(tenant=tenant_a, title="Small", text=TEXT, **CHUNKING)
    grounded_run(tenant_a, small, "One")
    document_reingest(tenant=tenant_a, document=small, text=changed, **CHUNKING)
    words = " ".join(f"word{i}" for i in range(4 * 80))
    big = document_ingest(tenant=tenant_a, title="Big", text=words, **CHUNKING)
    for name in ("Two", "Three", "Four"):
        grounded_run(tenant_a, big, name)
    for query in ("word1", "word2 word3", "word40"):
        chunk_search(tenant=tenant_a, query=query, k=5, mode="fulltext")
    document_reingest(tenant=tenant_a, document=big, text=words.upper(), **CHUNKING)
    queries(small)  # the first request of a session reads more (the session, the user)
    assert queries(big) == queries(small)
