"""chunk_search: semantic, full-text and hybrid retrieval of a tenant's chunks."""

import functools
import random

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from pgvector import Vector

from core.db.connections import owner_connection
from core.hashing import sha256_hex
from documents import search, services
from documents.embedding import Embedder, get_embedder
from documents.models import Chunk, Document
from tenancy.context import tenant_context

pytestmark = pytest.mark.usefixtures("file_storages")

CORPUS = [
    "The billing service charges invoices to customers every month.",
    "Kubernetes deployment rolls containers out across the cluster nodes.",
    "Vector embeddings power semantic retrieval of document chunks.",
    "The onboarding checklist welcomes new engineers in their first week.",
]
MODES = ["semantic", "fulltext", "hybrid"]
VOCABULARY = [f"term{i}" for i in range(400)]


def ingest(tenant, text, project=None):
    document = services.document_ingest(tenant=tenant, title=text[:30], text=text, project=project)
    assert document.status == Document.Status.READY
    return document


@pytest.fixture
def corpus(tenant_a):
    return [ingest(tenant_a, text) for text in CORPUS]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_ranks_the_chunk_sharing_the_query_words_first(tenant_a, corpus, mode):
    results = search.chunk_search(
        tenant=tenant_a, query="kubernetes deployment cluster", k=3, mode=mode
    )
    assert results[0].document_id == corpus[1].pk
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    assert results == sorted(results, key=lambda r: -r.score)


def test_result_carries_the_chunk_and_its_content_hash(tenant_a, corpus):
    [result] = search.chunk_search(tenant=tenant_a, query="billing invoices", k=1)
    with tenant_context(tenant_a):
        chunk = Chunk.objects.get(pk=result.chunk_id)
    assert (result.document_id, result.ordinal, result.content) == (
        corpus[0].pk,
        chunk.ordinal,
        chunk.content,
    )
    assert result.chunk_sha256 == sha256_hex(chunk.content)


def test_hybrid_fuses_ranks_with_rrf(tenant_a, corpus):
    [first] = search.chunk_search(tenant=tenant_a, query="billing invoices", k=1)
    # First in both lists: 1/(60+1) twice.
    assert first.score == pytest.approx(2 / 61)


def test_fulltext_uses_english_stemming(tenant_a, corpus):
    results = search.chunk_search(tenant=tenant_a, query="invoice", mode="fulltext")
    assert [r.document_id for r in results] == [corpus[0].pk]


@pytest.mark.parametrize("mode", MODES)
def test_a_tenant_never_sees_another_tenants_chunks(tenant_a, tenant_b, mode):
    secret = ingest(tenant_a, "Secret merger plan codename falcon acquisition.")
    mine = ingest(tenant_b, "Team lunch menu for friday.")
    results = search.chunk_search(
        tenant=tenant_b, query="secret merger plan falcon", k=10, mode=mode
    )
    assert secret.pk not in {r.document_id for r in results}
    assert {r.document_id for r in results} <= {mine.pk}


def test_search_limited_to_a_project_or_documents(tenant_a):
    project = services.project_create(tenant=tenant_a, name="Apollo")
    inside = ingest(tenant_a, "Rocket engine thrust tests.", project=project)
    outside = ingest(tenant_a, "Rocket engine thrust budget.")
    by_project = search.chunk_search(tenant=tenant_a, query="rocket engine", project=project)
    assert {r.document_id for r in by_project} == {inside.pk}
    by_documents = search.chunk_search(
        tenant=tenant_a, query="rocket engine", documents=[outside.pk]
    )
    assert {r.document_id for r in by_documents} == {outside.pk}


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"mode": "fuzzy"}, "mode"),
        ({"k": 0}, "k"),
        ({"k": 1001}, "k"),
        ({"query": "  "}, "query"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(tenant_a, arguments, field):
    with pytest.raises(ValidationError) as error:
        search.chunk_search(tenant=tenant_a, **{"query": "x", **arguments})
    assert field in error.value.message_dict


def test_another_tenants_project_is_refused(tenant_a, tenant_b):
    project = services.project_create(tenant=tenant_a, name="Apollo")
    with pytest.raises(ValidationError) as error:
        search.chunk_search(tenant=tenant_b, query="x", project=project)
    assert "project" in error.value.message_dict


# --- Selectivity and query plans --------------------------------------------------


@functools.cache
def random_texts(count: int, seed: int) -> tuple[list[str], list[list[float]]]:
    """Texts of random shared words with their embeddings, computed once per session."""
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(VOCABULARY, 12)) for _ in range(count)]
    return texts, get_embedder().embed(texts)


