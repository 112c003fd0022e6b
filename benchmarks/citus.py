"""Citus (`--citus`): chunk_search and a version write on a real cluster beside one server.

Starts a Citus coordinator and two workers (tests/citus_cluster.py, the cluster the tests
use; the first run builds Citus) and, for the reference, a plain server from the
embedded binaries (tests/streaming_replica.throwaway_primary). Each is migrated (the
cluster's database then distributed by `citus_distribute`) and gets the same data: one
tenant whose DOCUMENTS documents are ingested through document_ingest from the same
seeded text, and one project. Then, on each side in turn, the same calls: chunk_search
in its three modes (k=10, the same queries in the same order) and document_version_create
appending a version. The sides cannot be interleaved (Django's default connection points
at one server at a time): each is warmed up first. All servers run on this machine, so
the ratio is what Citus itself adds (planning on the coordinator, the hop to the worker
that holds the tenant), not a network's.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import milliseconds

# A tenant's query on the cluster runs on one worker, after the coordinator's planning
# and a round trip to it: a few milliseconds on top of one server's, whatever the size.
GOAL = 3.0
K = 10
DOCUMENTS = 20
WORDS = [f"term{n:03d}" for n in range(400)]
MODES = ("semantic", "fulltext", "hybrid")
DATABASE = "agentic_citus_bench"


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _load(seed: int, chunks: int) -> dict:
    """One tenant, its documents (about `chunks` chunks in all) and a project."""
    from documents.services import document_ingest, project_create
    from tenancy.models import Tenant

    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    tenant = Tenant.objects.create(name="Citus bench", slug="citus-bench")
    for n in range(DOCUMENTS):
        document_ingest(
            tenant=tenant,
            title=f"document {n}",
            text=_text(rng, words=max(1, chunks // DOCUMENTS) * 120),
        )
    project = project_create(tenant=tenant, name="citus bench")
    return {"tenant": tenant, "project": project}


def _timed(call: Callable[[], object], rounds: int) -> list[float]:
    call()  # warm-up: connections, plans, the HNSW pages in the cache
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _measure_side(rows: dict, queries: list[str], rounds: int) -> dict[str, list[float]]:
    from documents.search import chunk_search
    from documents.services import document_version_create

    tenant, project = rows["tenant"], rows["project"]
    times = {}
    for mode in MODES:
        texts = iter(queries * 2)
        times[mode] = _timed(
            lambda mode=mode, texts=texts: chunk_search(
                tenant=tenant, query=next(texts), k=K, mode=mode
            ),
            rounds,
        )
    versions = iter(range(rounds + 1))
    times["version"] = _timed(
        lambda: document_version_create(
            tenant=tenant,
            project=project,
            document_type="about",
            content=f"version {next(versions)}",
        ),
        rounds,
    )
    return times


def _sides() -> Iterator[tuple[str, Callable[[], AbstractContextManager]]]:
    from tests import citus_cluster
    from tests.streaming_replica import django_on, throwaway_primary

    def plain():
        from contextlib import ExitStack

        stack = ExitStack()
        primary = stack.enter_context(throwaway_primary())
        stack.enter_context(django_on(primary, {}))
        return stack

    def cluster():
        from contextlib import ExitStack

        stack = ExitStack()
        nodes = stack.enter_context(citus_cluster.citus_cluster())
        nodes.create_database(DATABASE)
        stack.enter_context(citus_cluster.django_on(nodes, DATABASE))
        return stack

    yield "plain", plain
    yield "citus", cluster


def measure(scale: Scale, progress, *, seed: int) -> list[PathResult]:
    from django.core.management import call_command

    chunks = min(scale.chunks, 2_000)
    rounds = scale.rounds
    rng = random.Random(seed + 1)  # noqa: S311 - benchmark inputs, not secrets
    queries = [_text(rng, words=4) for _ in range(rounds + 1)]
    results: dict[str, dict[str, list[float]]] = {}
    for side, enter in _sides():
        progress(f"citus: {side}: migrate, {chunks} chunks in {DOCUMENTS} documents")
        with enter():
            call_command("migrate", verbosity=0)
            if side == "citus":
                call_command("citus_distribute", stdout=io.StringIO())
            rows = _load(seed, chunks)
            progress(f"citus: {side}: {rounds} rounds of each path")
            results[side] = _measure_side(rows, queries, rounds)
    paths = [
        PathResult(
            key=f"citus_chunk_search_{mode}",
            group="citus",
            title=f"chunk_search {mode}, k={K}, on Citus (2 workers)",
            reference_title="the same on one PostgreSQL server",
            unit="ms",
            project=milliseconds(results["citus"][mode]),
            reference=milliseconds(results["plain"][mode]),
            goal=GOAL,
            notes={"chunks": chunks},
        )
        for mode in MODES
    ]
    paths.append(
        PathResult(
            key="citus_version_write",
            group="citus",
            title="document_version_create on Citus (2 workers)",
            reference_title="the same on one PostgreSQL server",
            unit="ms",
            project=milliseconds(results["citus"]["version"]),
            reference=milliseconds(results["plain"]["version"]),
            goal=GOAL,
        )
    )
    return paths
