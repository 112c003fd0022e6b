"""The search log (search_queries): every chunk_search leaves one row; chunks' hits."""

import logging
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from core.hashing import sha256_hex
from core.ids import uuid7
from documents import search, services
from documents.models import Chunk, Document, SearchQuery
from documents.selectors import chunk_hits
from tenancy.context import tenant_context
from tenancy.models import User
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_member

pytestmark = pytest.mark.usefixtures("file_storages")

TEXTS = [
    "The billing service charges invoices to customers every month.",
    "Kubernetes deployment rolls containers out across the cluster nodes.",
    "Vector embeddings power semantic retrieval of document chunks.",
]


@pytest.fixture
def corpus(tenant_a):
    documents = [
        services.document_ingest(tenant=tenant_a, title=text[:20], text=text) for text in TEXTS
    ]
    assert {d.status for d in documents} == {Document.Status.READY}
    return documents


def log_reader(tenant):
    """An owner of `tenant`: the log is read whole by its owners and admins only."""
    email = f"log-reader-{tenant.pk}@example.com"
    return User.objects.filter(email=email).first() or make_member(tenant, email)


def logged(tenant, user=None) -> list[SearchQuery]:
    """The log as `user` reads it (by default, as an owner of the tenant)."""
    with tenant_context(tenant, user=user or log_reader(tenant)):
        return list(SearchQuery.objects.order_by("id"))


@pytest.mark.parametrize("mode", search.SEARCH_MODES)
def test_every_mode_logs_one_row_with_what_was_asked_and_returned(tenant_a, corpus, mode):
    results = search.chunk_search(tenant=tenant_a, query="billing invoices", k=2, mode=mode)
    [entry] = logged(tenant_a)
    assert (entry.tenant_id, entry.mode, entry.k, entry.filters) == (tenant_a.pk, mode, 2, {})
    assert entry.query == "billing invoices"
    assert entry.query_sha256 == sha256_hex("billing invoices")
    assert entry.chunk_ids == [result.chunk_id for result in results] != []
    assert entry.user_id is None and entry.execution_id is None
    assert 0 < entry.latency_ms < 60_000


def test_a_search_that_finds_nothing_is_logged_too(tenant_a, corpus):
    assert search.chunk_search(tenant=tenant_a, query="zeppelin", mode="fulltext") == []
    [entry] = logged(tenant_a)
    assert entry.chunk_ids == []


def test_hash_only_setting_stores_no_text(tenant_a, corpus, settings):
    settings.SEARCH_LOG_QUERY_TEXT = False
    search.chunk_search(tenant=tenant_a, query="secret billing plan", mode="hybrid")
    [entry] = logged(tenant_a)
    assert entry.query == ""
    assert entry.query_sha256 == sha256_hex("secret billing plan")
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM search_queries WHERE strpos(search_queries::text, %s) > 0",
            ["secret billing plan"],
        )
        assert cursor.fetchone()[0] == 0


def test_a_members_search_logs_the_member(tenant_a, corpus):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    search.chunk_search(tenant=tenant_a, query="kubernetes", user=viewer)
    [entry] = logged(tenant_a)
    assert entry.user_id == viewer.pk


def test_the_user_of_an_enclosing_context_is_logged(tenant_a, corpus):
    """A request's user (its tenant context), when the call names none."""
    editor = make_member(tenant_a, "editor@example.com", role="editor")
    with tenant_context(tenant_a, user=editor):
        search.chunk_search(tenant=tenant_a, query="kubernetes", mode="fulltext")
    [entry] = logged(tenant_a)
    assert entry.user_id == editor.pk


def test_an_agent_execution_is_recorded(tenant_a, corpus):
    run_id = uuid.uuid4()
    search.chunk_search(tenant=tenant_a, query="embeddings", execution=run_id)
    [entry] = logged(tenant_a)
    assert (entry.execution_id, entry.user_id) == (run_id, None)


def test_a_bad_execution_is_refused_naming_it_and_nothing_is_logged(tenant_a, tenant_b, corpus):
    with pytest.raises(ValidationError) as refused:
        search.chunk_search(tenant=tenant_a, query="embeddings", execution="not-a-run")  # type: ignore[arg-type]
    assert "execution" in refused.value.message_dict
    # A row of another tenant (any row with a pk and a tenant_id stands for a run here).
    with pytest.raises(ValidationError) as refused:
        search.chunk_search(
            tenant=tenant_a,
            query="embeddings",
            execution=corpus[0].__class__(id=uuid.uuid4(), tenant_id=tenant_b.pk),
        )
    assert "another tenant" in str(refused.value.message_dict["execution"])
    assert logged(tenant_a) == []


