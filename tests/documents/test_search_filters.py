"""chunk_search's metadata filters (documents/filters.py): each operator, with scope and
access, k at 1/10/50 % selectivity against the exact answer, and malformed filters."""

import functools
import itertools
import random

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st
from pgvector import Vector

from core.db.connections import owner_connection
from documents import search
from documents.embedding import get_embedder
from documents.filters import OPERATORS, parse_filters
from documents.models import Chunk, Document, Project
from documents.services import document_restrict
from tenancy.context import tenant_context
from tests.factories import make_member

pytestmark = pytest.mark.usefixtures("file_storages")

MODES = ["semantic", "fulltext", "hybrid"]
WORDS = [f"word{i}" for i in range(300)]


@functools.cache
def texts_and_vectors(count: int, seed: int) -> tuple[list[str], list[list[float]]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(WORDS, 12)) for _ in range(count)]
    return texts, get_embedder().embed(texts)


def add_document(tenant, title, metadata, chunk_metadata, *, project=None, seed=0, texts=None):
    """A ready document with one chunk per entry of `chunk_metadata`."""
    if texts is None:
        texts, vectors = texts_and_vectors(len(chunk_metadata), seed)
    else:
        vectors = get_embedder().embed(texts)
    with tenant_context(tenant):
        document = Document.objects.create(
            tenant=tenant,
            project=project,
            title=title,
            storage_key=f"filters/{tenant.pk}/{title}",
            status="ready",
            metadata=metadata,
        )
        Chunk.objects.bulk_create(
            Chunk(
                tenant=tenant,
                document=document,
                ordinal=ordinal,
                content=text,
                token_count=12,
                embedding=vector,
                embedding_model=get_embedder().model,
                metadata=meta,
            )
            for ordinal, (text, vector, meta) in enumerate(
                zip(texts, vectors, chunk_metadata, strict=False)
            )
        )
    return document


SHARED = "alpha beta gamma delta"


@pytest.fixture
def library(tenant_a):
    """Four documents of tenant A, two chunks each, all holding the shared words."""
    documents = {}
    specs = {
        "en-2023": ({"lang": "en", "year": 2023, "published": "2023-05-01", "tags": ["x", "y"]}),
        "en-2024": ({"lang": "en", "year": 2024, "published": "2024-02-10", "reviewed": None}),
        "fr-2024": ({"lang": "fr", "year": 2024, "published": "2024-09-30", "tags": ["y"]}),
        "de-none": ({"lang": "de", "year": "unknown", "published": "someday", "nested": {"a": 1}}),
    }
    for title, metadata in specs.items():
        documents[title] = add_document(
            tenant_a,
            title,
            metadata,
            [{"page": 1, "kind": "body"}, {"page": 7, "kind": "table"}],
            texts=[f"{SHARED} {title} first", f"{SHARED} {title} second"],
        )
    return documents


def titles(results, library) -> set[str]:
    by_id = {document.pk: title for title, document in library.items()}
    return {by_id[result.document_id] for result in results}


def pages(tenant, results) -> set[int]:
    with tenant_context(tenant):
        return {
            chunk.metadata["page"]
            for chunk in Chunk.objects.filter(pk__in=[r.chunk_id for r in results])
        }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"document.lang": "en"}, {"en-2023", "en-2024"}),
        ({"document.lang": {"eq": "fr"}}, {"fr-2024"}),
        ({"document.lang": {"in": ["fr", "de"]}}, {"fr-2024", "de-none"}),
        ({"document.year": {"gte": 2024}}, {"en-2024", "fr-2024"}),
        ({"document.year": {"gt": 2023, "lt": 2024.5}}, {"en-2024", "fr-2024"}),
        ({"document.year": {"lte": 2023}}, {"en-2023"}),
        ({"document.published": {"gte": "2024-01-01", "lt": "2024-06-01"}}, {"en-2024"}),
        ({"document.published": {"lt": "2024-01-01T00:00:00+00:00"}}, {"en-2023"}),
        ({"document.tags": {"contains": ["y"]}}, {"en-2023", "fr-2024"}),
        ({"document.tags": {"contains": "x"}}, {"en-2023"}),
        ({"document.reviewed": {"exists": True}}, {"en-2024"}),
        ({"document.reviewed": None}, {"en-2024"}),
        ({"document.tags": {"exists": False}}, {"en-2024", "de-none"}),
        ({"document.nested.a": 1}, {"de-none"}),
        ({"document.nested": {"contains": {"a": 1}}}, {"de-none"}),
        ({"document.lang": "en", "document.year": 2024}, {"en-2024"}),
        ({"document.missing": "en"}, set()),
        ({"document.missing": {"gte": 0}}, set()),
        ({"document.missing.deeper": {"exists": True}}, set()),
    ],
)
def test_each_operator_on_the_documents_metadata(tenant_a, library, mode, filters, expected):
    results = search.chunk_search(tenant=tenant_a, query=SHARED, k=20, mode=mode, filters=filters)
    assert titles(results, library) == expected
    # Both chunks of every matching document.
    assert len(results) == 2 * len(expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("filters", "expected_pages"),
    [
        ({"chunk.page": 7}, {7}),
        ({"chunk.page": {"gt": 3}}, {7}),
        ({"chunk.kind": {"in": ["body"]}}, {1}),
        ({"chunk.kind": {"exists": True}}, {1, 7}),
        ({"chunk.kind": {"exists": False}}, set()),
        ({"chunk.page": {"gte": 1}, "document.lang": "fr"}, {1, 7}),
    ],
)
def test_each_operator_on_the_chunks_metadata(tenant_a, library, mode, filters, expected_pages):
    results = search.chunk_search(tenant=tenant_a, query=SHARED, k=20, mode=mode, filters=filters)
    assert pages(tenant_a, results) == expected_pages


