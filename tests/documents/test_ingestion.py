"""Knowledge ingestion: documents from text or files, chunked and embedded; re-embedding."""

import hashlib
import io
import threading
import uuid
from datetime import timedelta

import numpy
import pgtrigger
import pytest
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from documents import services
from documents.chunking import resolve_chunking, split_text
from documents.embedding import Embedder, get_embedder, hashing_embedder
from documents.models import Chunk, Document
from tenancy.context import tenant_context

pytestmark = pytest.mark.usefixtures("file_storages")

TEXT = "one two three four five six seven eight nine ten"


def failing_embedder(texts):
    raise RuntimeError("embedding service unavailable")


def short_embedder(texts):
    return [[1.0, 0.0, 0.0] for _ in texts]


def reversed_embedder(texts):
    """A different 1536-dimensional embedder, for re-embedding."""
    return hashing_embedder([" ".join(reversed(text.split())) + " v2" for text in texts])


def embedder(function, dimension=1536, model="test-model"):
    return Embedder(function=function, model=model, dimension=dimension)


def chunks_of(tenant, document):
    with tenant_context(tenant):
        return list(Chunk.objects.filter(document=document).order_by("ordinal"))


def test_text_becomes_a_ready_document_with_embedded_chunks(tenant_a, alice):
    document = services.document_ingest(
        tenant=tenant_a, title="Numbers", text=TEXT, by=alice, chunk_size=4, chunk_overlap=1
    )
    assert document.status == Document.Status.READY
    assert document.error_message == ""
    assert (document.size_bytes, document.sha256, document.content_type) == (
        len(TEXT.encode()),
        hashlib.sha256(TEXT.encode()).hexdigest(),
        "text/plain",
    )
    chunks = chunks_of(tenant_a, document)
    assert [c.content for c in chunks] == [
        "one two three four",
        "four five six seven",
        "seven eight nine ten",
    ]
    assert [c.token_count for c in chunks] == [4, 4, 4]
    assert {c.embedding_model for c in chunks} == {get_embedder().model}
    assert len(chunks[0].embedding) == 1536
    with tenant_context(tenant_a):
        assert Document.objects.get(pk=document.pk).status == Document.Status.READY


def test_chunks_keep_the_embedders_vectors_and_their_offsets(tenant_a):
    """The binary insert stores what the embedder made, to float4 precision."""
    document = services.document_ingest(
        tenant=tenant_a, title="Numbers", text=TEXT, chunk_size=4, chunk_overlap=1
    )
    chunks = chunks_of(tenant_a, document)
    pieces = split_text(TEXT, chunk_size=4, chunk_overlap=1)
    expected = hashing_embedder([piece.content for piece in pieces])
    assert [c.metadata for c in chunks] == [{"start": p.start, "end": p.end} for p in pieces]
    assert [c.ordinal for c in chunks] == [0, 1, 2]
    for chunk, vector in zip(chunks, expected, strict=True):
        assert list(chunk.embedding) == numpy.float32(vector).tolist()
        assert uuid.UUID(str(chunk.pk)).version == 7


# --- The embedder's answer is checked (issue 17, point 6) ---------------------------


def with_value(value):
    def embed(texts):
        return [[value] * 1536 for _ in texts]

    return embed


def infinite_embedder(texts):
    """1536 infinities per text: for `reembed_chunks --embedder`."""
    return with_value(float("inf"))(texts)


class ForgetfulEmbedder(Embedder):
    """An embedder of its own making (a client of a model API, say) that drops the last
    vector of each call."""

    def embed(self, texts):
        return hashing_embedder(texts)[:-1]


@pytest.mark.parametrize(
    ("value", "shown"), [(float("nan"), "nan"), (float("inf"), "inf"), (1e39, "1e+39")]
)
def test_a_vector_the_database_cannot_hold_fails_the_document_saying_why(tenant_a, value, shown):
    document = services.document_ingest(
        tenant=tenant_a, title="bad numbers", text=TEXT, embedder=embedder(with_value(value))
    )
    assert document.status == Document.Status.FAILED
    assert document.error_message.startswith("embedding: embedder test-model returned ")
    assert f"returned {shown} at position 0 of vector 1" in document.error_message
    assert "Error" not in document.error_message  # no database error text
    assert chunks_of(tenant_a, document) == []


