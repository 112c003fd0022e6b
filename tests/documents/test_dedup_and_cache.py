"""Dedup of uploads by SHA-256 and the embedding cache (issue 22, point 3; docs/services.md,
"Duplicate uploads" and "Embedding cache")."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction

from core.hashing import sha256_hex
from documents.chunking import split_text
from documents.embedding import Embedder, hashing_embedder
from documents.models import Chunk, Document, EmbeddingCacheEntry
from documents.services import (
    chunks_reembed,
    document_create,
    document_ingest,
    document_process,
    document_restrict,
)
from tenancy.context import tenant_context
from tests.factories import make_member
from tests.locks import in_thread, row_lock_waiters

pytestmark = pytest.mark.usefixtures("file_storages")

CHUNKING = {"chunk_size": 4, "chunk_overlap": 1}
# Splits into 4 chunks of 4 words (CHUNKING).
TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima lemur"


class CountingEmbedder:
    """The hashing embedder, counting its calls and the texts it was given."""

    def __init__(self, model: str = "counting-model") -> None:
        self.calls = 0
        self.texts: list[str] = []
        self.embedder = Embedder(function=self, model=model, dimension=1536)

    def __call__(self, texts):
        self.calls += 1
        self.texts += texts
        return hashing_embedder(texts)


def chunk_texts(text: str) -> list[str]:
    return [piece.content for piece in split_text(text, **CHUNKING)]


def cache_rows(tenant) -> list[tuple[str, str]]:
    with tenant_context(tenant):
        return sorted(EmbeddingCacheEntry.objects.values_list("model", "content_sha256"))


def stored_files(file_storages) -> list:
    return sorted(path for path in file_storages.media.rglob("*") if path.is_file())


# --- Duplicate uploads ----------------------------------------------------------------


def test_the_same_text_twice_is_refused_naming_the_existing_document(tenant_a, file_storages):
    first = document_create(tenant=tenant_a, title="Handbook", text=TEXT)
    files = stored_files(file_storages)
    with pytest.raises(ValidationError) as refused:
        document_create(tenant=tenant_a, title="Handbook again", text=TEXT)
    (error,) = refused.value.error_dict["text"]
    assert error.code == "duplicate"
    assert error.params["document_id"] == str(first.pk)
    message = refused.value.message_dict["text"][0]
    assert str(first.pk) in message and "“Handbook”" in message
    assert "allow_duplicate=True" in message
    with tenant_context(tenant_a):
        assert list(Document.objects.values_list("pk", flat=True)) == [first.pk]
    assert stored_files(file_storages) == files, "the refused bytes were not stored"


def test_the_same_file_twice_is_refused_on_the_file_field(tenant_a):
    first = document_create(tenant=tenant_a, file=SimpleUploadedFile("a.txt", b"same bytes"))
    with pytest.raises(ValidationError) as refused:
        document_create(tenant=tenant_a, file=SimpleUploadedFile("b.txt", b"same bytes"))
    assert refused.value.error_dict["file"][0].params["document_id"] == str(first.pk)


def test_keep_both_stores_the_duplicate_marked(tenant_a):
    first = document_create(tenant=tenant_a, title="Handbook", text=TEXT)
    second = document_create(tenant=tenant_a, title="Copy", text=TEXT, allow_duplicate=True)
    assert (first.duplicate_allowed, second.duplicate_allowed) == (False, True)
    assert first.sha256 == second.sha256
    # A third plain upload is still refused, naming the first.
    with pytest.raises(ValidationError) as refused:
        document_create(tenant=tenant_a, title="Third", text=TEXT)
    assert refused.value.error_dict["text"][0].params["document_id"] == str(first.pk)


def test_other_tenants_and_other_bytes_are_not_duplicates(tenant_a, tenant_b):
    document_create(tenant=tenant_a, title="Handbook", text=TEXT)
    document_create(tenant=tenant_b, title="Handbook", text=TEXT)
    document_create(tenant=tenant_a, title="Handbook", text=TEXT + " more")


def test_the_database_refuses_a_second_row_with_the_same_hash(tenant_a):
    """The last line, whatever writes: the partial unique index."""
    first = document_create(tenant=tenant_a, title="Handbook", text=TEXT)
    with tenant_context(tenant_a), pytest.raises(IntegrityError, match="sha256_uniq"):
        Document.objects.create(
            tenant=tenant_a, title="Raw", storage_key="documents/raw", sha256=first.sha256
        )


def test_a_member_who_may_not_see_the_existing_document_learns_no_title(tenant_a, alice):
    secret = document_create(tenant=tenant_a, title="Merger plan Zeta", text=TEXT, by=alice)
    document_restrict(tenant=tenant_a, document=secret, by=alice)
    viewer = make_member(tenant_a, "victor@example.com", "editor")
    with tenant_context(tenant_a, user=viewer), pytest.raises(ValidationError) as refused:
        document_create(tenant=tenant_a, title="Mine", text=TEXT, by=viewer)
    (error,) = refused.value.error_dict["text"]
    message = refused.value.message_dict["text"][0]
    assert error.code == "duplicate" and not error.params
    assert "Zeta" not in message and str(secret.pk) not in message
    assert "may not see" in message
    # The owner, who sees it, is told which document it is.
    with tenant_context(tenant_a, user=alice), pytest.raises(ValidationError) as told:
        document_create(tenant=tenant_a, title="Mine", text=TEXT, by=alice)
    assert "Zeta" in told.value.message_dict["text"][0]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_uploads_of_the_same_bytes_one_wins(tenant_a, file_storages):
    """B checks before A commits (so finds nothing), then waits on the unique index for
    A's transaction: once A commits, B is refused like any duplicate, its file removed."""
    errors: list[Exception] = []
    a_inserted, a_may_commit = threading.Event(), threading.Event()
    created: list[Document] = []

    def upload_a() -> None:
        with transaction.atomic():
            created.append(document_create(tenant=tenant_a, title="A", text=TEXT))
            a_inserted.set()
            a_may_commit.wait(timeout=60)

    def upload_b() -> None:
        created.append(document_create(tenant=tenant_a, title="B", text=TEXT))

    thread_a = in_thread(upload_a, errors)
    assert a_inserted.wait(timeout=60)
    thread_b = in_thread(upload_b, errors)
    deadline = time.monotonic() + 60
    while row_lock_waiters() < 1:
        assert time.monotonic() < deadline, "B never waited on A's row"
        time.sleep(0.05)
    a_may_commit.set()
    thread_a.join()
    thread_b.join()
    assert [document.title for document in created] == ["A"]
    (error,) = errors
    assert isinstance(error, ValidationError)
    assert error.error_dict["text"][0].params["document_id"] == str(created[0].pk)
    with tenant_context(tenant_a):
        assert list(Document.objects.values_list("title", flat=True)) == ["A"]
    assert len(stored_files(file_storages)) == 1, "B's stored bytes were removed"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_uploads_keeping_both_both_stay(tenant_a):
    errors: list[Exception] = []
    threads = [
        in_thread(
            lambda n=n: document_create(
                tenant=tenant_a, title=f"copy {n}", text=TEXT, allow_duplicate=True
            ),
            errors,
        )
        for n in range(2)
    ]
    for thread in threads:
        thread.join()
    assert errors == []
    with tenant_context(tenant_a):
        assert Document.objects.filter(sha256=sha256_hex(TEXT)).count() == 2


