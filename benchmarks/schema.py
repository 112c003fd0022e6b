"""Schema paths: `migrate` from an empty database, and building the HNSW index.

`migrate` is compared with the same DDL run by psql: `sqlmigrate` of every migration in
the order migrate applies them, in one file. The file leaves out what is not DDL
(RunPython, the django_migrations rows, post_migrate's content types, permissions and
grants), which is part of what migrate costs. Both databases must end with the same
schema objects, or the comparison stops. The first migrate builds the benchmark's own
database; the later ones go into a scratch database.

The HNSW index is built the way the migration builds it (Django's schema editor, under
the server's own maintenance_work_mem), against the same CREATE INDEX with
maintenance_work_mem at 2GB, where a 100k x 1536 graph fits in memory.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
from pathlib import Path

from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from pgvector.django import HnswIndex

from benchmarks import database
from benchmarks.report import PathResult
from benchmarks.timing import Outcome, Stats, interleave
from core.db.connections import owner_connection

REFERENCE_MAINTENANCE_WORK_MEM = "2GB"
# Relations, constraints, triggers and policies of the public schema, but the migration
# history table, which migrate makes and sqlmigrate's output does not contain.
SCHEMA_OBJECTS = """
SELECT (SELECT count(*) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE 'django_migrations%%')
     + (SELECT count(*) FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
         WHERE r.relnamespace = 'public'::regnamespace AND r.relname <> 'django_migrations')
     + (SELECT count(*) FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
         WHERE r.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal)
     + (SELECT count(*) FROM pg_policy)
