"""Switching embedding models: a second model backfilled beside the first, each tenant
switched and rolled back on its own, the old vectors pruned, search working throughout
(documents.services.embedding_models; docs/operations.md, "Switching embedding models").

Transactional tests: the backfill builds its index CONCURRENTLY, which waits for every
open transaction, a test's own included.
"""

import io
import re

import numpy
import psycopg
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import StaleSource
from core.db.connections import owner_autocommit_connection
from documents import search, services
from documents.embedding import get_embedder, hashing_embedder, hashing_embedder_v2
from documents.model_comparison import compare_models
from documents.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    EmbeddingCacheEntry,
    TenantEmbeddingModel,
)
from documents.services.embedding_models import model_index_name, model_index_state
from tenancy.context import job_scope, tenant_context
from tests.agents.test_stale_sources import grounded_run
from tests.factories import make_member
from tests.tenancy.test_audit import events
from tests.worker import clear_queue, jobs, start_worker, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("file_storages", "no_model_index_left"),
]

MODEL = "hashing-v2"
TEXTS = [
    "the red fox jumps over the lazy dog",
    "new york is a large city by the sea",
    "sea the by city large a is york new",
    "quantum physics explains tiny particles",
    "the lazy dog sleeps under the red tree",
]


class Stop(Exception):
    pass


def ingest_all(tenant, texts=TEXTS) -> list[Document]:
    return [
        services.document_ingest(tenant=tenant, title=f"Doc {number}", text=text)
        for number, text in enumerate(texts)
    ]


def backfill(tenant, model=MODEL, **options) -> int:
    """What the worker's job runs (documents.tasks.backfill_embeddings), in its scope."""
    with job_scope(services.BACKFILL_TASK, tenant):
        return services.embeddings_backfill(tenant=tenant, model=model, **options)


def row(tenant, model=MODEL) -> TenantEmbeddingModel | None:
    with tenant_context(tenant):
        return TenantEmbeddingModel.objects.filter(model=model).first()


def vectors_of(tenant, model=MODEL) -> dict:
    """chunk id -> vector of `model`, as stored."""
    with tenant_context(tenant):
        return {
            chunk_id: list(vector)
            for chunk_id, vector in ChunkEmbedding.objects.filter(model=model).values_list(
                "chunk_id", "embedding"
            )
        }


def chunk_ids(tenant) -> set:
    with tenant_context(tenant):
        return set(Chunk.objects.values_list("id", flat=True))


def cosine(a, b) -> float:
    a, b = numpy.asarray(a), numpy.asarray(b)
    return float(a @ b / (numpy.linalg.norm(a) * numpy.linalg.norm(b)))


def test_a_backfill_records_its_progress_and_resumes_after_a_crash(tenant_a):
    ingest_all(tenant_a)
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    assert row(tenant_a).status == TenantEmbeddingModel.Status.QUEUED

    def crash(progress):
        if progress.batches == 1:
            raise Stop("worker killed")

    with pytest.raises(Stop):
        backfill(tenant_a, batch_size=2, on_batch=crash)
    crashed = row(tenant_a)
    assert crashed.status == TenantEmbeddingModel.Status.FAILED
    assert "worker killed" in crashed.error_message
    assert (crashed.chunks_done, crashed.chunks_total) == (2, 5)
    assert len(vectors_of(tenant_a)) == 2
    # The index comes once every vector is in.
    assert model_index_state(MODEL) is None

    # Run again: only the three chunks still lacking a vector are embedded.
    assert backfill(tenant_a, batch_size=2) == 3
    done = row(tenant_a)
    assert done.status == TenantEmbeddingModel.Status.COMPLETE
    assert (done.chunks_done, done.chunks_total, done.error_message) == (5, 5, "")
    assert model_index_state(MODEL) == "valid"
    assert done.started_at is not None and done.finished_at >= done.started_at
    stored = vectors_of(tenant_a)
    assert set(stored) == chunk_ids(tenant_a)
    with tenant_context(tenant_a):
        texts = dict(Chunk.objects.values_list("id", "content"))
        dimensions = set(ChunkEmbedding.objects.values_list("dimension", flat=True))
    assert dimensions == {768}
    for chunk_id, vector in stored.items():
        assert vector == pytest.approx(hashing_embedder_v2([texts[chunk_id]])[0], abs=1e-6)
    # Nothing left: a third run embeds nothing.
    assert backfill(tenant_a) == 0


