"""The audit trail's cost: the same writes with its triggers on and off (the issue's goal:
at most 1.3x).

In the benchmark database, the audit triggers (core.db.audit's `audit_row` on every
audited table) are switched off for the reference side and on for the project's, by the
owner, before each call (the switch is left out of the time). Both sides write through
the services on the same data:

- a version write: document_version_create, one after another on one project;
- an ingestion of the scale's chunks (500 at the default scale) through document_ingest,
  with the vectors computed beforehand (the embedder is not what is compared).

With the trail on, each written row also writes its event: its changes as jsonb (the
1536-dimension vector hashed), unsealed. Its place in the hash chain is written later,
outside the writer's transaction, by audit_seal (docs/security.md, "The hash chain"),
which is not part of either side.
"""

from __future__ import annotations

import itertools
import random

import psycopg
from psycopg import sql

from benchmarks.data import Dataset
from benchmarks.report import LOWER, PathResult
from benchmarks.scales import Scale
from benchmarks.timing import Outcome, Stats, interleave
from core.db.audit import AUDIT_TRIGGER

AUDIT_GOAL = 1.3
VERSIONS_PER_CALL = 20


def audited_tables(owner: psycopg.Connection) -> list[str]:
    rows = owner.execute(
        "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgname = %s AND t.tgparentid = 0 ORDER BY 1",
        [AUDIT_TRIGGER],
    ).fetchall()
    return [name for (name,) in rows]


def switch_audit(owner: psycopg.Connection, tables: list[str], *, on: bool) -> None:
    verb = sql.SQL("ENABLE" if on else "DISABLE")
    with owner.transaction():
        for table in tables:
            owner.execute(
                sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                    sql.Identifier(table), verb, sql.Identifier(AUDIT_TRIGGER)
                )
            )


def _side(owner, tables, *, on: bool, call):
    """`call` with the trail switched on or off first; the switch is not timed."""
    import time

    def run() -> Outcome:
        started = time.perf_counter()
        switch_audit(owner, tables, on=on)
        switched = time.perf_counter() - started
        rows = call()
        return Outcome(rows=rows, excluded=switched)

    return run


def measure(dataset: Dataset, owner: psycopg.Connection, scale: Scale, *, seed: int):
    from documents.chunking import resolve_chunking, split_text
    from documents.embedding import Embedder, get_embedder
    from documents.services import document_ingest, document_version_create, project_create

    tenant = dataset.hot.tenant
    tables = audited_tables(owner)
    project = project_create(tenant=tenant, name="bench audit versions")
    numbers = itertools.count()

    def versions() -> int:
        for _ in range(VERSIONS_PER_CALL):
            document_version_create(
                tenant=tenant,
                project=project,
                document_type="plan",
                content=f"audited revision {next(numbers)}\n" * 20,
            )
        return VERSIONS_PER_CALL

    on_times, off_times = interleave(
        "version writes, audit on vs off",
        _side(owner, tables, on=True, call=versions),
        _side(owner, tables, on=False, call=versions),
        rounds=max(3, scale.writer_runs),
    )
    per_version = [1000 * seconds / VERSIONS_PER_CALL for seconds in on_times]
    per_version_off = [1000 * seconds / VERSIONS_PER_CALL for seconds in off_times]

    embedder = get_embedder()
    size, overlap = resolve_chunking(None, None)
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    text = dataset.vocabulary.text(rng, overlap + scale.ingest_chunks * (size - overlap), topic=0)
    pieces = split_text(text, chunk_size=size, chunk_overlap=overlap)
    known = dict(
        zip(
            (piece.content for piece in pieces),
            embedder.embed([p.content for p in pieces]),
            strict=True,
        )
    )
    ready = Embedder(
        function=lambda texts: [known[t] for t in texts],
        model=embedder.model,
        dimension=embedder.dimension,
    )

    def ingest() -> int:
        # The same text each run (kept: allow_duplicate); its vectors come from the
        # tenant's embedding cache after the first, as the embedder is left out anyway.
        document_ingest(
            tenant=tenant,
            title="bench audit ingestion",
            text=text,
            embedder=ready,
            allow_duplicate=True,
        )
        return len(pieces)

    ingest_on, ingest_off = interleave(
        f"ingestion of {len(pieces)} chunks, audit on vs off",
        _side(owner, tables, on=True, call=ingest),
        _side(owner, tables, on=False, call=ingest),
        rounds=max(3, scale.ingest_runs),
    )
    switch_audit(owner, tables, on=True)
    return [
        PathResult(
            key="audit_version_write",
            group="writes",
            title="version write, audit trail on",
            reference_title="audit triggers off",
            unit="ms",
            project=Stats.of(per_version),
            reference=Stats.of(per_version_off),
            better=LOWER,
            goal=AUDIT_GOAL,
            notes={"audited_tables": len(tables)},
        ),
        PathResult(
            key="audit_ingestion",
            group="writes",
            title=f"ingestion of {len(pieces):,} chunks, audit trail on",
            reference_title="audit triggers off",
            unit="s",
            project=Stats.of(ingest_on),
            reference=Stats.of(ingest_off),
            better=LOWER,
            goal=AUDIT_GOAL,
            notes={"vectors": "computed beforehand"},
        ),
    ]