def test_a_value_of_another_type_does_not_match_and_fails_nothing(tenant_a, library):
    # "unknown" is no number and "someday" no date: the rows are left out, no error.
    for filters in ({"document.year": {"gte": 0}}, {"document.published": {"gte": "1900-01-01"}}):
        results = search.chunk_search(tenant=tenant_a, query=SHARED, k=20, filters=filters)
        assert "de-none" not in titles(results, library)
        assert len(titles(results, library)) == 3


@pytest.mark.parametrize("mode", MODES)
def test_filters_combine_with_project_and_document_scope(tenant_a, library, mode):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Filters")
        Document.objects.filter(pk=library["en-2024"].pk).update(project=project)
    en = {"document.lang": "en"}
    in_project = search.chunk_search(
        tenant=tenant_a, query=SHARED, k=20, mode=mode, project=project, filters=en
    )
    assert titles(in_project, library) == {"en-2024"}
    listed = search.chunk_search(
        tenant=tenant_a,
        query=SHARED,
        k=20,
        mode=mode,
        documents=[library["en-2023"], library["fr-2024"]],
        filters=en,
    )
    assert titles(listed, library) == {"en-2023"}


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_never_reveals_a_restricted_document(tenant_a, alice, library, mode):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    document_restrict(tenant=tenant_a, document=library["fr-2024"], by=alice)
    only_the_hidden = {"document.lang": "fr"}
    for filters in (only_the_hidden, {"document.year": 2024}, {"chunk.page": 7}):
        seen = search.chunk_search(
            tenant=tenant_a, query=SHARED, k=20, mode=mode, filters=filters, user=viewer
        )
        assert "fr-2024" not in titles(seen, library)
    assert (
        search.chunk_search(
            tenant=tenant_a, query=SHARED, k=20, mode=mode, filters=only_the_hidden, user=viewer
        )
        == []
    )
    # The owner sees it through the same filter.
    owner = search.chunk_search(
        tenant=tenant_a, query=SHARED, k=20, mode=mode, filters=only_the_hidden, user=alice
    )
    assert titles(owner, library) == {"fr-2024"}


@pytest.mark.parametrize(
    "filters",
    [
        {"document.lang": {"like": "en"}},
        {"document.lang": {"in": "en"}},
        {"document.lang": {"in": []}},
        {"document.lang": {"in": [["en"]]}},
        {"document.lang": ["en"]},
        {"document.lang": {}},
        {"document.year": {"gte": True}},
        {"document.year": {"gte": "not a date"}},
        {"document.year": {"gte": float("nan")}},
        {"document.year": {"lt": float("inf")}},
        {"document.year": {"gte": [1]}},
        {"document.reviewed": {"exists": "yes"}},
        {"document.lang": "a\x00b"},
        {"document.tags": {"contains": [[[[[["deep"]]]]]]}},
        {"document.a'; DROP TABLE chunks; --": 1},
        {"document.a->>b": 1},
        {"document.a b": 1},
        {"document.": 1},
        {"document..a": 1},
        {"": 1},
        {"lang": "en"},
        {"project.lang": "en"},
        {"document.a.b.c.d.e": 1},
        {"document.1a": 1},
        {"chunk.page)::text; --": 1},
        {1: "en"},
    ],
)
def test_a_malformed_filter_is_refused_naming_the_key(tenant_a, library, filters):
    [key] = filters
    for mode in MODES:
        with pytest.raises(ValidationError) as refused:
            search.chunk_search(tenant=tenant_a, query=SHARED, mode=mode, filters=filters)
        [message] = refused.value.message_dict["filters"]
        assert repr(key)[:40] in message