def test_an_invalid_index_left_by_a_crashed_build_is_rebuilt(tenant_a):
    ingest_all(tenant_a, TEXTS[:2])
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    # What a build that failed half-way leaves: an invalid index of that name (here a
    # cast to the wrong dimension fails the build on the first row).
    with owner_autocommit_connection() as owner:
        owner.execute(f"DROP INDEX CONCURRENTLY {model_index_name(MODEL)}")
        with pytest.raises(psycopg.errors.DataException):
            owner.execute(
                f"CREATE INDEX CONCURRENTLY {model_index_name(MODEL)} ON chunk_embeddings "
                "USING hnsw ((embedding::vector(3)) vector_cosine_ops) WHERE model = 'hashing-v2'"
            )
    assert model_index_state(MODEL) == "invalid"
    # Every vector is there, but a search would read the whole table: refused.
    with pytest.raises(ValidationError, match="The index of hashing-v2 is not built"):
        services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    assert model_index_state(MODEL) == "valid"


def test_the_model_index_serves_the_search(tenant_a):
    ingest_all(tenant_a)
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    [vector] = hashing_embedder_v2(["lazy dog"])
    with tenant_context(tenant_a):
        search.set_hnsw_iterative_scan(5, index_order=True)
        chunks = Chunk.objects.filter(tenant_id=tenant_a.pk)
        queryset = search.semantic_queryset(chunks, vector, MODEL, tenant_id=tenant_a.pk)[:5]
        plan = queryset.explain()
    assert f"Index Scan using {model_index_name(MODEL)}" in plan


def test_bad_inputs_are_refused_naming_the_field(tenant_a, alice):
    ingest_all(tenant_a, TEXTS[:1])
    for call in (
        lambda: services.embedding_backfill_start(tenant=tenant_a, model="no-such-model"),
        lambda: services.embedding_backfill_start(tenant=tenant_a, model=get_embedder().model),
        lambda: services.embedding_model_switch(tenant=tenant_a, model="no-such-model"),
        lambda: services.embedding_model_switch(tenant=tenant_a, model=get_embedder().model),
        lambda: services.embedding_model_switch(tenant=tenant_a, model=MODEL),
        lambda: services.embedding_model_rollback(tenant=tenant_a),
        lambda: services.embedding_model_forget(tenant=tenant_a, model=MODEL),
        lambda: services.embedding_model_forget(tenant=tenant_a, model=get_embedder().model),
    ):
        with pytest.raises(ValidationError) as refused:
            call()
        assert set(refused.value.message_dict) == {"model"}
    with pytest.raises(ValidationError) as refused:
        backfill(tenant_a, batch_size=0)
    assert set(refused.value.message_dict) == {"batch_size"}
    # A member who is neither owner nor admin may not change the tenant's model.
    member = make_member(tenant_a, "member@example.com", role="editor")
    with pytest.raises(PermissionDenied):
        services.embedding_backfill_start(tenant=tenant_a, model=MODEL, by=member)
    assert row(tenant_a) is None
    assert services.embedding_backfill_start(tenant=tenant_a, model=MODEL, by=alice).model == MODEL


def test_a_switch_is_refused_until_every_chunk_has_the_new_vector(tenant_a):
    ingest_all(tenant_a)
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    with pytest.raises(Stop):
        backfill(tenant_a, batch_size=2, on_batch=lambda progress: (_ for _ in ()).throw(Stop()))
    with pytest.raises(ValidationError) as refused:
        services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    assert (
        "3 chunk(s) of the tenant have no hashing-v2 vector"
        in refused.value.message_dict["model"][0]
    )
    backfill(tenant_a)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    assert row(tenant_a).role == TenantEmbeddingModel.Role.CURRENT


def scores_by_content(results) -> dict[str, float]:
    return {result.content: result.score for result in results}