def test_fewer_vectors_than_texts_fail_the_document_with_no_chunk_stored(tenant_a):
    forgetful = ForgetfulEmbedder(function=hashing_embedder, model="forgetful", dimension=1536)
    document = services.document_ingest(
        tenant=tenant_a, title="x", text=TEXT, chunk_size=4, chunk_overlap=1, embedder=forgetful
    )
    assert (document.status, status_of(tenant_a, document)) == (Document.Status.FAILED,) * 2
    assert document.error_message == (
        "embedding: embedder forgetful returned 2 vectors for 3 texts."
    )
    assert chunks_of(tenant_a, document) == []


def test_reembedding_with_infinite_values_is_refused_and_writes_nothing(
    tenant_a, two_tenants_chunks
):
    a, _b = two_tenants_chunks
    before = [list(chunk.embedding) for chunk in chunks_of(tenant_a, a)]
    with pytest.raises(ValidationError) as error:
        services.chunks_reembed(tenant=tenant_a, embedder=embedder(infinite_embedder, model="v2"))
    assert "returned inf at position 0" in error.value.message_dict["embedding"][0]
    assert [list(chunk.embedding) for chunk in chunks_of(tenant_a, a)] == before
    assert models_of(tenant_a) == {get_embedder().model}


def test_the_reembed_command_says_what_the_embedder_returned(tenant_a, two_tenants_chunks):
    with pytest.raises(CommandError, match="returned inf at position 0 of vector 1"):
        call_command(
            "reembed_chunks",
            tenant=tenant_a.slug,
            embedder="tests.documents.test_ingestion.infinite_embedder",
            model="v2",
            stdout=io.StringIO(),
        )
    assert models_of(tenant_a) == {get_embedder().model}


def test_bytes_are_stored_under_a_generated_key(tenant_a):
    upload = SimpleUploadedFile("../../etc/passwd", b"hello world", content_type="text/plain")
    document = services.document_ingest(tenant=tenant_a, file=upload)
    prefix = f"documents/{tenant_a.pk}/{document.pk}/"
    assert document.storage_key.startswith(prefix)
    assert "passwd" not in document.storage_key
    with default_storage.open(document.storage_key, "rb") as stored:
        assert stored.read() == b"hello world"


def test_uploaded_file_keeps_its_name_and_content_type(tenant_a):
    upload = SimpleUploadedFile("notes.md", "# Notes\nCafé au lait".encode(), "text/markdown")
    document = services.document_ingest(tenant=tenant_a, file=upload)
    assert (document.title, document.content_type, document.status) == (
        "notes.md",
        "text/markdown",
        Document.Status.READY,
    )
    assert [c.content for c in chunks_of(tenant_a, document)] == ["# Notes\nCafé au lait"]


def test_plain_django_file_gets_a_guessed_content_type(tenant_a):
    document = services.document_ingest(
        tenant=tenant_a, title="Guide", file=File(io.BytesIO(b"read me"), name="guide.txt")
    )
    assert (document.title, document.content_type, document.size_bytes) == (
        "Guide",
        "text/plain",
        7,
    )


def test_chunk_size_and_overlap_default_to_settings(tenant_a, settings):
    settings.CHUNK_SIZE_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 5, 0
    document = services.document_ingest(tenant=tenant_a, title="Numbers", text=TEXT)
    assert [c.token_count for c in chunks_of(tenant_a, document)] == [5, 5]


def test_split_text_keeps_offsets_and_never_repeats_a_tail():
    chunks = split_text("a b c d e", chunk_size=3, chunk_overlap=1)
    assert [(c.content, c.start, c.end) for c in chunks] == [("a b c", 0, 5), ("c d e", 4, 9)]