def test_the_admin_upload_form_refuses_a_duplicate_with_a_link_and_keeps_both_when_asked(
    client, tenant_a, superuser
):
    first = document_create(tenant=tenant_a, title="Handbook <b>", text=TEXT)
    client.force_login(superuser)
    url = "/admin/documents/document/add/"

    def post(**extra):
        upload = SimpleUploadedFile("copy.txt", TEXT.encode(), content_type="text/plain")
        return client.post(url, {"tenant": tenant_a.pk, "file": upload, "metadata": "{}", **extra})

    refused = post()
    assert refused.status_code == 200
    page = refused.content.decode()
    assert f'href="/admin/documents/document/{first.pk}/change/"' in page
    assert "Handbook &lt;b&gt;" in page, "the title is escaped, the link is not"
    kept = post(allow_duplicate="on")
    assert kept.status_code == 302
    with tenant_context(tenant_a):
        assert Document.objects.filter(duplicate_allowed=True).count() == 1


# --- The embedding cache ------------------------------------------------------------


def test_reingesting_an_unchanged_document_calls_the_embedder_zero_times(tenant_a):
    counting = CountingEmbedder()
    first = document_ingest(
        tenant=tenant_a, title="v1", text=TEXT, embedder=counting.embedder, **CHUNKING
    )
    assert first.status == Document.Status.READY
    assert counting.texts == chunk_texts(TEXT)
    calls_before = counting.calls

    again = document_ingest(
        tenant=tenant_a,
        title="v1 again",
        text=TEXT,
        embedder=counting.embedder,
        allow_duplicate=True,
        **CHUNKING,
    )

    assert again.status == Document.Status.READY
    print("embedder calls for an unchanged re-ingest:", counting.calls - calls_before)
    assert counting.calls == calls_before
    with tenant_context(tenant_a):
        vectors = {
            document_id: [
                list(chunk)
                for chunk in Chunk.objects.filter(document_id=document_id)
                .order_by("ordinal")
                .values_list("embedding", flat=True)
            ]
            for document_id in (first.pk, again.pk)
        }
    assert vectors[first.pk] == vectors[again.pk], "the cached vectors are the embedder's"