def test_search_follows_the_switch_and_the_rollback(tenant_a, tenant_b):
    ingest_all(tenant_a)
    ingest_all(tenant_b)
    query = "new york city"
    before = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic")
    [v1] = hashing_embedder([query])
    for content, score in scores_by_content(before).items():
        assert score == pytest.approx(cosine(v1, hashing_embedder([content])[0]), abs=1e-5)

    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    # Backfilled, not switched: searches still use EMBEDDER's model.
    during = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic")
    assert scores_by_content(during) == pytest.approx(scores_by_content(before))

    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    after = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic")
    [v2] = hashing_embedder_v2([query])
    assert len(after) == 5
    for content, score in scores_by_content(after).items():
        assert score == pytest.approx(cosine(v2, hashing_embedder_v2([content])[0]), abs=1e-5)
    # The word pairs of the new model rank the phrase above the same words shuffled,
    # which the old one cannot tell apart.
    assert after[0].content == TEXTS[1]
    assert scores_by_content(after)[TEXTS[1]] > scores_by_content(after)[TEXTS[2]]
    assert scores_by_content(before)[TEXTS[1]] == pytest.approx(scores_by_content(before)[TEXTS[2]])
    # Hybrid search and a filter work on the new model too.
    hybrid = search.chunk_search(tenant=tenant_a, query=query, k=3, mode="hybrid")
    assert hybrid[0].content == TEXTS[1]
    # The other tenant still searches EMBEDDER's model: no row, no vectors.
    other = search.chunk_search(tenant=tenant_b, query=query, k=5, mode="semantic")
    assert {r.content: round(r.score, 5) for r in other} == {
        c: round(s, 5) for c, s in scores_by_content(before).items()
    }
    assert row(tenant_b) is None and vectors_of(tenant_b) == {}

    assert services.embedding_model_rollback(tenant=tenant_a) == get_embedder().model
    rolled_back = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic")
    assert scores_by_content(rolled_back) == pytest.approx(scores_by_content(before))
    # The model left is kept as the previous one: rolling back again returns to it.
    assert row(tenant_a).role == TenantEmbeddingModel.Role.PREVIOUS
    assert services.embedding_model_rollback(tenant=tenant_a) == MODEL
    assert row(tenant_a).role == TenantEmbeddingModel.Role.CURRENT
    assert row(tenant_a, get_embedder().model).role == TenantEmbeddingModel.Role.PREVIOUS


def test_new_and_reingested_chunks_get_every_kept_models_vector(tenant_a):
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    # Uploaded while the backfill waits for the worker: written with both vectors.
    [first] = ingest_all(tenant_a, TEXTS[:1])
    stored = vectors_of(tenant_a)
    assert set(stored) == chunk_ids(tenant_a)
    [vector] = stored.values()
    assert vector == pytest.approx(hashing_embedder_v2([TEXTS[0]])[0], abs=1e-6)
    # Re-ingested with another text: the kept model's vector follows the text.
    services.document_reingest(tenant=tenant_a, document=first, text=TEXTS[3])
    [vector] = vectors_of(tenant_a).values()
    assert vector == pytest.approx(hashing_embedder_v2([TEXTS[3]])[0], abs=1e-6)
    # A deleted document takes its chunks' vectors with it (the key's CASCADE).
    services.document_delete(tenant=tenant_a, document=first)
    with tenant_context(tenant_a):
        assert not ChunkEmbedding.objects.exists()