def test_the_default_overlap_shrinks_to_fit_a_small_given_size(settings):
    settings.CHUNK_SIZE_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 200, 40
    assert resolve_chunking(None, None) == (200, 40)
    assert resolve_chunking(30, None) == (30, 6)
    assert resolve_chunking(30, 29) == (30, 29)


@pytest.mark.parametrize(
    ("size", "overlap", "field"),
    [(0, 0, "chunk_size"), (4, -1, "chunk_overlap"), (4, 4, "chunk_overlap")],
)
def test_bad_chunking_is_refused_before_anything_is_stored(
    tenant_a, file_storages, size, overlap, field
):
    with pytest.raises(ValidationError) as error:
        services.document_ingest(
            tenant=tenant_a, title="x", text=TEXT, chunk_size=size, chunk_overlap=overlap
        )
    assert field in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(file_storages.media.rglob("*"))


def test_an_embedder_of_another_dimension_is_refused(tenant_a, file_storages):
    with pytest.raises(ValidationError) as error:
        services.document_ingest(
            tenant=tenant_a, title="x", text=TEXT, embedder=embedder(short_embedder, 3)
        )
    assert "embedding" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(file_storages.media.rglob("*"))


def test_undecodable_bytes_fail_the_document_with_a_message(tenant_a):
    upload = SimpleUploadedFile("latin1.txt", "Caf\xe9".encode("latin-1"), "text/plain")
    document = services.document_ingest(tenant=tenant_a, file=upload)
    assert document.status == Document.Status.FAILED
    assert "UTF-8" in document.error_message
    with tenant_context(tenant_a):
        stored = Document.objects.get(pk=document.pk)
    assert (stored.status, stored.error_message) == (document.status, document.error_message)
    assert chunks_of(tenant_a, document) == []


def test_vectors_of_the_wrong_size_fail_the_document(tenant_a):
    lying = Embedder(function=short_embedder, model="liar", dimension=1536)
    document = services.document_ingest(tenant=tenant_a, title="x", text=TEXT, embedder=lying)
    assert document.status == Document.Status.FAILED
    assert document.error_message.startswith("embedding:")
    assert chunks_of(tenant_a, document) == []


def test_a_file_without_text_fails(tenant_a):
    upload = SimpleUploadedFile("blank.txt", b"  \n ", "text/plain")
    document = services.document_ingest(tenant=tenant_a, file=upload)
    assert document.status == Document.Status.FAILED
    assert "no text" in document.error_message


def test_a_text_with_nothing_to_index_is_refused_before_anything_is_stored(tenant_a, file_storages):
    with pytest.raises(ValidationError) as error:
        services.document_ingest(tenant=tenant_a, title="blank", text="  \n ")
    assert "text" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(file_storages.media.rglob("*"))


def test_a_file_whose_text_holds_a_nul_fails_saying_so(tenant_a):
    upload = SimpleUploadedFile("nul.txt", b"one two\x00three", "text/plain")
    document = services.document_ingest(tenant=tenant_a, file=upload)
    assert document.status == Document.Status.FAILED
    assert "NUL" in document.error_message


@pytest.mark.django_db(transaction=True)
def test_embedder_failure_commits_failed_status_and_no_chunks(tenant_a):
    document = services.document_ingest(
        tenant=tenant_a,
        title="x",
        text=TEXT,
        chunk_size=2,
        chunk_overlap=0,
        embedder=embedder(failing_embedder),
    )
    with tenant_context(tenant_a):
        stored = Document.objects.get(pk=document.pk)
        assert Chunk.objects.count() == 0
    assert stored.status == Document.Status.FAILED
    assert stored.error_message == "RuntimeError: embedding service unavailable"


def test_a_failed_document_can_be_processed_again(tenant_a):
    document = services.document_ingest(
        tenant=tenant_a, title="x", text=TEXT, embedder=embedder(failing_embedder)
    )
    services.document_process(tenant=tenant_a, document=document)
    assert (document.status, document.error_message) == (Document.Status.READY, "")
    assert len(chunks_of(tenant_a, document)) == 1


def test_a_ready_document_is_not_processed_twice(tenant_a):
    document = services.document_ingest(tenant=tenant_a, title="x", text=TEXT)
    with pytest.raises(ValidationError) as error:
        services.document_process(tenant=tenant_a, document=document)
    assert "status" in error.value.message_dict