def bulk_chunks(tenant, count: int, seed: int) -> Document:
    texts, vectors = random_texts(count, seed)
    model = get_embedder().model
    with tenant_context(tenant):
        document = Document.objects.create(
            tenant=tenant, title="bulk", storage_key=f"bulk/{tenant.pk}", status="ready"
        )
        Chunk.objects.bulk_create(
            Chunk(
                tenant=tenant,
                document=document,
                ordinal=i,
                content=text,
                token_count=12,
                embedding=vector,
                embedding_model=model,
            )
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        )
    return document


@pytest.fixture
def one_percent(tenant_a, tenant_b):
    """Tenant B holds 10 of 1000 chunks; both use the same words."""
    bulk_chunks(tenant_a, 990, seed=1)
    return bulk_chunks(tenant_b, 10, seed=2)


QUERY = " ".join(VOCABULARY[:6])


def force_index_order() -> None:
    # The planner rightly sorts a small table; without sorting, ORDER BY distance can
    # only come from the HNSW index.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")


def test_a_one_percent_tenant_gets_k_results(tenant_b, one_percent):
    results = search.chunk_search(tenant=tenant_b, query=QUERY, k=5, mode="semantic")
    assert len(results) == 5
    assert {r.document_id for r in results} == {one_percent.pk}


def test_iterative_index_scan_finds_k_results_at_one_percent(tenant_b, one_percent):
    with tenant_context(tenant_b):
        force_index_order()
        results = search.chunk_search(tenant=tenant_b, query=QUERY, k=5, mode="semantic")
        search.set_hnsw_iterative_scan(5)
        vector = get_embedder().embed([QUERY])[0]
        chunks = Chunk.objects.filter(tenant_id=tenant_b.pk)
        plan = search.semantic_queryset(chunks, vector, get_embedder().model)[:5].explain()
    assert "chunks_embedding_hnsw_idx" in plan
    assert len(results) == 5
    assert {r.document_id for r in results} == {one_percent.pk}


def test_without_iterative_scan_the_index_alone_misses_results(tenant_b, one_percent):
    """Why chunk_search sets hnsw.iterative_scan: 40 candidates hold ~0.4 of B's chunks."""
    with tenant_context(tenant_b):
        force_index_order()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.iterative_scan = off")
            cursor.execute("SET LOCAL hnsw.ef_search = 40")
        vector = get_embedder().embed([QUERY])[0]
        chunks = Chunk.objects.filter(tenant_id=tenant_b.pk)
        rows = list(search.semantic_queryset(chunks, vector, get_embedder().model)[:5])
    assert len(rows) < 5


def test_max_scan_tuples_grows_with_k_up_to_a_cap(monkeypatch):
    monkeypatch.setattr(search, "HNSW_MIN_SCAN_TUPLES", 1_000)
    monkeypatch.setattr(search, "HNSW_SCAN_TUPLES_PER_ROW", 100)
    monkeypatch.setattr(search, "HNSW_MAX_SCAN_TUPLES", 50_000)
    assert [search.hnsw_max_scan_tuples(k) for k in (1, 10, 20, 400, 1000)] == [
        1_000,
        1_000,
        2_000,
        40_000,
        50_000,
    ]


def test_the_default_scan_reads_enough_tuples_for_the_largest_k_at_one_percent():
    # A tenant holding 1% of the chunks: ~100 tuples read per row it gets.
    assert search.hnsw_max_scan_tuples(search.SEARCH_MAX_K) >= 100 * search.SEARCH_MAX_K


def index_scan(tenant, k: int) -> list:
    """What the HNSW index alone returns for the tenant, as chunk_search configures it."""
    force_index_order()
    search.set_hnsw_iterative_scan(k)
    vector = get_embedder().embed([QUERY])[0]
    chunks = Chunk.objects.filter(tenant_id=tenant.pk)
    return list(search.semantic_queryset(chunks, vector, get_embedder().model)[:k])


def exact_top(tenant, k: int) -> list:
    """The tenant's k nearest chunk ids, from every distance, ties by id."""
    vector = get_embedder().embed([QUERY])[0]
    chunks = Chunk.objects.filter(tenant_id=tenant.pk)
    rows = search.semantic_queryset(chunks, vector, get_embedder().model, exact=True)
    return [row[0] for row in sorted(rows, key=lambda row: (row[4], row[0]))[:k]]


@pytest.fixture
def small_scan_limits(monkeypatch):
    """The scan limits scaled down to the 1000 chunks of the one_percent fixture."""
    monkeypatch.setattr(search, "HNSW_MIN_EF_SEARCH", 10)
    monkeypatch.setattr(search, "HNSW_MIN_SCAN_TUPLES", 100)