"""


def schema_objects(dbname: str) -> int:
    with database.connect(database.owner_kwargs(dbname), vectors=False) as conn:
        return conn.execute(SCHEMA_OBJECTS).fetchone()[0]


def migration_sql() -> str:
    """sqlmigrate of every migration, in the order migrate applies them from nothing.

    Run against an empty database, which it migrates one migration at a time: each
    migration's SQL is read where the database stands just before it, as migrate would
    run it. (Some operations read the catalog: core.db.partitions rebuilds a table from
    its live definition, so on a fully migrated database its SQL would already hold
    what later migrations add to that table, the functions of their triggers included.)
    """
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes(), clean_start=True)
    parts = []
    for migration, _backwards in plan:
        out = io.StringIO()
        call_command(
            "sqlmigrate",
            migration.app_label,
            migration.name,
            stdout=out,
            stderr=io.StringIO(),
            no_color=True,
        )
        parts.append(out.getvalue())
        call_command("migrate", migration.app_label, migration.name, verbosity=0)
    return "\n".join(parts)


def measure_migrate(bench_db: str, runs: int, progress) -> PathResult:
    """Interleaved `migrate` and psql runs; the first migrate makes `bench_db` itself.

    Creating each empty database, writing the SQL file and counting schema objects are
    left out of the times.
    """
    scratch_db, psql_db, sql_db = f"{bench_db}_migrate", f"{bench_db}_psql", f"{bench_db}_sql"
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as workdir:
        sql_file = Path(workdir) / "migrations.sql"

        def project() -> Outcome:
            target = scratch_db if made else bench_db
            started = time.perf_counter()
            database.create_database(target)
            with database.django_database(target):
                prepared = time.perf_counter() - started
                call_command("migrate", interactive=False, verbosity=0)
            made.append(target)
            started = time.perf_counter()
            progress(f"migrate into {target} done")
            rows = schema_objects(target)
            return Outcome(rows=rows, excluded=prepared + time.perf_counter() - started)

        def reference() -> Outcome:
            started = time.perf_counter()
            if not sql_file.exists():
                database.create_database(sql_db)
                with database.django_database(sql_db):
                    sql_file.write_text(migration_sql())
                database.drop_database(sql_db)
            database.create_database(psql_db)
            prepared = time.perf_counter() - started
            subprocess.run(  # noqa: S603 - our own psql on our own file
                database.psql(psql_db, sql_file),
                env=database.psql_env(),
                check=True,
                capture_output=True,
            )
            started = time.perf_counter()
            progress("psql done")
            rows = schema_objects(psql_db)
            return Outcome(rows=rows, excluded=prepared + time.perf_counter() - started)

        try:
            project_times, reference_times = interleave(
                "migrate", project, reference, rounds=runs, warmup=0
            )
        finally:
            for name in (scratch_db, psql_db, sql_db):
                database.drop_database(name)
    return PathResult(
        key="migrate",
        group="schema",
        title="migrate from an empty database",
        reference_title="same DDL through psql",
        unit="s",
        project=Stats.of(project_times),
        reference=Stats.of(reference_times),
    )


def _hnsw_index() -> HnswIndex:
    from documents.models import Chunk

    return next(index for index in Chunk._meta.indexes if isinstance(index, HnswIndex))


def drop_hnsw_index(owner_conn) -> None:
    owner_conn.execute(f'DROP INDEX IF EXISTS "{_hnsw_index().name}"')


def _valid_indexes(owner_conn, name: str) -> int:
    return owner_conn.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s AND i.indisvalid",
        [name],
    ).fetchone()[0]


def measure_hnsw_build(runs: int, progress) -> PathResult:
    """Interleaved builds of chunks_embedding_hnsw_idx; the last one stays.

    Each build drops the index first (not timed). PostgreSQL's notices (pgvector's
    "hnsw graph no longer fits into maintenance_work_mem") are kept in the notes.
    """
    from documents.models import Chunk

    index = _hnsw_index()
    notices: dict[str, list[str]] = {"project": [], "reference": []}
    with (
        owner_connection(),
        database.connect(
            database.owner_kwargs(connection.settings_dict["NAME"]), vectors=False
        ) as owner,
    ):
        with connection.schema_editor(collect_sql=True) as editor:
            create_sql = str(index.create_sql(Chunk, editor))
        connection.ensure_connection()
        connection.connection.add_notice_handler(
            lambda diag: notices["project"].append(diag.message_primary)
        )
        owner.add_notice_handler(lambda diag: notices["reference"].append(diag.message_primary))
        server_memory = owner.execute("SHOW maintenance_work_mem").fetchone()[0]

        def dropped() -> float:
            started = time.perf_counter()
            before = len(notices["reference"])
            drop_hnsw_index(owner)
            del notices["reference"][before:]  # "does not exist, skipping": not the build's
            return time.perf_counter() - started

        def project() -> Outcome:
            excluded = dropped()
            with connection.schema_editor() as editor:
                editor.add_index(Chunk, index)
            progress("HNSW build at the server's maintenance_work_mem done")
            return Outcome(rows=_valid_indexes(owner, index.name), excluded=excluded)

        def reference() -> Outcome:
            excluded = dropped()
            with owner.transaction():
                owner.execute(
                    f"SET LOCAL maintenance_work_mem = '{REFERENCE_MAINTENANCE_WORK_MEM}'"
                )
                owner.execute(create_sql)
            progress(f"HNSW build at maintenance_work_mem {REFERENCE_MAINTENANCE_WORK_MEM} done")
            return Outcome(rows=_valid_indexes(owner, index.name), excluded=excluded)

        project_times, reference_times = interleave(
            "HNSW build", project, reference, rounds=runs, warmup=0
        )
        with owner.transaction():
            # Row-level security applies to the owner too: count through its bypass.
            owner.execute("SELECT set_config('app.rls_bypass', 'on', true)")
            chunks = owner.execute("SELECT count(*) FROM chunks").fetchone()[0]
    return PathResult(
        key="hnsw_build",
        group="schema",
        title=f"HNSW build, {chunks:,} x 1536, server default {server_memory}",
        reference_title=f"maintenance_work_mem {REFERENCE_MAINTENANCE_WORK_MEM}",
        unit="s",
        project=Stats.of(project_times),
        reference=Stats.of(reference_times),
        notes={
            "chunks": chunks,
            "server_maintenance_work_mem": server_memory,
            "notices": {side: sorted(set(found)) for side, found in notices.items()},
        },
    )