def test_prune_removes_only_vectors_no_tenant_keeps_and_then_the_index(tenant_a, tenant_b):
    ingest_all(tenant_a)
    ingest_all(tenant_b, TEXTS[:2])
    for tenant in (tenant_a, tenant_b):
        services.embedding_backfill_start(tenant=tenant, model=MODEL)
        backfill(tenant)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    assert services.embeddings_prune().vectors == {}

    # The current model cannot be forgotten; switching back keeps it as previous.
    with pytest.raises(ValidationError):
        services.embedding_model_forget(tenant=tenant_a, model=MODEL)
    services.embedding_model_rollback(tenant=tenant_a)
    assert services.embeddings_prune().vectors == {}
    services.embedding_model_forget(tenant=tenant_a, model=MODEL)

    dry = services.embeddings_prune(dry_run=True)
    assert dry.vectors == {(tenant_a.slug, MODEL): 5} and dry.indexes == []
    assert len(vectors_of(tenant_a)) == 5
    pruned = services.embeddings_prune(batch_size=2)
    assert pruned.vectors == {(tenant_a.slug, MODEL): 5}
    # tenant_b still keeps the model: its vectors and the index stay.
    assert pruned.indexes == []
    assert vectors_of(tenant_a) == {} and len(vectors_of(tenant_b)) == 2
    assert model_index_state(MODEL) == "valid"

    services.embedding_model_forget(tenant=tenant_b, model=MODEL)
    pruned = services.embeddings_prune()
    assert pruned.vectors == {(tenant_b.slug, MODEL): 2}
    assert pruned.indexes == [model_index_name(MODEL)]
    assert model_index_state(MODEL) is None
    # Search works throughout: tenant_a is back on EMBEDDER's model.
    assert len(search.chunk_search(tenant=tenant_a, query="lazy dog", k=3, mode="semantic")) == 3


def test_status_reports_each_model_with_its_progress(tenant_a):
    ingest_all(tenant_a, TEXTS[:3])
    [default] = services.embedding_models_status(tenant=tenant_a)
    assert (default.model, default.role, default.chunks_done, default.index) == (
        get_embedder().model,
        "current",
        3,
        "chunks",
    )
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    states = {state.model: state for state in services.embedding_models_status(tenant=tenant_a)}
    assert states[MODEL].role == "current"
    assert (states[MODEL].chunks_done, states[MODEL].chunks_total) == (3, 3)
    assert states[MODEL].index == "valid"
    assert states[get_embedder().model].role == "previous"
    assert (states[get_embedder().model].chunks_done, states[get_embedder().model].index) == (
        3,
        "chunks",
    )


@pytest.mark.slow
def test_the_worker_backfills_a_tenant_with_progress_then_it_switches(tenant_a, tenant_b, tmp_path):
    clear_queue()
    ingest_all(tenant_a)
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    # Queued once: a second start while it waits adds no job.
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    [job] = jobs(services.BACKFILL_TASK)
    assert job["args"] == {"tenant_id": str(tenant_a.pk), "model": MODEL}
    worker = start_worker(tmp_path, name="backfill-worker")
    try:

        def complete():
            found = row(tenant_a)
            return found if found.status == TenantEmbeddingModel.Status.COMPLETE else None

        done = wait_for(complete, "the backfill", worker)
        wait_for(lambda: jobs(services.BACKFILL_TASK)[0]["status"] == "succeeded", "job", worker)
    finally:
        worker.stop()
        clear_queue()
    assert (done.chunks_done, done.chunks_total) == (5, 5)
    assert set(vectors_of(tenant_a)) == chunk_ids(tenant_a)
    assert model_index_state(MODEL) == "valid"
    # Written as the job, for the audit trail.
    actors = {event.actor for event in events(tenant_a, table_name="chunk_embeddings")}
    assert actors == {f"job:{services.BACKFILL_TASK}"}
    assert vectors_of(tenant_b) == {}
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    [first, *_] = search.chunk_search(tenant=tenant_a, query="new york city", mode="semantic")
    assert first.content == TEXTS[1]


def run(*arguments: str) -> str:
    out = io.StringIO()
    call_command(*arguments, stdout=out)
    return out.getvalue()