@pytest.mark.django_db(transaction=True)
def test_a_large_k_at_one_percent_scans_more_of_the_index(
    tenant_b, one_percent, small_scan_limits, monkeypatch
):
    # The fixed floor alone finds few of B's rows; scaling with k lets the same index
    # scan return all k. On a graph of these 1000 chunks alone: vacuumed first, since the
    # dead entries of earlier tests' rolled-back chunks (their number depends on which
    # tests ran before) would otherwise decide what a scan of 100 or 40,000 tuples finds.
    analyze_chunks()
    with tenant_context(tenant_b):
        monkeypatch.setattr(search, "HNSW_SCAN_TUPLES_PER_ROW", 0)
        assert len(index_scan(tenant_b, 8)) < 8
        monkeypatch.setattr(search, "HNSW_SCAN_TUPLES_PER_ROW", 5000)
        assert len(index_scan(tenant_b, 8)) == 8


def test_a_short_index_scan_is_run_again_exactly(
    tenant_b, one_percent, small_scan_limits, monkeypatch
):
    monkeypatch.setattr(search, "HNSW_MAX_SCAN_TUPLES", 100)
    with tenant_context(tenant_b):
        assert len(index_scan(tenant_b, 8)) < 8
        results = search.chunk_search(tenant=tenant_b, query=QUERY, k=8, mode="semantic")
        expected = exact_top(tenant_b, 8)
    assert [r.chunk_id for r in results] == expected


def test_the_exact_query_cannot_use_the_hnsw_index(tenant_b, one_percent):
    vector = get_embedder().embed([QUERY])[0]
    chunks = Chunk.objects.filter(tenant_id=tenant_b.pk)
    with tenant_context(tenant_b):
        force_index_order()
        exact = search.semantic_queryset(chunks, vector, get_embedder().model, exact=True)
        plan = exact[:5].explain()
    assert "chunks_embedding_hnsw_idx" not in plan


def analyze_chunks() -> None:
    # As autovacuum would: statistics, and the GIN pending list merged into the index.
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE chunks")


@pytest.mark.django_db(transaction=True)
def test_semantic_query_plan_uses_the_hnsw_index(tenant_a, tenant_b):
    bulk_chunks(tenant_a, 990, seed=1)
    bulk_chunks(tenant_b, 10, seed=2)
    analyze_chunks()
    vector = get_embedder().embed([QUERY])[0]
    chunks = Chunk.objects.filter(tenant_id=tenant_a.pk)
    with tenant_context(tenant_a):
        force_index_order()
        search.set_hnsw_iterative_scan(5)
        plan = search.semantic_queryset(chunks, vector, get_embedder().model)[:5].explain()
    assert "Index Scan using chunks_embedding_hnsw_idx" in plan


def fulltext_match_is_leakproof() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proleakproof FROM pg_proc "
            "WHERE oid = 'ts_match_vq(tsvector, tsquery)'::regprocedure"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_fulltext_query_plan_can_use_the_gin_index(tenant_a, tenant_b):
    """Under row-level security, PostgreSQL only lets a leakproof operator use an index.

    `@@` (ts_match_vq) is not leakproof by default, so the tenant's rows are found by
    chunks_tenant_document_idx and then matched; a superuser can mark it LEAKPROOF
    (ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF) to let the GIN index in.
    """
    if not fulltext_match_is_leakproof():
        pytest.skip("ts_match_vq is not LEAKPROOF here: RLS keeps @@ away from the GIN index")
    bulk_chunks(tenant_a, 990, seed=1)
    bulk_chunks(tenant_b, 10, seed=2)
    analyze_chunks()
    with tenant_context(tenant_a):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
        chunks = Chunk.objects.filter(tenant_id=tenant_a.pk)
        plan = search.fulltext_queryset(chunks, "term1 term2")[:5].explain()
    assert "chunks_search_vector_gin" in plan


def test_search_vector_is_a_generated_column_under_a_gin_index(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = 'chunks'::regclass AND a.attname = 'search_vector' "
            "AND a.attgenerated = 's'"
        )
        [expression] = cursor.fetchone()
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'chunks_search_vector_gin'"
        )
        [index] = cursor.fetchone()
    assert "to_tsvector('english'::regconfig" in expression
    assert "USING gin (search_vector)" in index


