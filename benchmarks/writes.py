"""Write paths: document-version throughput by writer count, and knowledge ingestion.

Version writers: 8 threads, each appending versions to its own project through
document_version_create, against 1 thread doing the same; the ratio is how far 8 writers
scale (the advisory lock only serialises writers of one document). Every run checks
that each project's versions came out 1..N.

Ingestion: document_ingest of one text that splits into N chunks, embedded by the
EMBEDDER (timed apart and left out of the project's rows/s), against the same N chunk
rows written in binary by the runtime role under the same tenant. PostgreSQL refuses
COPY FROM into a table with row-level security for a role it applies to, so the
reference COPYs into a temporary table and inserts from it in the same transaction:
the policies check every row, as they do for the project, and the HNSW index is in
place for both. Every run ingests the same text again (allow_duplicate) with the
tenant's embedding cache emptied first, outside the timing: the embedder runs, and the
project writes the cache's rows too.

Embedding cache: the same ingestion with the cache holding every chunk's vector (no
embedder call) against it with the cache emptied (every chunk embedded by the EMBEDDER
and cached); the embedder's time counts on both sides, since saving it is the point.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.data import Dataset, copy_rows
from benchmarks.reference import Reference
from benchmarks.report import HIGHER, PathResult
from benchmarks.scales import Scale
from benchmarks.timing import Outcome, Stats, interleave, per_second, profile

WRITERS = 8
WRITERS_GOAL = 3.0
# Issue 24: the project's writers against raw psycopg's, at each of these counts.
WRITER_LEVELS = (1, 2, 4, 8)
RAW_WRITERS_GOAL = 0.8
INGEST_GOAL = 0.6
# A warm cache skips the embedder: at least as fast as a cold one, whatever the embedder.
WARM_CACHE_GOAL = 1.0
STAGE_TABLE = "bench_chunk_stage"
CHUNK_COLUMNS = [
    "tenant_id",
    "document_id",
    "ordinal",
    "content",
    "token_count",
    "embedding",
    "embedding_model",
    "metadata",
]


def _version_content(project_name: str, number: int) -> str:
    return f"{project_name} revision {number}\n" * 20


def _project_writer(tenant):
    """A thread's writer through document_version_create, on Django's connection."""
    from django.db import connection

    from documents.services import document_version_create

    @contextmanager
    def writer() -> Iterator[Callable]:
        try:
            yield lambda project, content: document_version_create(
                tenant=tenant, project=project, document_type="plan", content=content
            )
        finally:
            connection.close()

    return writer


def _raw_writer(tenant):
    """A thread's writer of the same statements as document_version_create, under the
    same locks, in plain psycopg as the runtime role: one transaction a version, the
    tenant set, the document's advisory lock with its project FOR SHARE, the latest
    version's number and hash, the INSERT. What it leaves out is the project's own code
    (Django's ORM, the tenant context's bookkeeping, full_clean): the fair reference."""
    from django.db import connection

    from benchmarks import database
    from core.db.locks import ADVISORY_XACT_LOCK_SQL
    from core.hashing import sha256_hex
    from core.ids import uuid7

    kwargs = database.runtime_kwargs(connection.settings_dict["NAME"])

    def write(conn, project, content: str) -> None:
        with conn.transaction(), conn.cursor() as cursor:
            Reference.set_scope(cursor, [tenant.pk])
            cursor.execute(
                f"SELECT {ADVISORY_XACT_LOCK_SQL} FROM projects"
                " WHERE tenant_id = %s AND id = %s FOR SHARE OF projects",
                [f"document_versions:{project.pk}:plan", tenant.pk, project.pk],
            )
            cursor.execute(
                "SELECT version, content_sha256 FROM document_versions WHERE tenant_id = %s"
                " AND project_id = %s AND document_type = 'plan' ORDER BY version DESC LIMIT 1",
                [tenant.pk, project.pk],
            )
            latest = cursor.fetchone()
            cursor.execute(
                "INSERT INTO document_versions (id, tenant_id, project_id, document_type,"
                " version, content, content_sha256, prev_sha256, metadata)"
                " VALUES (%s, %s, %s, 'plan', %s, %s, %s, %s, '{}')",
                [
                    uuid7(),
                    tenant.pk,
                    project.pk,
                    latest[0] + 1 if latest else 1,
                    content,
                    sha256_hex(content),
                    latest[1] if latest else None,
                ],
            )

    @contextmanager
    def writer() -> Iterator[Callable]:
        with database.connect(kwargs, vectors=False) as conn:
            yield lambda project, content: write(conn, project, content)

    return writer


def _write_versions(tenant, writers: int, versions: int, label: str, writer=None) -> float:
    """Seconds for `writers` threads to append `versions` versions each to their own project.

    Each thread opens its connection (`writer`, by default the project's) before the
    clock starts; afterwards every project's versions must be 1..N.
    """
    from documents.models import DocumentVersion
    from documents.services import project_create
    from tenancy.context import tenant_context

    writer = writer or _project_writer(tenant)
    projects = [
        project_create(tenant=tenant, name=f"bench writers {label} #{n}") for n in range(writers)
    ]
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(project) -> None:
        try:
            with writer() as append:
                barrier.wait()
                for number in range(versions):
                    append(project, _version_content(project.name, number))
        except BaseException as error:  # noqa: BLE001 - raised in the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(project,)) for project in projects]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a writer failed to start: its error is raised below
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    with tenant_context(tenant):
        for project in projects:
            numbers = list(
                DocumentVersion.objects.filter(project=project)
                .order_by("version")
                .values_list("version", flat=True)
            )
            if numbers != list(range(1, versions + 1)):
                raise AssertionError(f"{project.name}: versions {numbers}, not 1..{versions}")
    return elapsed


def measure_writers(dataset: Dataset, scale: Scale) -> PathResult:
    from documents.services import document_version_create, project_create

    tenant = dataset.hot.tenant
    runs = itertools.count()

    def writers(count: int) -> Callable[[], int]:
        def call() -> int:
            _write_versions(tenant, count, scale.writer_versions, f"{count} run {next(runs)}")
            return count * scale.writer_versions

        return call

    project_times, reference_times = interleave(
        f"{WRITERS} writers vs 1",
        writers(WRITERS),
        writers(1),
        rounds=scale.writer_runs,
        same_rows=False,
    )
    probe = project_create(tenant=tenant, name="bench statements per version")
    # New content each call: an unchanged one returns the latest version instead.
    numbers = itertools.count()
    version = profile(
        lambda: document_version_create(
            tenant=tenant, project=probe, document_type="plan", content=f"v{next(numbers)}"
        )
    )
    return PathResult(
        key="version_writers",
        group="writes",
        title=f"version writers, {WRITERS} on {WRITERS} projects",
        reference_title="1 writer",
        unit="versions/s",
        project=per_second(WRITERS * scale.writer_versions, project_times),
        reference=per_second(scale.writer_versions, reference_times),
        better=HIGHER,
        goal=WRITERS_GOAL,
        notes={"profile_per_version": version},
    )


def measure_writers_against_raw(dataset: Dataset, scale: Scale) -> list[PathResult]:
    """At 1, 2, 4 and 8 writers: the project's versions/s against raw psycopg's, the
    same statements under the same locks (_raw_writer), interleaved run by run."""
    tenant = dataset.hot.tenant
    runs = itertools.count()
    results = []
    for count in WRITER_LEVELS:

        def writers(writer, side: str, count: int = count) -> Callable[[], int]:
            def call() -> int:
                label = f"{count} {side} run {next(runs)}"
                _write_versions(tenant, count, scale.writer_versions, label, writer)
                return count * scale.writer_versions

            return call

        project_times, reference_times = interleave(
            f"{count} writers, project vs raw",
            writers(_project_writer(tenant), "project"),
            writers(_raw_writer(tenant), "raw"),
            rounds=scale.writer_runs,
        )
        versions = count * scale.writer_versions
        results.append(
            PathResult(
                key=f"version_writers_raw_{count}",
                group="writes",
                title=f"version writers against raw, {count} on {count} project(s)",
                reference_title="raw psycopg, same statements and locks",
                unit="versions/s",
                project=per_second(versions, project_times),
                reference=per_second(versions, reference_times),
                better=HIGHER,
                goal=RAW_WRITERS_GOAL,
            )
        )
    return results


def _ingest_text(dataset: Dataset, chunks: int, seed: int) -> str:
    """A text that document_ingest splits into exactly `chunks` chunks."""
    from documents.chunking import resolve_chunking

    size, overlap = resolve_chunking(None, None)
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    return dataset.vocabulary.text(rng, overlap + chunks * (size - overlap), topic=0)


def _empty_embedding_cache(tenant) -> float:
    """Delete the tenant's embedding cache; the seconds it took (left out of the timing)."""
    from documents.models import EmbeddingCacheEntry
    from tenancy.context import tenant_context

    started = time.perf_counter()
    with tenant_context(tenant):
        EmbeddingCacheEntry.objects.filter(tenant=tenant).delete()
    return time.perf_counter() - started


def measure_ingestion(dataset: Dataset, ref: Reference, scale: Scale, *, seed: int) -> PathResult:
    from documents.chunking import resolve_chunking, split_text
    from documents.embedding import Embedder, get_embedder
    from documents.models import Chunk
    from documents.services import document_ingest
    from tenancy.context import tenant_context

    tenant = dataset.hot.tenant
    embedder = get_embedder()
    text = _ingest_text(dataset, scale.ingest_chunks, seed)
    size, overlap = resolve_chunking(None, None)
    pieces = split_text(text, chunk_size=size, chunk_overlap=overlap)
    if len(pieces) != scale.ingest_chunks:
        raise AssertionError(f"the text splits into {len(pieces)} chunks")
    vectors = embedder.embed([piece.content for piece in pieces])
    embedding: list[float] = []

    def timed_embed(texts):
        started = time.perf_counter()
        try:
            return embedder.function(texts)
        finally:
            embedding.append(time.perf_counter() - started)

    timed = Embedder(function=timed_embed, model=embedder.model, dimension=embedder.dimension)
    embedder_seconds: list[float] = []
    with_embedder: list[float] = []

    def project() -> Outcome:
        embedding.clear()
        emptying = _empty_embedding_cache(tenant)
        started = time.perf_counter()
        document = document_ingest(
            tenant=tenant, title="bench ingestion", text=text, embedder=timed, allow_duplicate=True
        )
        elapsed = time.perf_counter() - started
        with tenant_context(tenant):
            rows = Chunk.objects.filter(document=document).count()
        embedder_seconds.append(sum(embedding))
        with_embedder.append(elapsed)
        counted_after = time.perf_counter() - started - elapsed
        return Outcome(rows=rows, excluded=emptying + sum(embedding) + counted_after)

    with ref.conn.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE {STAGE_TABLE} (LIKE chunks INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )

    def reference() -> int:
        with ref.conn.transaction(), ref.conn.cursor() as cursor:
            ref.set_scope(cursor, [tenant.pk])
            cursor.execute(
                "INSERT INTO documents (tenant_id, title, storage_key, content_type, size_bytes,"
                " sha256, status, error_message, metadata) VALUES (%s, 'bench ingestion',"
                " 'bench/' || uuidv7(), 'text/plain', %s, '', 'embedding', '', '{}')"
                " RETURNING id",
                [tenant.pk, len(text.encode())],
            )
            document_id = cursor.fetchone()[0]
            copy_rows(
                cursor,
                STAGE_TABLE,
                CHUNK_COLUMNS,
                (
                    (
                        tenant.pk,
                        document_id,
                        piece.ordinal,
                        piece.content,
                        piece.token_count,
                        vector,
                        embedder.model,
                        {"start": piece.start, "end": piece.end},
                    )
                    for piece, vector in zip(pieces, vectors, strict=True)
                ),
                types_of="chunks",
            )
            columns = ", ".join(CHUNK_COLUMNS)
            cursor.execute(f"INSERT INTO chunks ({columns}) SELECT {columns} FROM {STAGE_TABLE}")
            rows = cursor.rowcount
            cursor.execute("UPDATE documents SET status = 'ready' WHERE id = %s", [document_id])
        return rows

    project_times, reference_times = interleave(
        f"ingestion of {scale.ingest_chunks} chunks",
        project,
        reference,
        rounds=scale.ingest_runs,
    )
    rows = scale.ingest_chunks
    return PathResult(
        key="ingestion",
        group="writes",
        title=f"ingestion, {rows:,} chunks x 1536, embedder apart",
        reference_title="binary COPY, same rows",
        unit="rows/s",
        project=per_second(rows, project_times),
        reference=per_second(rows, reference_times),
        better=HIGHER,
        goal=INGEST_GOAL,
        notes={
            # The warm-up run left out, as in the figures.
            "embedder_seconds": Stats.of(embedder_seconds[1:]).as_json(),
            "rows_per_second_with_embedder": Stats.of(
                [rows / seconds for seconds in with_embedder[1:]]
            ).as_json(),
        },
    )


def measure_embedding_cache(dataset: Dataset, scale: Scale, *, seed: int) -> PathResult:
    """document_ingest of the ingestion row's text with a warm embedding cache against a
    cold one, the EMBEDDER's time included on both sides."""
    from documents.embedding import Embedder, get_embedder
    from documents.services import document_ingest

    tenant = dataset.hot.tenant
    embedder = get_embedder()
    text = _ingest_text(dataset, scale.ingest_chunks, seed)
    calls: list[int] = []

    def counted(texts):
        calls.append(len(texts))
        return embedder.function(texts)

    counting = Embedder(function=counted, model=embedder.model, dimension=embedder.dimension)
    embedded: dict[str, list[int]] = {"warm": [], "cold": []}

    def ingest(side: str, emptying: float = 0.0) -> Outcome:
        calls.clear()
        document = document_ingest(
            tenant=tenant,
            title=f"bench {side} cache",
            text=text,
            embedder=counting,
            allow_duplicate=True,
        )
        if document.status != "ready":
            raise AssertionError(f"the {side} ingestion failed: {document.error_message}")
        embedded[side].append(sum(calls))
        return Outcome(rows=scale.ingest_chunks, excluded=emptying)

    def warm() -> Outcome:
        return ingest("warm")

    def cold() -> Outcome:
        return ingest("cold", _empty_embedding_cache(tenant))

    project_times, reference_times = interleave(
        f"ingestion of {scale.ingest_chunks} chunks, warm vs cold embedding cache",
        warm,
        cold,
        rounds=scale.ingest_runs,
    )
    rows = scale.ingest_chunks
    return PathResult(
        key="ingestion_cache",
        group="writes",
        title=f"ingestion, {rows:,} chunks, warm embedding cache",
        reference_title="cold cache (all embedded)",
        unit="rows/s",
        project=per_second(rows, project_times),
        reference=per_second(rows, reference_times),
        better=HIGHER,
        goal=WARM_CACHE_GOAL,
        # Texts sent to the embedder per ingestion, the warm-up runs left out.
        notes={"texts_embedded": {side: runs[1:] for side, runs in embedded.items()}},
    )