def test_the_commands_of_an_operator(tenant_a, tenant_b, settings):
    ingest_all(tenant_a)
    listing = run("embedding_models", "--tenant", tenant_a.slug)
    assert f"{get_embedder().model}" in listing and "current" in listing and "5/5" in listing
    assert "Queued the backfill of hashing-v2" in run(
        "backfill_embeddings", "--tenant", tenant_a.slug, "--model", MODEL
    )
    assert "Backfilled 5 chunk(s)" in run(
        "backfill_embeddings", "--tenant", tenant_a.slug, "--model", MODEL, "--now"
    )
    listing = run("embedding_models", "--tenant", tenant_a.slug)
    assert "hashing-v2" in listing and "complete" in listing and "valid" in listing
    assert "searches with hashing-v2" in run(
        "switch_embedding_model", "--tenant", tenant_a.slug, "--model", MODEL
    )

    # Searches logged with their text, then compared on both models.
    for query in ("red fox", "new york city", "tiny particles"):
        search.chunk_search(tenant=tenant_a, query=query, k=3)
    report = run(
        "compare_embedding_models",
        "--tenant",
        tenant_a.slug,
        "--model",
        get_embedder().model,
        "--sample",
        "3",
        "--k",
        "3",
    )
    assert "hashing-v2 (current) against hashing-v1, 3 logged queries, k=3." in report
    mean, least = re.search(r"overlap@3: mean ([\d.]+), min ([\d.]+)", report).groups()
    assert 0 <= float(least) <= float(mean) <= 1
    assert re.search(r"hashing-v1\s+[\d.]+\s+[\d.]+", report)
    assert re.search(r"hashing-v2\s+[\d.]+\s+[\d.]+", report)

    assert "hashing-v1 again" in run(
        "switch_embedding_model", "--tenant", tenant_a.slug, "--rollback"
    )
    assert "no longer keeps hashing-v2" in run(
        "switch_embedding_model", "--tenant", tenant_a.slug, "--forget", MODEL
    )
    dry = run("prune_embeddings", "--dry-run")
    assert f"Would delete 5 hashing-v2 vector(s) of tenant {tenant_a.slug}." in dry
    assert f"Would drop index {model_index_name(MODEL)}." in dry
    done = run("prune_embeddings")
    assert f"Deleted 5 hashing-v2 vector(s) of tenant {tenant_a.slug}." in done
    assert model_index_state(MODEL) is None
    assert "No vectors of a model no tenant keeps." in run("prune_embeddings")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("embedding_models", "--tenant", "nobody"), "--tenant: no tenant has the slug"),
        (
            ("backfill_embeddings", "--tenant", "{a}", "--model", "nope"),
            "--model: Unknown embedding model 'nope'",
        ),
        (
            ("switch_embedding_model", "--tenant", "{a}", "--model", "hashing-v2"),
            "--model: hashing-v2 was never backfilled",
        ),
        (
            ("switch_embedding_model", "--tenant", "{a}", "--rollback"),
            "--rollback: The tenant has no previous model",
        ),
        (
            ("switch_embedding_model", "--tenant", "{a}", "--forget", "hashing-v2"),
            "--forget: The tenant keeps no",
        ),
        (
            ("compare_embedding_models", "--tenant", "{a}", "--model", "hashing-v2"),
            "--model: 1 chunk(s) have no hashing-v2 vector",
        ),
        (
            ("compare_embedding_models", "--tenant", "{a}", "--model", "hashing-v2", "--k", "0"),
            "--k: k must be an integer from 1",
        ),
    ],
)
def test_bad_command_input_exits_saying_what_to_fix(tenant_a, arguments, message):
    ingest_all(tenant_a, TEXTS[:1])
    arguments = [argument.format(a=tenant_a.slug) for argument in arguments]
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command(*arguments, stdout=io.StringIO())


def test_compare_says_when_the_log_kept_no_query_text(tenant_a, settings):
    ingest_all(tenant_a, TEXTS[:2])
    settings.SEARCH_LOG_QUERY_TEXT = False
    search.chunk_search(tenant=tenant_a, query="red fox", k=3)
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    with pytest.raises(CommandError, match="SEARCH_LOG_QUERY_TEXT off"):
        call_command(
            "compare_embedding_models",
            "--tenant",
            tenant_a.slug,
            "--model",
            MODEL,
            stdout=io.StringIO(),
        )


def test_erasing_a_tenant_removes_its_models_and_vectors_only(tenant_a, tenant_b):
    from erasure.services.tenants import erase_tenant

    for tenant in (tenant_a, tenant_b):
        ingest_all(tenant, TEXTS[:2])
        services.embedding_backfill_start(tenant=tenant, model=MODEL)
        backfill(tenant)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    receipt = erase_tenant(tenant=tenant_a, requested_by="test")
    assert receipt.rows_touched["chunk_embeddings"] == 2
    assert receipt.rows_touched["tenant_embedding_models"] == 2  # hashing-v2 and previous
    assert len(vectors_of(tenant_b)) == 2 and row(tenant_b).status == "complete"
    assert search.chunk_search(tenant=tenant_b, query="red fox", k=1, mode="semantic")


