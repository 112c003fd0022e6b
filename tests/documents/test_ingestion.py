"""Knowledge ingestion: documents from text or files, chunked and embedded; re-embedding."""

import hashlib
import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from core.embedding import Embedder, get_embedder, hashing_embedder
from documents import services
from documents.chunking import resolve_chunking, split_text
from documents.models import Chunk, Document
from tenancy.context import tenant_context

TEXT = "one two three four five six seven eight nine ten"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    return tmp_path


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
def test_bad_chunking_is_refused_before_anything_is_stored(tenant_a, media, size, overlap, field):
    with pytest.raises(ValidationError) as error:
        services.document_ingest(
            tenant=tenant_a, title="x", text=TEXT, chunk_size=size, chunk_overlap=overlap
        )
    assert field in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(media.iterdir())


def test_an_embedder_of_another_dimension_is_refused(tenant_a, media):
    with pytest.raises(ValidationError) as error:
        services.document_ingest(
            tenant=tenant_a, title="x", text=TEXT, embedder=embedder(short_embedder, 3)
        )
    assert "embedding" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Document.objects.exists()
    assert not any(media.iterdir())


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


def test_a_document_without_text_fails(tenant_a):
    document = services.document_ingest(tenant=tenant_a, title="blank", text="  \n ")
    assert document.status == Document.Status.FAILED
    assert "no text" in document.error_message


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


def test_reembed_accepts_a_tenant_id_and_the_default_embedder(tenant_a, two_tenants_chunks):
    call_command("reembed_chunks", tenant=str(tenant_a.pk), stdout=io.StringIO())
    assert models_of(tenant_a) == {get_embedder().model}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tenant": "nobody"}, "Unknown tenant"),
        ({"tenant": "tenant-a", "model": "m"}, "need --embedder"),
        ({"tenant": "tenant-a", "embedder": "core.embedding.hashing_embedder"}, "--model"),
        (
            {"tenant": "tenant-a", "embedder": "no.such.embedder", "model": "m"},
            "Cannot import",
        ),
        (
            {
                "tenant": "tenant-a",
                "embedder": "core.embedding.hashing_embedder",
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