@pytest.mark.parametrize("filters", [[("document.lang", "en")], "document.lang=en", 3])
def test_filters_that_are_no_dict_are_refused(tenant_a, filters):
    with pytest.raises(ValidationError) as refused:
        search.chunk_search(tenant=tenant_a, query=SHARED, filters=filters)
    assert "filters" in refused.value.message_dict


def test_keys_and_values_are_bound_parameters_never_sql_text(tenant_a):
    filters = {"document.x'y": 1}
    with pytest.raises(ValidationError):
        parse_filters(filters)
    value = "it's'; DROP TABLE chunks; --"
    metadata = parse_filters({"document.lang": value, "chunk.page_n-o": {"gte": 3, "exists": True}})
    with tenant_context(tenant_a):
        queryset = Chunk.objects.filter(metadata.document_q(), metadata.chunk_q())
        sql, params = queryset.query.sql_with_params()
    assert "DROP" not in sql and "page_n-o" not in sql
    assert any("DROP" in str(param) for param in params)
    assert ["page_n-o"] in params
    with tenant_context(tenant_a):
        assert list(queryset) == []


def test_no_filter_and_an_empty_filter_filter_nothing(tenant_a, library):
    everything = search.chunk_search(tenant=tenant_a, query=SHARED, k=20)
    assert search.chunk_search(tenant=tenant_a, query=SHARED, k=20, filters={}) == everything
    assert search.chunk_search(tenant=tenant_a, query=SHARED, k=20, filters=None) == everything
    assert len(everything) == 8


# --- k and recall at 1 %, 10 % and 50 % of a tenant ----------------------------------

DOCUMENTS = 100
CHUNKS_PER_DOCUMENT = 10
OTHER_CHUNKS = 300
QUERIES = 10
K = 10
TOPICS = [[f"topic{t}w{i}" for i in range(15)] for t in range(20)]


@functools.cache
def topical_texts(count: int, seed: int) -> list[str]:
    """Texts in documents of one topic each (8 of its words and 6 common ones): near
    neighbours cluster as in real documents, which the HNSW graph is built for."""
    rng = random.Random(seed)
    texts = []
    for _ in range(0, count, CHUNKS_PER_DOCUMENT):
        topic = rng.choice(TOPICS)
        texts += [
            " ".join(rng.sample(topic, 8) + rng.sample(WORDS, 6))
            for _ in range(CHUNKS_PER_DOCUMENT)
        ]
    return texts[:count]


@pytest.fixture
def generated(tenant_a, tenant_b):
    """Tenant A: 100 documents of 10 chunks; each document a rank 0-99 (shuffled), each
    chunk a bucket 0-99 (round robin); tenant B 300 more chunks beside them in the index.
    The HNSW graph is rebuilt from the committed rows (see test_search.py): the dead
    entries of other tests' rolled-back inserts are not this test's recall."""
    rng = random.Random(7)
    ranks = list(range(DOCUMENTS))
    rng.shuffle(ranks)
    texts = topical_texts(DOCUMENTS * CHUNKS_PER_DOCUMENT, 11)
    for number, rank in enumerate(ranks):
        start = number * CHUNKS_PER_DOCUMENT
        block = texts[start : start + CHUNKS_PER_DOCUMENT]
        buckets = [{"bucket": (start + i) % 100} for i in range(CHUNKS_PER_DOCUMENT)]
        add_document(tenant_a, f"doc-{number}", {"rank": rank}, buckets, texts=block)
    other = topical_texts(OTHER_CHUNKS, 12)
    add_document(tenant_b, "other", {"rank": 0}, [{"bucket": 0}] * OTHER_CHUNKS, texts=other)
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("REINDEX INDEX chunks_embedding_hnsw_idx")
        cursor.execute("VACUUM ANALYZE chunks, documents")
    return [" ".join(rng.sample(text.split(), 8)) for text in rng.sample(texts, QUERIES)]


def exact_top(tenant, query: str, where: str, params: list) -> list[float]:
    """The exact K nearest distances among the chunks `where` selects, read without the
    filter code under test."""
    vector = Vector(get_embedder().embed([query])[0])
    with tenant_context(tenant), connection.cursor() as cursor:
        cursor.execute(
            "SELECT (embedding <=> %s) + 0 AS d FROM chunks c JOIN documents d"
            " ON d.tenant_id = c.tenant_id AND d.id = c.document_id"
            f" WHERE c.tenant_id = %s AND {where} ORDER BY d LIMIT {K}",
            [vector, tenant.pk, *params],
        )
        return [distance for (distance,) in cursor.fetchall()]