def test_access_and_filters_hold_on_the_new_model(tenant_a, alice):
    documents = [
        services.document_ingest(
            tenant=tenant_a, title=f"Doc {n}", text=text, metadata={"topic": f"t{n % 2}"}
        )
        for n, text in enumerate(TEXTS)
    ]
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL, by=alice)
    services.document_restrict(tenant=tenant_a, document=documents[1], by=alice)
    member = make_member(tenant_a, "reader@example.com", role="editor")
    query = "new york city"
    seen = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic", user=member)
    assert TEXTS[1] not in {r.content for r in seen} and len(seen) == 4
    owners = search.chunk_search(tenant=tenant_a, query=query, k=5, mode="semantic", user=alice)
    assert owners[0].content == TEXTS[1]
    filtered = search.chunk_search(
        tenant=tenant_a, query=query, k=5, mode="semantic", filters={"document.topic": "t0"}
    )
    assert {r.content for r in filtered} == {TEXTS[0], TEXTS[2], TEXTS[4]}


@pytest.mark.parametrize("batch_size", [0, -1, 2**63, True, 1.5, "100"])
def test_prune_refuses_a_batch_size_it_cannot_use_by_name(batch_size):
    with pytest.raises(ValidationError) as refused:
        services.embeddings_prune(batch_size=batch_size)
    assert set(refused.value.message_dict) == {"batch_size"}


def chunk_vectors(tenant) -> dict:
    """chunk id -> (EMBEDDER's vector present, chunks.embedding_model), as stored."""
    with tenant_context(tenant):
        return {
            pk: (vector is not None, model)
            for pk, vector, model in Chunk.objects.values_list("id", "embedding", "embedding_model")
        }


def cached_models(tenant) -> set:
    with tenant_context(tenant):
        return set(EmbeddingCacheEntry.objects.values_list("model", flat=True))