def test_another_tenant_sees_none_of_the_log(tenant_a, tenant_b, corpus):
    search.chunk_search(tenant=tenant_a, query="billing")
    assert len(logged(tenant_a)) == 1
    assert logged(tenant_b) == []
    # Outside any tenant context, row-level security shows nothing.
    assert not SearchQuery.objects.exists()
    with tenant_context(tenant_b), pytest.raises(Exception, match="row-level security"):
        with transaction.atomic():
            SearchQuery.objects.create(
                tenant_id=tenant_a.pk,
                mode="semantic",
                query_sha256=sha256_hex(""),
                k=1,
                latency_ms=0,
            )


def test_chunk_hits_count_the_searches_that_returned_the_chunk(tenant_a, tenant_b, corpus):
    for query in ("billing invoices", "billing customers", "kubernetes cluster"):
        search.chunk_search(tenant=tenant_a, query=query, k=1, mode="fulltext")
    with tenant_context(tenant_a):
        billing = corpus[0].chunks.get()
        kubernetes = corpus[1].chunks.get()
        never = corpus[2].chunks.get()
    with tenant_context(tenant_a, user=log_reader(tenant_a)):
        hits = chunk_hits(tenant=tenant_a, chunk=billing)
        assert hits.count == 2
        assert [entry.query for entry in hits.latest] == ["billing customers", "billing invoices"]
        assert chunk_hits(tenant=tenant_a, chunk=kubernetes).count == 1
        assert chunk_hits(tenant=tenant_a, chunk=never) == search_hits_none()
        assert len(chunk_hits(tenant=tenant_a, chunk=billing, latest=1).latest) == 1
    with pytest.raises(ValidationError, match="latest"):
        chunk_hits(tenant=tenant_a, chunk=billing, latest=-1)
    with pytest.raises(Exception):  # noqa: B017 (require_tenant's refusal)
        chunk_hits(tenant=tenant_b, chunk=billing)


def search_hits_none():
    from documents.selectors import ChunkHits

    return ChunkHits(count=0, latest=[])


def test_a_log_that_cannot_be_written_fails_neither_the_search_nor_the_transaction(
    tenant_a, corpus, caplog
):
    """The caller's transaction is read-only: the insert fails in its savepoint, the
    search returns its results and the transaction is still usable."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
        with caplog.at_level(logging.WARNING, logger="documents.search"):
            results = search.chunk_search(tenant=tenant_a, query="billing", mode="hybrid")
        assert results and results[0].document_id == corpus[0].pk
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    assert "search log not written" in caplog.text
    assert "read-only transaction" in caplog.text
    assert logged(tenant_a) == []


def test_a_log_row_goes_with_the_callers_transaction(tenant_a, corpus):
    """Inside a caller's transaction the row commits or rolls back with it."""
    with pytest.raises(RuntimeError), transaction.atomic():
        search.chunk_search(tenant=tenant_a, query="billing")
        assert len(logged(tenant_a)) == 1
        raise RuntimeError("the caller gives up")
    assert logged(tenant_a) == []


# The admin ------------------------------------------------------------------------------


def test_owners_read_the_log_filtered_by_mode_user_and_chunk(client, tenant_a, corpus):
    owner = make_member(tenant_a, "owner@example.com", is_staff=True)
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    search.chunk_search(tenant=tenant_a, query="billing invoices", mode="fulltext", k=1)
    # Scoped to its document: the HNSW graph may still hold earlier tests' rolled-back
    # chunks, which can make an approximate k=1 miss it, and the filters below need it.
    [found] = search.chunk_search(
        tenant=tenant_a,
        query="kubernetes deployment cluster",
        mode="semantic",
        k=1,
        user=viewer,
        documents=[corpus[1]],
    )
    assert found.document_id == corpus[1].pk
    with tenant_context(tenant_a):
        billing = corpus[0].chunks.get()
    logged_in(client, owner)
    url = admin_url(SearchQuery, "changelist")

    page = client.get(url).content.decode()
    assert "billing invoices" in page and "kubernetes deployment cluster" in page
    by_mode = client.get(url, {"mode__exact": "fulltext"}).content.decode()
    assert "billing invoices" in by_mode and "kubernetes deployment cluster" not in by_mode
    by_user = client.get(url, {"user": "viewer@example.com"}).content.decode()
    assert "kubernetes deployment cluster" in by_user and "billing invoices" not in by_user
    by_chunk = client.get(url, {"chunk": str(billing.pk)}).content.decode()
    assert "billing invoices" in by_chunk and "kubernetes deployment cluster" not in by_chunk
    [entry] = [e for e in logged(tenant_a) if e.mode == "fulltext"]
    entry_page = client.get(admin_url(SearchQuery, "change", entry.pk))
    assert entry_page.status_code == 200
    assert admin_url(Chunk, "change", billing.pk) in entry_page.content.decode()
    assert b'name="_save"' not in entry_page.content


def test_a_viewer_may_not_read_the_log_but_sees_a_chunks_hits(client, tenant_a, corpus):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer", is_staff=True)
    for _ in range(2):
        search.chunk_search(tenant=tenant_a, query="invoices billing", mode="fulltext", k=1)
    with tenant_context(tenant_a):
        billing = corpus[0].chunks.get()
    logged_in(client, viewer)
    assert client.get(admin_url(SearchQuery, "changelist")).status_code == 403
    page = client.get(admin_url(Chunk, "change", billing.pk)).content.decode()
    assert "Returned by 2 logged searches" in page
    assert "invoices billing" not in page, "the query text is for owners and admins"