def test_a_large_candidate_set_is_searched_through_the_hnsw_index(tenant_a, monkeypatch):
    bulk_chunks(tenant_a, 30, seed=3)
    # As on a big table holding many of the tenant's chunks (the estimate is tested below).
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 10)
    monkeypatch.setattr(search, "_candidates_estimate", lambda scope, model: 30)
    with tenant_context(tenant_a), CaptureQueriesContext(connection) as queries:
        results = search.chunk_search(tenant=tenant_a, query="term1 term2", k=5, mode="semantic")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('enable_sort')")
            # Sorting is off for the one kNN query only, not for the caller's transaction.
            assert cursor.fetchone()[0] == "on"
    assert len(results) == 5
    sqls = [q["sql"] for q in queries]
    knn = next(i for i, sql in enumerate(sqls) if "<=>" in sql and "LIMIT" in sql)
    # Sorting is off for exactly that query, so its plan is the ordered HNSW index scan
    # (tests/tenancy/test_rls.py shows that plan under row-level security).
    assert "set_config('enable_sort', 'off', true)" in sqls[knn - 1]
    # Set back after it: at once, or after the exact read that follows a short index scan
    # (the shared graph also holds dead entries of earlier tests' rolled-back chunks).
    assert any("set_config('enable_sort'" in sql for sql in sqls[knn + 1 :])


@pytest.mark.django_db(transaction=True)
def test_the_index_threshold_grows_with_k_and_the_table(tenant_a, monkeypatch):
    bulk_chunks(tenant_a, 200, seed=4)
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("ANALYZE chunks")
    with tenant_context(tenant_a):
        table_chunks = search._search_facts(tenant_a.pk).table_chunks
    assert search._index_threshold(10, table_chunks) is None  # a small table: the planner decides
    monkeypatch.setattr(search, "INDEX_HINT_MIN_TABLE_ROWS", 100)
    small, large = (
        search._index_threshold(10, table_chunks),
        search._index_threshold(1000, table_chunks),
    )
    # sqrt(6 * limit * 200 chunks)
    assert (small, large) == (109, 1095)


def test_a_small_candidate_set_is_sorted_exactly(tenant_a, corpus):
    with tenant_context(tenant_a), CaptureQueriesContext(connection) as queries:
        search.chunk_search(tenant=tenant_a, query="vector search", k=3, mode="semantic")
    assert not any("enable_sort" in q["sql"] for q in queries)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_candidates_are_estimated_from_statistics_not_counted(tenant_a, tenant_b):
    bulk_chunks(tenant_a, 990, seed=1)
    bulk_chunks(tenant_b, 10, seed=2)
    analyze_chunks()
    model = get_embedder().model
    estimates = {}
    for tenant in (tenant_a, tenant_b):
        with tenant_context(tenant), CaptureQueriesContext(connection) as queries:
            estimates[tenant.slug] = search._candidates_estimate(Q(), model)
        assert [q["sql"].split()[0] for q in queries] == ["EXPLAIN"]
    # The row-level security policy alone narrows to the tenant: each share counted once.
    assert estimates == {tenant_a.slug: pytest.approx(990, rel=0.1), tenant_b.slug: 10}
    # A model without chunks: the planner's floor of one row, below any threshold.
    with tenant_context(tenant_a):
        assert search._candidates_estimate(Q(), "another-model") <= 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_a_search_counts_no_rows_and_restores_nothing_when_its_transaction_ends(
    tenant_a, monkeypatch, mode
):
    bulk_chunks(tenant_a, 30, seed=3)
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 10)
    monkeypatch.setattr(search, "_candidates_estimate", lambda scope, model: 30)
    with CaptureQueriesContext(connection) as queries:
        results = search.chunk_search(tenant=tenant_a, query="term1 term2", k=5, mode=mode)
    assert len(results) == 5
    sqls = [q["sql"] for q in queries]
    assert not any("count(" in sql.lower() for sql in sqls)
    # The search began its transaction: its settings end with it, the last query is
    # followed by COMMIT alone.
    assert sqls[-1] == "COMMIT"
    assert "enable_sort" not in sqls[-2] and "set_config" not in sqls[-2]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_sort'), current_setting('hnsw.ef_search')")
        assert cursor.fetchone() == ("on", "40")


