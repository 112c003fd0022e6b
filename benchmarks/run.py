"""`make bench` (`python -m benchmarks`): every path of issue 10 against its reference.

    python -m benchmarks [--scale tiny|small|large] [--json FILE|-] [--plot DIR]
                         [--database NAME] [--keep-database] [--seed N] [--replica]
                         [--citus] [--only access|filters|models|search|story|usage|worker|writers]

Builds its own database (benchmarks.database), generates the scale's data
(benchmarks.data), measures each path interleaved with its reference, prints the table
and optionally writes the JSON and the plots. Progress goes to stderr.

It runs with production settings (DJANGO_DEBUG=false: no query log, as served), a
throw-away SECRET_KEY where none is set, and uploaded files in a temporary folder. Its
own sessions get a statement_timeout of STATEMENT_TIMEOUT (PGOPTIONS, which outranks the
runtime role's 30 s): at the large scale one ingestion INSERT into the HNSW index, or a
search of a million rows, may take longer, and a timeout would end the run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.scales import DEFAULT_SCALE, SCALES

STATEMENT_TIMEOUT = "15min"
# The table's order: issue 10's.
PATH_ORDER = (
    "project_by_pk",
    "project_list",
    "metadata_contains",
    "latest_versions",
    "execution_history_month",
    "tenant_context",
    "chunk_search_semantic_50",
    "chunk_search_semantic_10",
    "chunk_search_semantic_1",
    "chunk_search_fulltext",
    "chunk_search_hybrid",
    "chunk_search_log",
    "chunk_search_restricted_1",
    "chunk_search_restricted_10",
    "chunk_search_restricted_50",
    "chunk_search_filter_document_1",
    "chunk_search_filter_document_10",
    "chunk_search_filter_document_50",
    "chunk_search_filter_chunk_1",
    "chunk_search_filter_chunk_10",
    "chunk_search_filter_chunk_50",
    "chunk_search_switched_model",
    "ingestion",
    "ingestion_cache",
    "upload_to_ready",
    "version_writers",
    "version_writers_raw_1",
    "version_writers_raw_2",
    "version_writers_raw_4",
    "version_writers_raw_8",
    "audit_version_write",
    "audit_ingestion",
    "usage_rollup_write",
    "admin_plain",
    "admin_status",
    "admin_search",
    "admin_search_rare",
    "admin_run_story",
    "usage_page",
    "hnsw_build",
    "migrate",
    "project_list_replica",
    "citus_chunk_search_semantic",
    "citus_chunk_search_fulltext",
    "citus_chunk_search_hybrid",
    "citus_version_write",
)


# Row groups `--only` selects: the database is still migrated, the data generated and
# the HNSW index built (one run each), but only that group's rows are measured.
ONLY = {"access", "filters", "models", "search", "story", "usage", "worker", "writers"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default=DEFAULT_SCALE, help="data volume (small)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument("--plot", metavar="DIR", type=Path, help="write PNG plots into DIR")
    parser.add_argument("--database", default=None, help="benchmark database (agentic_bench)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument(
        "--replica",
        action="store_true",
        help="also the replica read path, on a throwaway primary and standby (benchmarks.replica)",
    )
    parser.add_argument(
        "--citus",
        action="store_true",
        help="also chunk_search and a version write on a Citus cluster (benchmarks.citus)",
    )
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="measure only these rows, on the same generated data and index (a quicker run)",
    )
    return parser.parse_args(argv)


def _configure_django(workdir: Path) -> None:
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["EXPORTS_ROOT"] = str(workdir / "exports")
    os.environ["PGOPTIONS"] = f"-c statement_timeout={STATEMENT_TIMEOUT}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def server_info(conn) -> dict:
    names = (
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_wal_size",
        "effective_cache_size",
        "max_parallel_maintenance_workers",
        "statement_timeout",
    )
    info = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
    info["version"] = conn.execute("SHOW server_version").fetchone()[0]
    info["pgvector"] = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    ).fetchone()[0]
    return info


def measure(args: argparse.Namespace, name: str, progress):
    from benchmarks import (
        access,
        admin_lists,
        audit,
        data,
        database,
        filters,
        models,
        reads,
        run_story,
        schema,
        search,
        usage,
        worker,
        writes,
    )
    from benchmarks.reference import Reference
    from benchmarks.report import Report
    from documents.embedding import get_embedder

    scale = SCALES[args.scale]
    started = time.perf_counter()
    only = args.only
    migrate_runs = 1 if only else scale.migrate_runs
    progress(f"scale {scale.name}: migrate into {name}, {migrate_runs} run(s) each side")
    migrate = schema.measure_migrate(name, migrate_runs, progress)
    paths = [] if only else [migrate]
    with (
        database.django_database(name),
        database.connect(database.owner_kwargs(name)) as owner,
        database.connect(database.runtime_kwargs(name)) as runtime,
    ):
        # Loading without the index and building it afterwards is both faster and one of
        # the measurements.
        schema.drop_hnsw_index(owner)
        dataset = data.generate(
            owner, scale, seed=args.seed, embedder=get_embedder(), progress=progress
        )
        progress("HNSW builds")
        build = schema.measure_hnsw_build(1 if only else scale.hnsw_runs, progress)
        paths += [] if only else [build]
        owner.execute("VACUUM ANALYZE")
        ref = Reference(runtime)
        report = Report(scale=scale.name, seed=args.seed, server=server_info(runtime))
        if only:
            progress(f"only the {only} rows")
            if only == "filters":
                paths, report.recall = filters.measure(dataset, owner, scale, seed=args.seed)
            elif only == "models":
                paths, report.recall = models.measure(dataset, owner, ref, scale, seed=args.seed)
            elif only == "worker":
                paths = [worker.measure(dataset, owner, scale, seed=args.seed)]
            elif only == "story":
                paths = [run_story.measure(dataset, ref, scale)]
            elif only == "usage":
                paths = usage.measure(dataset, owner, ref, scale)
            elif only == "writers":
                paths = [
                    writes.measure_writers(dataset, scale),
                    *writes.measure_writers_against_raw(dataset, scale),
                ]
            elif only == "search":
                paths, report.recall = search.measure(dataset, ref, scale, seed=args.seed)
            else:
                paths, report.recall = access.measure(dataset, owner, ref, scale, seed=args.seed)
            report.paths = sorted(paths, key=lambda path: PATH_ORDER.index(path.key))
            report.seconds = time.perf_counter() - started
            return report
        progress("read paths")
        paths += reads.measure(dataset, ref, scale)
        progress("search")
        search_paths, report.recall = search.measure(dataset, ref, scale, seed=args.seed)
        paths += search_paths
        # On the generated data, before the writes add documents (the same text ingested
        # again and again); every document it restricts is open again when it returns.
        progress("search as a member who sees part of the tenant")
        access_paths, access_recall = access.measure(dataset, owner, ref, scale, seed=args.seed)
        paths += access_paths
        report.recall["access"] = access_recall["by_visible_share"]
        report.recall["summary"] += access_recall["summary"]
        progress("search with metadata filters")
        filter_paths, filter_recall = filters.measure(dataset, owner, scale, seed=args.seed)
        paths += filter_paths
        report.recall["filters"] = filter_recall["by_filter_share"]
        report.recall["summary"] += filter_recall["summary"]
        # On the generated data too, before the writes add their copies of one text
        # (measured after them, on 21,392 chunks, both sides recalled 0.81). The tenant is
        # switched back and the model pruned before it returns: no later row writes or
        # searches its vectors.
        progress("search on a switched embedding model")
        model_paths, model_recall = models.measure(dataset, owner, ref, scale, seed=args.seed)
        paths += model_paths
        report.recall["switched_model"] = model_recall["switched_model"]
        report.recall["summary"] += model_recall["summary"]
        progress("admin changelists")
        paths += admin_lists.measure(dataset, ref, scale)
        progress("the story page of a run of 50 steps")
        paths.append(run_story.measure(dataset, ref, scale))
        progress("version writers")
        paths.append(writes.measure_writers(dataset, scale))
        paths += writes.measure_writers_against_raw(dataset, scale)
        progress("ingestion")
        paths.append(writes.measure_ingestion(dataset, ref, scale, seed=args.seed))
        paths.append(writes.measure_embedding_cache(dataset, scale, seed=args.seed))
        progress("audit trail on and off")
        paths += audit.measure(dataset, owner, scale, seed=args.seed)
        progress("usage page and the usage rollup's triggers")
        paths += usage.measure(dataset, owner, ref, scale)
        progress("upload to ready through a worker process")
        paths.append(worker.measure(dataset, owner, scale, seed=args.seed))
    if args.replica:
        from benchmarks import replica

        paths.append(replica.measure(scale, progress))
    if args.citus:
        from benchmarks import citus

        paths += citus.measure(scale, progress, seed=args.seed)
    report.paths = sorted(paths, key=lambda path: PATH_ORDER.index(path.key))
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentic-bench-") as workdir:
        _configure_django(Path(workdir))
        from benchmarks import database
        from benchmarks.report import format_table

        name = database.check_name(args.database or database.DEFAULT_NAME)
        clock = time.perf_counter()

        def progress(message: str) -> None:
            print(f"[bench {time.perf_counter() - clock:7.1f} s] {message}", file=sys.stderr)

        try:
            report = measure(args, name, progress)
        finally:
            if not args.keep_database:
                database.drop_database(name)
    table = format_table(report)
    document = json.dumps(report.as_json(), indent=2)
    if args.json == "-":
        print(table, file=sys.stderr)
        print(document)
    else:
        print(table)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(document + "\n")
    if args.plot:
        from benchmarks import plots

        for path in plots.write_all(report, args.plot):
            progress(f"wrote {path}")