# --- Documents left processing by a worker that died ---------------------------------


def mark_processing(tenant, document, age=timedelta(0)):
    """Put the document in processing, as a worker would, `age` ago."""
    with tenant_context(tenant):
        rows = Document.objects.filter(pk=document.pk)
        rows.update(status=Document.Status.EMBEDDING)
        if age:
            # The trigger would stamp now(); set the past by hand. pgtrigger.ignore sends
            # its setting and each statement as one SQL text: client-side binding only.
            with (
                connection.client_side_binding(),
                pgtrigger.ignore("documents.Document:set_updated_at"),
            ):
                rows.update(updated_at=timezone.now() - age)


def status_of(tenant, document):
    with tenant_context(tenant):
        return Document.objects.values_list("status", flat=True).get(pk=document.pk)


def test_a_document_processing_past_the_lease_can_be_processed_again(tenant_a):
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    mark_processing(tenant_a, document, age=timedelta(hours=1))
    services.document_process(tenant=tenant_a, document=document)
    assert (document.status, status_of(tenant_a, document)) == (Document.Status.READY,) * 2
    assert len(chunks_of(tenant_a, document)) == 1


@pytest.mark.parametrize(
    ("age", "lease_seconds"),
    [(timedelta(0), None), (timedelta(minutes=10), None), (timedelta(hours=1), 2 * 3600)],
)
def test_a_document_processing_within_the_lease_is_refused(tenant_a, settings, age, lease_seconds):
    if lease_seconds is not None:
        settings.DOCUMENT_PROCESSING_LEASE_SECONDS = lease_seconds
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    mark_processing(tenant_a, document, age=age)
    with pytest.raises(ValidationError) as error:
        services.document_process(tenant=tenant_a, document=document)
    assert "being processed" in " ".join(error.value.message_dict["status"])
    assert status_of(tenant_a, document) == Document.Status.EMBEDDING
    assert chunks_of(tenant_a, document) == []


class BlockingEmbedder:
    """The default embedder, paused until released, as a slow worker."""

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()
        self.embedder = get_embedder()

    def __call__(self, texts):
        self.started.set()
        assert self.release.wait(10)
        return self.embedder.embed(texts)

    def as_embedder(self):
        return Embedder(function=self, model=self.embedder.model, dimension=1536)