def test_a_changed_document_embeds_only_its_new_chunks(tenant_a):
    counting = CountingEmbedder()
    document_ingest(tenant=tenant_a, title="v1", text=TEXT, embedder=counting.embedder, **CHUNKING)
    changed = TEXT + " mike november oscar"
    new_texts = [text for text in chunk_texts(changed) if text not in chunk_texts(TEXT)]
    assert 0 < len(new_texts) < len(chunk_texts(changed))
    counting.calls, counting.texts = 0, []

    document_ingest(
        tenant=tenant_a, title="v2", text=changed, embedder=counting.embedder, **CHUNKING
    )

    print(
        f"embedder for a changed re-ingest: {counting.calls} call(s), "
        f"{len(counting.texts)} of {len(chunk_texts(changed))} chunks"
    )
    assert counting.calls == 1 and counting.texts == new_texts


def test_the_cache_holds_one_entry_per_text_and_model_and_no_text(tenant_a):
    counting = CountingEmbedder()
    repeated = "one two three four " * 4 + "and the end"
    document_ingest(
        tenant=tenant_a, title="r", text=repeated, embedder=counting.embedder, **CHUNKING
    )
    distinct = sorted(set(chunk_texts(repeated)))
    assert len(distinct) < len(chunk_texts(repeated))
    assert sorted(counting.texts) == distinct, "a text repeated in one document embedded once"
    assert cache_rows(tenant_a) == sorted(("counting-model", sha256_hex(t)) for t in distinct)


def test_the_cache_is_per_tenant(tenant_a, tenant_b):
    counting = CountingEmbedder()
    document_ingest(tenant=tenant_a, title="a", text=TEXT, embedder=counting.embedder, **CHUNKING)
    counting.texts = []
    document_ingest(tenant=tenant_b, title="b", text=TEXT, embedder=counting.embedder, **CHUNKING)
    assert counting.texts == chunk_texts(TEXT), "tenant B embeds its own, learns nothing of A"
    with tenant_context(tenant_b):
        assert EmbeddingCacheEntry.objects.count() == len(chunk_texts(TEXT))


def test_the_cache_is_per_model(tenant_a):
    first, second = CountingEmbedder("model-one"), CountingEmbedder("model-two")
    document_ingest(tenant=tenant_a, title="a", text=TEXT, embedder=first.embedder, **CHUNKING)
    document_ingest(
        tenant=tenant_a,
        title="b",
        text=TEXT,
        embedder=second.embedder,
        allow_duplicate=True,
        **CHUNKING,
    )
    assert second.texts == chunk_texts(TEXT)


def test_a_failing_embedder_leaves_no_cache_entry(tenant_a):
    def failing(texts):
        raise RuntimeError("model down")

    broken = Embedder(function=failing, model="counting-model", dimension=1536)
    document = document_ingest(tenant=tenant_a, title="a", text=TEXT, embedder=broken, **CHUNKING)
    assert document.status == Document.Status.FAILED
    assert cache_rows(tenant_a) == []
    # Processed again once the model is back: embedded then, and cached.
    counting = CountingEmbedder()
    document = document_process(
        tenant=tenant_a, document=document, embedder=counting.embedder, **CHUNKING
    )
    assert document.status == Document.Status.READY
    assert len(cache_rows(tenant_a)) == len(chunk_texts(TEXT))


def test_reembedding_reads_the_cache_first(tenant_a):
    first, second = CountingEmbedder("model-one"), CountingEmbedder("model-two")
    document_ingest(tenant=tenant_a, title="a", text=TEXT, embedder=first.embedder, **CHUNKING)
    assert chunks_reembed(tenant=tenant_a, embedder=second.embedder) == len(chunk_texts(TEXT))
    assert second.texts == chunk_texts(TEXT)
    first.calls = 0
    # Back to the first model: its vectors are all cached.
    assert chunks_reembed(tenant=tenant_a, embedder=first.embedder) == len(chunk_texts(TEXT))
    assert first.calls == 0
    with tenant_context(tenant_a):
        assert set(Chunk.objects.values_list("embedding_model", flat=True)) == {"model-one"}
