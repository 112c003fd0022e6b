"""How much data each scale generates and how many times each path is measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Volumes of one scale (`--scale NAME`) and the repetitions of each path there."""

    name: str
    # Data.
    chunks: int
    executions: int
    projects: int
    versions_per_type: int  # of every project's four documents
    hot_versions_per_type: int  # of the project the read paths ask for
    # Repetitions: rounds of per-call paths, queries per tenant share, and so on.
    rounds: int
    queries: int
    admin_rounds: int
    writer_versions: int  # versions each writer writes in one run
    writer_runs: int
    ingest_chunks: int  # chunks of the document one ingestion writes
    ingest_runs: int
    upload_bytes: int  # text of the upload the worker makes ready (benchmarks.worker)
    upload_runs: int
    migrate_runs: int
    hnsw_runs: int


SCALES = {
    # The suite runs this once (tests/test_benchmarks.py): every path, seconds each.
    "tiny": Scale(
        name="tiny",
        chunks=1_500,
        executions=5_000,
        projects=40,
        versions_per_type=2,
        hot_versions_per_type=5,
        rounds=10,
        queries=6,
        admin_rounds=2,
        writer_versions=4,
        writer_runs=1,
        ingest_chunks=30,
        ingest_runs=1,
        upload_bytes=20_000,
        upload_runs=2,
        migrate_runs=1,
        hnsw_runs=1,
    ),
    # `make bench`: about 90 s on 2 cores.
    "small": Scale(
        name="small",
        chunks=10_000,
        executions=100_000,
        projects=400,
        versions_per_type=3,
        hot_versions_per_type=10,
        rounds=150,
        queries=40,
        admin_rounds=8,
        writer_versions=25,
        writer_runs=3,
        ingest_chunks=500,
        ingest_runs=3,
        upload_bytes=1_000_000,
        upload_runs=3,
        migrate_runs=2,
        hnsw_runs=2,
    ),
    # Issue 10's figures: 100k chunks, 1M agent executions; 11 to 15 minutes on 2 cores,
    # a third of it the HNSW builds (one at the server's default maintenance_work_mem).
    "large": Scale(
        name="large",
        chunks=100_000,
        executions=1_000_000,
        projects=4_000,
        versions_per_type=3,
        hot_versions_per_type=10,
        rounds=200,
        queries=60,
        admin_rounds=8,
        writer_versions=40,
        writer_runs=3,
        ingest_chunks=2_000,
        ingest_runs=2,
        upload_bytes=1_000_000,
        upload_runs=3,
        migrate_runs=2,
        hnsw_runs=1,
    ),
}
DEFAULT_SCALE = "small"