def recall(found: list[float], exact: list[float]) -> float:
    bound = exact[-1] + 1e-9
    return min(len(exact), sum(1 for distance in found if distance <= bound)) / len(exact)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_k_results_and_recall_at_one_ten_and_fifty_percent(
    tenant_a, tenant_b, generated, monkeypatch
):
    """Without a user, and as a viewer (who sees the whole tenant here: the member's
    path reads the documents first)."""
    queries = generated
    viewer = make_member(tenant_a, "v@example.com", role="viewer")
    # As on a big table: the exact reads stop at 120 chunks, so 1 % is read exactly, and
    # 50 % (and 10 % of the documents, 10 of 101: more than 120 chunks by the average)
    # goes through the HNSW index with the filter.
    monkeypatch.setattr(search, "_index_threshold", lambda limit, table_chunks: 120)
    paths = {"index": 0}
    original = search.set_hnsw_iterative_scan

    def counting(limit, **kwargs):
        paths["index"] += 1
        return original(limit, **kwargs)

    monkeypatch.setattr(search, "set_hnsw_iterative_scan", counting)
    recalls = {}
    for user, share in itertools.product((None, viewer), (1, 10, 50)):
        cases = [
            ({"document.rank": {"lt": share}}, "(d.metadata->>'rank')::int < %s", [share]),
            (
                {"chunk.bucket": {"in": list(range(share))}},
                "(c.metadata->>'bucket')::int < %s",
                [share],
            ),
        ]
        for filters, where, params in cases:
            scores = []
            for query in queries:
                hits = search.chunk_search(
                    tenant=tenant_a, query=query, k=K, mode="semantic", filters=filters, user=user
                )
                assert len(hits) == K, (filters, query)
                exact = exact_top(tenant_a, query, where, params)
                scores.append(recall([1.0 - hit.score for hit in hits], exact))
            recalls[user is not None, share, next(iter(filters))] = sum(scores) / len(scores)
    assert min(recalls.values()) >= 0.95, recalls
    # Both plans were exercised: the 10 % and 50 % cases read the index.
    assert paths["index"] >= 2 * 2 * QUERIES


# --- Property tests of the parser (hypothesis, the project's profile: tests/conftest.py) --

KEY_PARTS = st.one_of(
    st.sampled_from(["lang", "a", "_x", "page-no", "a'; DROP", "a->>b", "a b", "", "1a", "é"]),
    st.text(max_size=12),
)
KEYS = st.one_of(
    st.builds(
        lambda target, parts: ".".join([target, *parts]),
        st.sampled_from(["document", "chunk", "project", "", "Document"]),
        st.lists(KEY_PARTS, min_size=0, max_size=6),
    ),
    st.text(max_size=20),
    st.integers(),
    st.none(),
)
SCALAR_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["2024-01-01", "2024-13-45", "0001-01-01T00:00:00+14:00", "9999-12-31"]),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.just("x\x00y"),
)
VALUES = st.recursive(
    SCALAR_VALUES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
OPERATOR_NAMES = st.one_of(st.sampled_from(OPERATORS), st.text(max_size=8), st.integers())
CONDITIONS = st.one_of(VALUES, st.dictionaries(OPERATOR_NAMES, VALUES, max_size=3))
FILTERS = st.one_of(st.dictionaries(KEYS, CONDITIONS, max_size=4), VALUES)


@settings(max_examples=500)
@given(filters=FILTERS)
def test_any_input_parses_or_is_refused_on_filters(filters):
    try:
        parse_filters(filters)
    except ValidationError as error:
        assert list(error.message_dict) == ["filters"]


@pytest.mark.slow
@given(filters=FILTERS)
def test_a_filter_that_parses_never_fails_in_the_database(tenant_a, library, filters):
    # Rows whose metadata holds every JSON type (library), so each predicate is evaluated.
    try:
        metadata = parse_filters(filters)
    except ValidationError:
        return
    with tenant_context(tenant_a):
        list(Chunk.objects.filter(metadata.document_q(), metadata.chunk_q()).values("pk"))
        list(Document.objects.filter(metadata.document_q(through="")).values("pk"))
    search.chunk_search(tenant=tenant_a, query=SHARED, k=5, mode="hybrid", filters=filters)