def test_the_query_vector_travels_in_binary(tenant_a, corpus):
    captured = []

    def record(execute, sql, params, many, context):
        captured.append((sql, params, type(context["cursor"].cursor).__name__))
        return execute(sql, params, many, context)

    # Every chunk of the tenant: the rows compared below cannot differ by a tie at the k-th.
    with tenant_context(tenant_a):
        k = Chunk.objects.count()
    with connection.execute_wrapper(record):
        results = search.chunk_search(tenant=tenant_a, query="billing", k=k, mode="semantic")
    # One kNN statement, or two where the index scan stopped short of k and the
    # tenant's rows were then read exactly (which depends on the table's statistics).
    knn = [c for c in captured if "<=>" in c[0]]
    assert 1 <= len(knn) <= 2
    for sql, _params, cursor_class in knn:
        assert cursor_class == "ServerBindingCursor"
        assert "%s::vector" in sql and len(sql) < 1000
    [vector] = [p for p in knn[0][1] if isinstance(p, Vector)]
    assert vector.dimensions() == get_embedder().dimension
    # The same rows the QuerySet gives through Django's own (client-side binding) cursor,
    # read exactly: without the search's iterative scan an HNSW index scan may return
    # fewer than k rows, whichever plan the table's statistics of the moment lead to.
    with tenant_context(tenant_a):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
        chunks = Chunk.objects.filter(tenant_id=tenant_a.pk)
        expected = search.semantic_queryset(chunks, vector.to_list(), get_embedder().model)
        expected = list(expected[:k])
    assert [(r.chunk_id, r.document_id, r.ordinal, r.content) for r in results] == [
        row[:4] for row in sorted(expected, key=lambda row: (row[4], row[0]))
    ]
    assert [r.score for r in results] == pytest.approx([1.0 - row[4] for row in expected])


def plan_the_server_uses(context, sql: str, params) -> str:
    """EXPLAIN EXECUTE of the prepared statement `sql` on this connection: the plan the
    plan cache hands out (a generic one if it keeps one), under the current settings."""
    connection = context["connection"]
    with connection.client_side_binding(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM pg_prepared_statements "
            "WHERE NOT from_sql AND statement LIKE %s AND statement NOT LIKE %s",
            ["%<=>%LIMIT%", "%+ 0%"],
        )
        [(name,)] = cursor.fetchall()
        placeholders = ", ".join(["%s"] * len(params))
        cursor.execute(f"EXPLAIN EXECUTE {name}({placeholders})", list(params))
        return "\n".join(line for (line,) in cursor.fetchall())


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_big_tenant_after_a_small_one_on_one_connection_uses_the_index(
    tenant_a, tenant_b, monkeypatch
):
    """Issue 17, point 4: a plan cached for a small tenant is not reused for a big one.

    The kNN statement is the same text for every tenant, so the connection prepares it
    (DATABASE_PREPARED_STATEMENTS). The session pins the plan cache's choice of a
    generic plan, which PostgreSQL otherwise makes by cost whenever a generic plan looks
    no dearer than the custom ones (it did at 10,000 chunks per tenant): the sort made
    for the small tenant would then serve the big tenant too, enable_sort off or not.
    """
    if not connection.settings_dict["OPTIONS"].get("prepare_threshold"):
        pytest.skip("DATABASE_PREPARED_STATEMENTS is off: nothing is prepared")
    bulk_chunks(tenant_a, 900, seed=1)
    bulk_chunks(tenant_b, 100, seed=2)
    analyze_chunks()
    # The table's 1,000 chunks as a big one: tenant A's 900 go through the index, B's
    # 100 are sorted (sqrt(6 * 10 * 1000) = 244).
    monkeypatch.setattr(search, "INDEX_HINT_MIN_TABLE_ROWS", 1_000)
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
        for _ in range(threshold + 2):
            assert (
                len(search.chunk_search(tenant=tenant_b, query=QUERY, k=10, mode="semantic")) == 10
            )
        plans = []

        def explain_knn(execute, sql, params, many, context):
            if "<=>" in sql and "+ 0" not in sql:
                plans.append(plan_the_server_uses(context, sql, params))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(explain_knn):
            results = search.chunk_search(tenant=tenant_a, query=QUERY, k=10, mode="semantic")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    assert len(results) == 10
    [plan] = plans
    assert "Index Scan using chunks_embedding_hnsw_idx" in plan, plan


@pytest.mark.parametrize(
    "answer",
    [[], [[float("nan")] * 1536], [[1e39] * 1536], [[0.5] * 1535]],
    ids=["no vector", "nan", "beyond a float", "short"],
)
@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_a_query_embedding_that_cannot_be_searched_is_refused(tenant_a, corpus, mode, answer):
    class Answering(Embedder):
        def embed(self, texts):
            return answer

    bad = Answering(function=None, model=get_embedder().model, dimension=1536)
    with pytest.raises(ValidationError) as error:
        search.chunk_search(tenant=tenant_a, query="billing", mode=mode, embedder=bad)
    assert error.value.message_dict["embedding"][0].startswith("embedder ")