def test_a_logged_search_is_a_record_only_its_text_may_be_emptied(tenant_a, corpus):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    search.chunk_search(tenant=tenant_a, query="billing", mode="fulltext", user=viewer)
    with tenant_context(tenant_a, user=viewer):
        rows = SearchQuery.objects.all()
        for change in ({"query": "something else"}, {"k": 3}, {"chunk_ids": []}):
            with pytest.raises(IntegrityError, match="is a record"), transaction.atomic():
                rows.update(**change)
        assert rows.update(query="") == 1
        assert rows.get().query_sha256 == sha256_hex("billing")


# Who reads the log below the tenant ----------------------------------------------------


@pytest.fixture
def three_searchers(tenant_a, corpus):
    """A viewer's, an editor's and a userless search (an agent's) that all return the
    billing chunk."""
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    editor = make_member(tenant_a, "editor@example.com", role="editor")
    for user in (viewer, editor, None):
        search.chunk_search(tenant=tenant_a, query="billing", mode="fulltext", k=1, user=user)
    return viewer, editor


def test_a_member_reads_only_their_own_searches_through_the_orm_and_raw_sql(
    tenant_a, three_searchers
):
    viewer, editor = three_searchers
    for member in (viewer, editor):
        assert [entry.user_id for entry in logged(tenant_a, member)] == [member.pk]
        with tenant_context(tenant_a, user=member), connection.cursor() as cursor:
            cursor.execute("SELECT current_user, user_id FROM search_queries")
            rows = cursor.fetchall()
            assert [row[1] for row in rows] == [member.pk]
            assert rows[0][0] != "postgres"  # the runtime role, under forced RLS


def test_a_member_may_not_log_a_search_as_someone_else(tenant_a, three_searchers):
    viewer, editor = three_searchers

    def insert(cursor, user_id) -> None:
        cursor.execute(
            "INSERT INTO search_queries (id, tenant_id, user_id, mode, query, "
            "query_sha256, filters, k, latency_ms, chunk_ids) "
            "VALUES (%s, %s, %s, 'fulltext', '', %s, '{}', 1, 0, '{}')",
            [uuid7(), tenant_a.pk, user_id, sha256_hex("")],
        )

    with tenant_context(tenant_a, user=viewer), connection.cursor() as cursor:
        for someone_else in (editor.pk, None):
            with pytest.raises(Exception, match="row-level security"), transaction.atomic():
                insert(cursor, someone_else)
        insert(cursor, viewer.pk)
    assert len(logged(tenant_a, viewer)) == 2


def test_owners_read_every_search_and_no_user_reads_none(tenant_a, three_searchers):
    viewer, editor = three_searchers
    assert [entry.user_id for entry in logged(tenant_a)] == [viewer.pk, editor.pk, None]
    with tenant_context(tenant_a):
        assert not SearchQuery.objects.exists()
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM search_queries")
        assert cursor.fetchone() == (0,)


def test_a_member_counts_every_hit_of_a_chunk_but_lists_only_their_own(tenant_a, three_searchers):
    viewer, _ = three_searchers
    with tenant_context(tenant_a):
        billing = Chunk.objects.get(document__title__startswith="The billing")
    with tenant_context(tenant_a, user=viewer):
        hits = chunk_hits(tenant=tenant_a, chunk=billing)
    assert hits.count == 3
    assert [entry.user_id for entry in hits.latest] == [viewer.pk]
    with tenant_context(tenant_a, user=log_reader(tenant_a)):
        assert len(chunk_hits(tenant=tenant_a, chunk=billing).latest) == 3


def test_no_count_for_a_chunk_the_caller_may_not_see(tenant_a, tenant_b, three_searchers):
    with tenant_context(tenant_a):
        billing = Chunk.objects.get(document__title__startswith="The billing")
    # Another tenant's context: the chunk is not visible, the function counts nothing.
    with tenant_context(tenant_b), connection.cursor() as cursor:
        cursor.execute("SELECT search_queries_chunk_hits(%s, %s)", [tenant_a.pk, billing.pk])
        assert cursor.fetchone() == (None,)
        cursor.execute("SELECT current_setting('app.rls_bypass', true)")
        assert cursor.fetchone()[0] in (None, "")


def test_a_callers_transaction_keeps_its_durability(tenant_a, corpus):
    """The log's write skips the WAL flush at commit only in a transaction the search
    began itself (documents.search._log_search): a caller's keeps synchronous_commit."""
    with transaction.atomic(), connection.cursor() as cursor:
        search.chunk_search(tenant=tenant_a, query="billing", mode="fulltext")
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)
    assert len(logged(tenant_a)) == 1