def process_in_thread(tenant, document, embedder):
    outcome = {}

    def work():
        try:
            outcome["document"] = services.document_process(
                tenant=tenant, document=document, embedder=embedder
            )
        except Exception as error:  # reported to the test
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_a_reclaimed_document_is_refused_to_a_second_worker(tenant_a):
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    mark_processing(tenant_a, document, age=timedelta(hours=1))
    slow = BlockingEmbedder()
    thread, outcome = process_in_thread(tenant_a, document, slow.as_embedder())
    try:
        assert slow.started.wait(10)
        with pytest.raises(ValidationError) as error:
            services.document_process(tenant=tenant_a, document=document)
        assert "status" in error.value.message_dict
    finally:
        slow.release.set()
        thread.join(10)
    assert outcome["document"].status == Document.Status.READY
    assert len(chunks_of(tenant_a, document)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_superseded_while_processing_keeps_the_other_result(tenant_a):
    document = services.document_create(tenant=tenant_a, title="x", text=TEXT)
    slow = BlockingEmbedder()
    thread, outcome = process_in_thread(tenant_a, document, slow.as_embedder())
    try:
        assert slow.started.wait(10)
        # Meanwhile another worker, past the lease, processed it and failed.
        with tenant_context(tenant_a):
            Document.objects.filter(pk=document.pk).update(
                status=Document.Status.FAILED, error_message="the other worker"
            )
    finally:
        slow.release.set()
        thread.join(10)
    assert (outcome["document"].status, outcome["document"].error_message) == (
        Document.Status.FAILED,
        "the other worker",
    )
    assert chunks_of(tenant_a, document) == []


# --- Upload size ---------------------------------------------------------------------


class OneWayStream(io.RawIOBase):
    """A stream that can neither seek nor tell its size, like a socket."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._data.readinto(buffer)


@pytest.mark.parametrize(
    "make_file",
    [
        lambda data: SimpleUploadedFile("big.txt", data, "text/plain"),
        lambda data: File(OneWayStream(data), name="big.txt"),
    ],
    ids=["upload", "stream"],
)
def test_a_file_over_the_upload_limit_is_refused(tenant_a, file_storages, settings, make_file):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 10
    with pytest.raises(ValidationError) as error:
        services.document_create(tenant=tenant_a, file=make_file(b"x" * 11))
    assert "at most 10 bytes" in " ".join(error.value.message_dict["file"])
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(file_storages.media.rglob("*"))


def test_text_over_the_upload_limit_is_refused(tenant_a, settings):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 10
    with pytest.raises(ValidationError) as error:
        services.document_create(tenant=tenant_a, title="x", text="é" * 6)
    assert "text" in error.value.message_dict


@pytest.mark.parametrize(
    "make_file",
    [
        lambda data: SimpleUploadedFile("exact.txt", data, "text/plain"),
        lambda data: File(OneWayStream(data), name="exact.txt"),
    ],
    ids=["upload", "stream"],
)
def test_a_file_at_the_limit_is_stored_hashed_in_chunks(tenant_a, settings, make_file):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 10
    data = b"0123456789"
    upload = make_file(data)
    upload.DEFAULT_CHUNK_SIZE = 3  # several chunks
    document = services.document_create(tenant=tenant_a, file=upload)
    assert (document.size_bytes, document.sha256) == (10, hashlib.sha256(data).hexdigest())
    with default_storage.open(document.storage_key, "rb") as stored:
        assert stored.read() == data


def test_text_and_file_together_are_refused(tenant_a):
    with pytest.raises(ValidationError) as error:
        services.document_create(
            tenant=tenant_a, title="x", text="a", file=SimpleUploadedFile("a.txt", b"a")
        )
    assert "file" in error.value.message_dict


def test_another_tenants_project_is_refused(tenant_a, tenant_b):
    project = services.project_create(tenant=tenant_a, name="Apollo")
    with pytest.raises(ValidationError) as error:
        services.document_ingest(tenant=tenant_b, title="x", text=TEXT, project=project)
    assert "project" in error.value.message_dict


# --- reembed_chunks ----------------------------------------------------------------


@pytest.fixture
def two_tenants_chunks(tenant_a, tenant_b):
    a = services.document_ingest(tenant=tenant_a, title="a", text=TEXT, chunk_size=3)
    b = services.document_ingest(tenant=tenant_b, title="b", text=TEXT, chunk_size=3)
    return a, b


def models_of(tenant):
    with tenant_context(tenant):
        return set(Chunk.objects.values_list("embedding_model", flat=True))


def test_reembed_changes_the_model_of_that_tenant_only(tenant_a, tenant_b, two_tenants_chunks):
    a, _b = two_tenants_chunks
    before = chunks_of(tenant_a, a)
    out = io.StringIO()
    call_command(
        "reembed_chunks",
        tenant=tenant_a.slug,
        embedder="tests.documents.test_ingestion.reversed_embedder",
        model="reversed-v2",
        dimension=1536,
        batch_size=2,
        stdout=out,
    )
    after = chunks_of(tenant_a, a)
    assert models_of(tenant_a) == {"reversed-v2"}
    assert models_of(tenant_b) == {get_embedder().model}
    assert list(after[0].embedding) != list(before[0].embedding)
    assert f"Re-embedded {len(after)} chunk(s)" in out.getvalue()


def reversed_v2():
    return embedder(reversed_embedder, model="reversed-v2")


def test_reembed_also_covers_chunks_added_during_the_run(tenant_a, two_tenants_chunks):
    a, _b = two_tenants_chunks
    old_model = get_embedder().model
    added = []

    def add_chunk_with_the_old_model(progress):
        if progress.batches == 1:
            # Made by another process: its UUIDv7 sorts before this run's chunks.
            with tenant_context(tenant_a):
                added.append(
                    Chunk.objects.create(
                        id=uuid.UUID("00000000-0000-7000-8000-000000000001"),
                        tenant=tenant_a,
                        document=a,
                        ordinal=99,
                        content="late arrival",
                        embedding=get_embedder().embed(["late arrival"])[0],
                        embedding_model=old_model,
                    )
                )

    count = services.chunks_reembed(
        tenant=tenant_a, embedder=reversed_v2(), batch_size=2, on_batch=add_chunk_with_the_old_model
    )
    assert count == len(chunks_of(tenant_a, a)) == 5
    assert models_of(tenant_a) == {"reversed-v2"}


def test_an_interrupted_reembed_carries_on_when_started_again(tenant_a, two_tenants_chunks):
    calls = []

    def breaks_on_the_second_batch(texts):
        calls.append(texts)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return reversed_embedder(texts)

    with pytest.raises(RuntimeError):
        services.chunks_reembed(
            tenant=tenant_a,
            embedder=embedder(breaks_on_the_second_batch, model="reversed-v2"),
            batch_size=2,
        )
    assert models_of(tenant_a) == {get_embedder().model, "reversed-v2"}
    assert services.chunks_reembed(tenant=tenant_a, embedder=reversed_v2(), batch_size=2) == 2
    assert models_of(tenant_a) == {"reversed-v2"}
    assert services.chunks_reembed(tenant=tenant_a, embedder=reversed_v2()) == 0


def test_reembed_fills_chunks_without_an_embedding(tenant_a, two_tenants_chunks):
    a, _b = two_tenants_chunks
    with tenant_context(tenant_a):
        Chunk.objects.filter(document=a, ordinal=0).update(embedding=None, embedding_model="")
    assert services.chunks_reembed(tenant=tenant_a) == 1
    assert all(chunk.embedding is not None for chunk in chunks_of(tenant_a, a))


def test_reembed_also_covers_the_chunks_of_restricted_documents(
    tenant_a, alice, two_tenants_chunks
):
    a, _b = two_tenants_chunks
    services.document_restrict(tenant=tenant_a, document=a, by=alice)
    call_command(
        "reembed_chunks",
        tenant=tenant_a.slug,
        embedder="tests.documents.test_ingestion.reversed_embedder",
        model="reversed-v2",
        dimension=1536,
        stdout=io.StringIO(),
    )
    with tenant_context(tenant_a, user=alice):
        models = set(Chunk.objects.filter(document=a).values_list("embedding_model", flat=True))
    assert models == {"reversed-v2"}


def test_reembed_accepts_a_tenant_id_and_the_default_embedder(tenant_a, two_tenants_chunks):
    call_command("reembed_chunks", tenant=str(tenant_a.pk), stdout=io.StringIO())
    assert models_of(tenant_a) == {get_embedder().model}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tenant": "nobody"}, "Unknown tenant"),
        ({"tenant": "tenant-a", "model": "m"}, "need --embedder"),
        ({"tenant": "tenant-a", "embedder": "documents.embedding.hashing_embedder"}, "--model"),
        (
            {"tenant": "tenant-a", "embedder": "no.such.embedder", "model": "m"},
            "Cannot import",
        ),
        (
            {
                "tenant": "tenant-a",
                "embedder": "documents.embedding.hashing_embedder",
                "model": "m",
                "dimension": 768,
            },
            "--dimension 768",
        ),
        ({"tenant": "tenant-a", "batch_size": 0}, "--batch-size"),
    ],
)
def test_reembed_refuses_bad_options(tenant_a, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("reembed_chunks", stdout=io.StringIO(), **options)


@pytest.mark.parametrize("batch_size", [0, True, 10_001, 2**63])
def test_reembedding_refuses_a_batch_size_out_of_range(tenant_a, batch_size):
    with pytest.raises(ValidationError, match="batch_size must be an integer from 1 to 10000"):
        services.chunks_reembed(tenant=tenant_a, embedder=get_embedder(), batch_size=batch_size)
