"""Upload to ready through the worker, against the same document processed in-process.

A real worker (`manage.py procrastinate worker`, the command `make run` starts) runs as
a child process on the benchmark's database with the benchmark's settings (production
ones, the same EMBEDDER), its periodic system jobs included, as deployed. Each round:

- project: document_create of a fresh text (the upload; its ingestion job is queued in
  the same transaction), then the document's status read every POLL_SECONDS until it is
  ready. The time is from the call to the first read that sees `ready`; the stages
  seen on the way give how long it waited for a worker (queued), was chunked and was
  embedded (notes `stages_ms`, medians, to within a poll).
- reference: document_create(queue=False) of another fresh text of the same size and
  chunk count, then document_process in this process (what document_ingest does):
  the same work without the queue, the worker's start of the job and the polling.

Every text is new (no duplicate refused, no vector in the embedding cache), so both
sides embed every chunk. The ratio is what the queue and the worker add to an upload.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.data import Dataset
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import Mismatch, Outcome, interleave, milliseconds
from tenancy.context import BYPASS_SETTING

POLL_SECONDS = 0.01
READY_TIMEOUT_SECONDS = 600
WORKER_START_SECONDS = 120
WORKER_NAME = "bench-worker"
# The worker: Django set up, pointed at the benchmark's database, then the real command.
WORKER = """
import sys

import django

django.setup()
from django.conf import settings

settings.DATABASES["default"]["NAME"] = sys.argv[1]
from django.core.management import execute_from_command_line

execute_from_command_line(["manage.py", "procrastinate", "worker", "--name", sys.argv[2]])
"""
STAGES = ("queued", "chunking", "embedding", "ready")


class Worker:
    """The worker process; its output goes to a log file, shown when it fails."""

    def __init__(self, database: str, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our script
                [sys.executable, "-c", WORKER, database, WORKER_NAME],
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker ended:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        """As Ctrl-C would: SIGINT, its jobs finished first; SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def _read(owner: psycopg.Connection, query: str, params: list) -> tuple | None:
    with owner.transaction():
        owner.execute("SELECT set_config(%s, 'on', true)", [BYPASS_SETTING])
        return owner.execute(query, params).fetchone()


def _wait_registered(owner: psycopg.Connection, worker: Worker) -> None:
    """Until the worker has registered in procrastinate_workers (it listens from then)."""
    deadline = time.monotonic() + WORKER_START_SECONDS
    while time.monotonic() < deadline:
        worker.check()
        if _read(owner, "SELECT count(*) FROM procrastinate_workers", [])[0]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the worker did not start within {WORKER_START_SECONDS} s")


def _upload_texts(dataset: Dataset, target_bytes: int, count: int, seed: int) -> list[str]:
    """`count` different texts of about `target_bytes` bytes, each splitting into the same
    number of chunks (a chunk every size - overlap tokens, the tokens being words)."""
    from documents.chunking import resolve_chunking

    size, overlap = resolve_chunking(None, None)
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    sample = dataset.vocabulary.text(rng, 10_000, topic=1)
    bytes_per_word = len(sample.encode()) / 10_000
    chunks = max(1, round(target_bytes / bytes_per_word / (size - overlap)))
    words = overlap + chunks * (size - overlap)
    topics = len(dataset.vocabulary.topics)
    return [dataset.vocabulary.text(rng, words, topic=n % topics) for n in range(count)]


def measure(dataset: Dataset, owner: psycopg.Connection, scale: Scale, *, seed: int) -> PathResult:
    from django.db import connection

    from documents.services import document_create, document_process

    tenant = dataset.hot.tenant
    rounds = scale.upload_runs
    # Two texts a round and one warm-up round.
    texts = iter(_upload_texts(dataset, scale.upload_bytes, 2 * (rounds + 1), seed))
    stage_times: dict[str, list[float]] = {stage: [] for stage in STAGES[:-1]}
    upload_call: list[float] = []
    sizes: list[int] = []
    chunks: list[int] = []

    def chunks_of(document_id) -> int:
        count = _read(
            owner,
            "SELECT count(*) FROM chunks WHERE tenant_id = %s AND document_id = %s",
            [tenant.pk, document_id],
        )[0]
        chunks.append(count)
        return count

    def through_worker() -> Outcome:
        text = next(texts)
        started = time.perf_counter()
        document = document_create(tenant=tenant, title="bench upload, worker", text=text)
        seen = {"queued": time.perf_counter() - started}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while "ready" not in seen:
            worker.check()
            status, error = _read(
                owner,
                "SELECT status, error_message FROM documents WHERE tenant_id = %s AND id = %s",
                [tenant.pk, document.pk],
            )
            if status == "failed" or time.monotonic() > deadline:
                raise Mismatch(f"the worker's document is {status}: {error}")
            seen.setdefault(status, time.perf_counter() - started)
            time.sleep(POLL_SECONDS)
        elapsed = seen["ready"]
        # Each stage's time: from when it was first seen to when the next one was.
        order = [stage for stage in STAGES if stage in seen]
        for stage, following in zip(order, order[1:], strict=False):
            stage_times[stage].append(seen[following] - seen[stage])
        upload_call.append(seen["queued"])
        sizes.append(len(text.encode()))
        return Outcome(rows=chunks_of(document.pk), seconds=elapsed)

    def in_process() -> Outcome:
        text = next(texts)
        started = time.perf_counter()
        document = document_create(
            tenant=tenant, title="bench upload, in-process", text=text, queue=False
        )
        document = document_process(tenant=tenant, document=document)
        elapsed = time.perf_counter() - started
        if document.status != "ready":
            raise Mismatch(f"the in-process document is {document.status}")
        return Outcome(rows=chunks_of(document.pk), seconds=elapsed)

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        worker = Worker(connection.settings_dict["NAME"], Path(folder) / "worker.log")
        try:
            _wait_registered(owner, worker)
            project_times, reference_times = interleave(
                "upload to ready through the worker",
                through_worker,
                in_process,
                rounds=rounds,
                warmup=1,
            )
        finally:
            worker.stop()
    # The warm-up round left out, as in the figures.
    stages_ms = {
        stage: milliseconds(times[1:]).median for stage, times in stage_times.items() if times[1:]
    }
    if upload_call[1:]:
        stages_ms["upload call"] = milliseconds(upload_call[1:]).median
    size = round(sum(sizes) / len(sizes) / 1000)
    return PathResult(
        key="upload_to_ready",
        group="writes",
        title=f"upload to ready through the worker, {size:,} kB text",
        reference_title="document_process in-process",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        notes={
            "bytes": sizes,
            "chunks": chunks[-1],
            "stages_ms": stages_ms,
            "poll_seconds": POLL_SECONDS,
        },
    )