def test_embedders_model_forgotten_leaves_chunks_embedding_empty_until_backfilled(
    tenant_a, tenant_b
):
    """The usual end of a switch: everyone moves off the first model, whose vectors (in
    chunks.embedding and the embedding cache) go, without flagging the runs that read
    the chunks; backfilled again, it can be searched again."""
    default = get_embedder().model
    work = grounded_run(tenant_a)
    ingest_all(tenant_a)
    ingest_all(tenant_b, TEXTS[:2])
    # While the tenant searches with EMBEDDER's model, it cannot be forgotten.
    with pytest.raises(ValidationError) as refused:
        services.embedding_model_forget(tenant=tenant_a, model=default)
    assert "current model" in refused.value.message_dict["model"][0]
    services.embedding_backfill_start(tenant=tenant_a, model=MODEL)
    backfill(tenant_a)
    services.embedding_model_switch(tenant=tenant_a, model=MODEL)
    services.embedding_model_forget(tenant=tenant_a, model=default)
    assert {state.model for state in services.embedding_models_status(tenant=tenant_a)} == {MODEL}
    with pytest.raises(ValidationError) as refused:
        services.embedding_model_rollback(tenant=tenant_a)
    assert "no previous model" in refused.value.message_dict["model"][0]

    # New chunks get only the model the tenant keeps, re-ingested ones too.
    [late] = ingest_all(tenant_a, ["a late upload about the lazy red fox"])
    services.document_reingest(tenant=tenant_a, document=late, text="the fox wakes up at noon")
    with tenant_context(tenant_a):
        late_chunks = set(Chunk.objects.filter(document=late).values_list("id", flat=True))
    assert {chunk_vectors(tenant_a)[pk] for pk in late_chunks} == {(False, "")}
    assert late_chunks <= set(vectors_of(tenant_a))
    # The re-embedding job (EMBEDDER changed, or re-run) leaves the tenant alone.
    assert services.chunks_reembed(tenant=tenant_a) == 0

    before = dict(chunk_vectors(tenant_a))
    in_chunks = sum(present for present, _ in before.values())
    dry = services.embeddings_prune(dry_run=True)
    assert dry.vectors == {(tenant_a.slug, default): in_chunks}
    assert dry.cached == {(tenant_a.slug, default): in_chunks}
    assert chunk_vectors(tenant_a) == before
    pruned = services.embeddings_prune(batch_size=2)
    assert pruned.vectors == dry.vectors and pruned.cached == dry.cached
    assert set(chunk_vectors(tenant_a).values()) == {(False, "")}
    assert cached_models(tenant_a) == {MODEL}
    # Vectors dropped are no change to what the run read: nothing is flagged.
    with tenant_context(tenant_a):
        assert not StaleSource.objects.exists()
    # The other tenant keeps EMBEDDER's vectors and searches them.
    assert set(chunk_vectors(tenant_b).values()) == {(True, default)}
    assert cached_models(tenant_b) == {default}
    assert len(search.chunk_search(tenant=tenant_b, query="lazy dog", k=2, mode="semantic")) == 2
    # Search works throughout, on the model the tenant keeps.
    [first, *_] = search.chunk_search(tenant=tenant_a, query="new york city", mode="semantic")
    assert first.content == TEXTS[1]
    assert services.embeddings_prune().vectors == {}
    with pytest.raises(ValidationError) as refused:
        compare_models(tenant=tenant_a, model=default)
    assert f"chunk(s) have no {default} vector" in refused.value.message_dict["model"][0]

    # Switching back needs EMBEDDER's vectors again: its backfill is the re-embedding job.
    with pytest.raises(ValidationError) as refused:
        services.embedding_model_switch(tenant=tenant_a, model=default)
    assert f"The tenant forgot {default}" in refused.value.message_dict["model"][0]
    clear_queue()
    services.embedding_backfill_start(tenant=tenant_a, model=default)
    [job] = jobs(services.REEMBED_TASK)
    assert job["args"] == {"tenant_id": str(tenant_a.pk)}
    clear_queue()
    with pytest.raises(ValidationError) as refused:
        services.embedding_model_switch(tenant=tenant_a, model=default)
    assert "have no" in refused.value.message_dict["model"][0]
    output = run("backfill_embeddings", "--tenant", tenant_a.slug, "--model", default, "--now")
    assert f"Backfilled {len(chunk_ids(tenant_a))} chunk(s)" in output
    clear_queue()
    assert row(tenant_a, default).status == TenantEmbeddingModel.Status.COMPLETE
    services.embedding_model_switch(tenant=tenant_a, model=default)
    assert set(chunk_vectors(tenant_a).values()) == {(True, default)}
    # Filled again from the text the run read: still nothing flagged.
    with tenant_context(tenant_a):
        assert not StaleSource.objects.exists()
    assert work["chunks"][0].pk in chunk_ids(tenant_a)
    results = search.chunk_search(tenant=tenant_a, query="lazy dog", k=3, mode="semantic")
    assert len(results) == 3


def test_a_second_switch_keeps_embedders_model_as_it_keeps_any_earlier_one(tenant_a, settings):
    settings.EMBEDDING_MODELS = {
        **settings.EMBEDDING_MODELS,
        "hashing-v2-again": {
            "CALLABLE": "documents.embedding.hashing_embedder_v2",
            "DIMENSION": 768,
        },
    }
    default = get_embedder().model
    ingest_all(tenant_a, TEXTS[:2])
    for model in (MODEL, "hashing-v2-again"):
        services.embedding_backfill_start(tenant=tenant_a, model=model)
        backfill(tenant_a, model)
        services.embedding_model_switch(tenant=tenant_a, model=model)
    roles = {state.model: state.role for state in services.embedding_models_status(tenant=tenant_a)}
    assert roles == {"hashing-v2-again": "current", MODEL: "previous", default: "kept"}
    assert services.embeddings_prune().vectors == {}
    assert set(chunk_vectors(tenant_a).values()) == {(True, default)}
    services.embedding_model_switch(tenant=tenant_a, model=default)
    services.embedding_model_forget(tenant=tenant_a, model=MODEL)
    services.embedding_model_forget(tenant=tenant_a, model="hashing-v2-again")
    pruned = services.embeddings_prune()
    assert set(pruned.indexes) == {model_index_name(MODEL), model_index_name("hashing-v2-again")}
