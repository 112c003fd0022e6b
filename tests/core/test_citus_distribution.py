"""`citus_distribute` on a real Citus cluster, and the isolation tests on what it made.

The cluster is tests/citus_cluster.py's: a coordinator and two workers built from the
vendored Citus source. What the catalog says before (core.ops.distribution) must be what
the cluster accepts: the plan runs, in one transaction, and afterwards every shard has
its table's row-level security, policies, triggers and indexes.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from core.ops import embedded
from core.ops.distribution import (
    COORDINATOR_TABLES,
    REFERENCE_TABLES,
    distribution_problems,
    read_tables,
)
from documents.models import SearchQuery
from documents.search import chunk_search
from documents.services import document_ingest
from tenancy.context import system_context
from tenancy.models import Tenant
from tests import citus_cluster as citus
from tests.factories import tenant_id_on_worker

pytestmark = pytest.mark.slow

# Shard tables are hidden from the catalog of a worker's ordinary sessions.
SHOW_SHARDS = "SET citus.show_shards_for_app_name_prefixes = '*'"


@pytest.fixture
def fresh_database(citus_cluster, django_db_blocker):
    """A database migrated on every node of the cluster, not distributed; Django on it."""
    name = f"agentic_fresh_{uuid.uuid4().hex[:8]}"
    citus_cluster.create_database(name)
    try:
        with django_db_blocker.unblock(), citus.django_on(citus_cluster, name):
            call_command("migrate", verbosity=0)
            yield name
    finally:
        citus_cluster.drop_database(name)


def _managed(cursor) -> dict[str, str]:
    """Public tables Citus manages, by kind ('h' distributed, 'n' reference)."""
    cursor.execute(
        "SELECT logicalrelid::regclass::text, partmethod FROM pg_dist_partition p "
        "JOIN pg_class c ON c.oid = p.logicalrelid WHERE NOT c.relispartition"
    )
    return dict(cursor.fetchall())


def test_a_dry_run_proves_the_plan_and_changes_nothing_then_it_distributes_once(
    fresh_database, capsys
):
    call_command("citus_distribute", "--dry-run")
    dry = capsys.readouterr().out
    assert "would distribute" in dry and "Dry run: nothing was changed" in dry
    with connection.cursor() as cursor:
        assert _managed(cursor) == {}

    call_command("citus_distribute")
    out = capsys.readouterr().out
    print(out)  # the statements with their timings, for the closing note
    with connection.cursor() as cursor:
        tables = read_tables(cursor)
        managed = _managed(cursor)
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    assert {name for name, kind in managed.items() if kind == "h"} == tenant
    assert {name for name, kind in managed.items() if kind == "n"} == set(REFERENCE_TABLES)
    assert not set(COORDINATOR_TABLES) & set(managed)

    with pytest.raises(CommandError, match="already distributed.*Nothing was changed"):
        call_command("citus_distribute")


def test_every_tenant_table_is_co_located_by_tenant_id(citus_cluster, citus_database):
    with citus_cluster.coordinator.connect(citus_database) as conn:
        rows = conn.execute(
            "SELECT logicalrelid::regclass::text, colocationid, "
            "column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition "
            "WHERE partmethod = 'h'"
        ).fetchall()
    assert {column for _, _, column in rows} == {"tenant_id"}
    assert len({colocation for _, colocation, _ in rows}) == 1


def test_every_shard_keeps_its_tables_security_triggers_keys_and_indexes(
    citus_cluster, citus_database
):
    """On each worker, every shard of a tenant table forces row-level security and
    carries its table's policies, triggers, foreign keys and indexes."""
    _assert_every_shard_keeps_its_tables_objects(citus_cluster, citus_database)


def _assert_every_shard_keeps_its_tables_objects(citus_cluster, citus_database: str) -> None:
    with citus_cluster.coordinator.connect(citus_database) as conn:
        expected = {
            name: counts
            for name, *counts in conn.execute(_OBJECT_COUNTS.format(where="c.oid = p.logicalrelid"))
        }
    assert expected["chunks"][3] >= 5, "chunks has its HNSW, GIN and key indexes"
    for worker in citus_cluster.workers:
        with worker.connect(citus_database) as conn:
            conn.execute(SHOW_SHARDS)
            shards = conn.execute(
                "SELECT s.logicalrelid::regclass::text, c.relname, c.relrowsecurity, "
                "c.relforcerowsecurity, "
                + _COUNTS
                + " FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid) "
                "JOIN pg_dist_node n USING (groupid) "
                "JOIN pg_class c ON c.relname = s.logicalrelid::regclass::text || '_' || s.shardid "
                "JOIN pg_dist_partition p ON p.logicalrelid = s.logicalrelid "
                "WHERE p.partmethod = 'h' AND n.nodeport = %s",
                [worker.port],
            ).fetchall()
        assert shards, f"worker {worker.port} holds no shard"
        for table, shard, enabled, forced, *counts in shards:
            assert (enabled, forced) == (True, True), shard
            assert counts == expected[table], (shard, counts, expected[table])


# Policies, triggers of ours, foreign keys and indexes of a table `c`.
_COUNTS = (
    "(SELECT count(*) FROM pg_policy WHERE polrelid = c.oid), "
    "(SELECT count(*) FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal), "
    "(SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'f'), "
    "(SELECT count(*) FROM pg_index WHERE indrelid = c.oid)"
)
_OBJECT_COUNTS = (
    "SELECT p.logicalrelid::regclass::text, "
    + _COUNTS
    + " FROM pg_dist_partition p JOIN pg_class c ON {where} WHERE p.partmethod = 'h'"
)


def test_the_isolation_tests_pass_on_a_distributed_database(
    citus_cluster, django_db_blocker, tmp_path
):
    """tests/tenancy/test_rls.py, every tenant table from the catalog, and
    tests/tenancy/test_access_rls.py, the restricted rows below the tenant, run by a
    pytest of their own on a database made on every node and distributed, with tenants
    A and B on different workers (tests/factories.tenant_id_on_worker)."""
    name = f"agentic_isolation_{uuid.uuid4().hex[:8]}"
    citus_cluster.create_database(name)
    try:
        with django_db_blocker.unblock(), citus.django_on(citus_cluster, name):
            call_command("migrate", verbosity=0)
            call_command("citus_distribute", verbosity=0)
        port = citus_cluster.coordinator.port
        url = f"postgres://{{}}@{citus.HOST}:{port}/{name}"
        env = {
            **os.environ,
            "DATABASE_URL": url.format(settings.DATABASE_RUNTIME_ROLE),
            "DATABASE_OWNER_URL": url.format(embedded.OWNER_ROLE),
            "TESTS_ON_DATABASE_AS_IS": "1",
        }
        completed = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "tests/tenancy/test_rls.py"),
                *("tests/tenancy/test_access_rls.py", "-q"),
                *("-p", "no:cacheprovider", "--basetemp", str(tmp_path / "pytest")),
                # A plan test: through the coordinator EXPLAIN shows the worker's plan
                # only where Citus can re-send its parameters; the same kNN's HNSW plan
                # on the tenant's shard is checked in test_citus_services.py.
                "--deselect",
                "tests/tenancy/test_rls.py::test_chunk_knn_uses_the_hnsw_index_under_rls",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        citus_cluster.drop_database(name)
    summary = completed.stdout.strip().splitlines()[-1]
    print(summary)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary


# Each shard of chunks on a worker: the embedding's storage and the table's options.
_CHUNK_SHARDS_STORAGE = (
    "SELECT c.relname, a.attstorage, c.reloptions::text FROM pg_class c "
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' "
    "WHERE c.relname ~ '^chunks_[0-9]+$' ORDER BY 1"
)


def _chunk_shards_storage(citus_cluster, database: str) -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for worker in citus_cluster.workers:
        with worker.connect(database) as conn:
            conn.execute(SHOW_SHARDS)
            shards = conn.execute(_CHUNK_SHARDS_STORAGE).fetchall()
        assert shards, f"worker {worker.port} holds no shard of chunks"
        found |= {(storage, options) for _, storage, options in shards}
    return found


def test_chunks_keep_their_vectors_in_their_rows_on_every_shard_even_when_migrated_after(
    citus_cluster, fresh_database
):
    """documents.0028 (KeepColumnInHeap) on a cluster: shards made after it get the
    column's storage and the table's toast_tuple_target from Citus; on chunks already
    distributed, where Citus refuses ALTER COLUMN ... SET STORAGE, the operation sets
    both on every shard, backwards and forwards."""
    in_rows = {("m", "{toast_tuple_target=8160}")}
    call_command("citus_distribute", verbosity=0)
    assert _chunk_shards_storage(citus_cluster, fresh_database) == in_rows

    call_command("migrate", "documents", "0027", verbosity=0)
    assert _chunk_shards_storage(citus_cluster, fresh_database) == {("e", None)}
    call_command("migrate", "documents", verbosity=0)
    assert _chunk_shards_storage(citus_cluster, fresh_database) == in_rows
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attstorage, c.reloptions::text FROM pg_class c JOIN pg_attribute a"
            " ON a.attrelid = c.oid AND a.attname = 'embedding' WHERE c.oid = 'chunks'::regclass"
        )
        assert cursor.fetchone() == ("m", "{toast_tuple_target=8160}")


# The release before issue 22, where operators' clusters were set up: documents' last
# migration 0017_validate_versions_redaction, agents' 0020; no worker queue yet.
PREVIOUS_RELEASE = "04bdc1b"
PREVIOUS_RELEASE_HEADS = {
    "documents": "0017_validate_versions_redaction",
    "agents": "0020_proposals_review_note_erasable",
}


def _previous_release(folder) -> None:
    """The previous release's tree in `folder`, from the repository's history."""
    archive = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE],
        cwd=settings.BASE_DIR,
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"the upgrade test runs the release {PREVIOUS_RELEASE} from the repository's "
            f"history, which this clone lacks (git fetch --unshallow): "
            f"{archive.stderr.decode(errors='replace')}",
            pytrace=False,
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tree:
        tree.extractall(folder, filter="tar")


def _assert_distributed_as_citus_distribute_makes_it() -> set[str]:
    """Every tenant table distributed in one co-location group, the reference tables
    replicated, the coordinator tables left alone; the tenant tables."""
    with connection.cursor() as cursor:
        tables = read_tables(cursor)
        managed = _managed(cursor)
        cursor.execute(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h'"
        )
        colocation_groups = cursor.fetchone()[0]
    assert distribution_problems(tables) == []
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    assert {name for name, kind in managed.items() if kind == "h"} == tenant
    assert {name for name, kind in managed.items() if kind == "n"} == set(REFERENCE_TABLES)
    assert not set(COORDINATOR_TABLES) & set(managed)
    assert colocation_groups == 1
    return tenant


def _row_counts_but_the_audit_trail() -> dict[str, int]:
    """The rows of every tenant table, and of tenants and users; not of the audit trail,
    which records what the migrations change."""
    with system_context("test: the rows an upgrade keeps"), connection.cursor() as cursor:
        names = [
            name
            for name, table in read_tables(cursor).items()
            if (table.tenant_column is not None or name in ("tenants", "users"))
            and not name.startswith("audit_")
        ]
        counts = {}
        for name in names:
            cursor.execute(f'SELECT count(*) FROM "{name}"')
            counts[name] = cursor.fetchone()[0]
    return counts


def test_a_cluster_distributed_at_the_previous_release_upgrades_by_migrate(
    citus_cluster, django_db_blocker, tmp_path
):
    """docs/operations.md, "Upgrading a cluster": the previous release's own code
    migrates, distributes and seeds a database (as an operator did then); this code's
    `migrate` brings it to the head, every row kept, and every tenant table it added
    is distributed and co-located with the others, also after going back to the
    previous release's documents and forward again; the shards have their tables'
    security, triggers, keys and indexes; citus_distribute finds nothing to do; an
    ingestion and a search (and its log, a partitioned table made after the
    distribution) work."""
    old = tmp_path / "previous-release"
    _previous_release(old)
    name = f"agentic_upgrade_{uuid.uuid4().hex[:8]}"
    citus_cluster.create_database(name)
    try:
        url = f"postgres://{{}}@{citus.HOST}:{citus_cluster.coordinator.port}/{name}"
        env = {
            **os.environ,
            "DATABASE_URL": url.format(settings.DATABASE_RUNTIME_ROLE),
            "DATABASE_OWNER_URL": url.format(embedded.OWNER_ROLE),
        }
        for command in ("migrate", "citus_distribute", "seed"):
            done = subprocess.run(
                [sys.executable, "manage.py", command, "--verbosity", "0"],
                cwd=old,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])

        with django_db_blocker.unblock(), citus.django_on(citus_cluster, name):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT app, max(name) FROM django_migrations "
                    "WHERE app IN ('documents', 'agents') GROUP BY app"
                )
                assert dict(cursor.fetchall()) == PREVIOUS_RELEASE_HEADS
                distributed_before = {
                    table for table, kind in _managed(cursor).items() if kind == "h"
                }
            rows_before = _row_counts_but_the_audit_trail()
            assert rows_before["chunks"] and rows_before["agent_executions"]

            call_command("migrate", verbosity=0)
            assert _row_counts_but_the_audit_trail().items() >= rows_before.items()
            added = _assert_distributed_as_citus_distribute_makes_it() - distributed_before
            assert added >= {"search_queries", "stale_sources", "chunk_embeddings"}
            with pytest.raises(CommandError, match="already distributed.*nothing to do"):
                call_command("citus_distribute")
            # A tenant table made behind the schema editor's back stays on the
            # coordinator, and the check names it.
            with citus_cluster.coordinator.connect(name) as conn:
                conn.execute("CREATE TABLE stray (id uuid PRIMARY KEY, tenant_id uuid NOT NULL)")
            try:
                with pytest.raises(
                    CommandError,
                    match="not as citus_distribute makes it:\n  stray: a tenant table, not "
                    "managed by Citus, not distributed by tenant_id",
                ):
                    call_command("citus_distribute")
            finally:
                with citus_cluster.coordinator.connect(name) as conn:
                    conn.execute("DROP TABLE stray")
            # Back to the previous release's documents and forward again: the tables
            # dropped and made again (search_queries rebuilt as partitions both ways).
            call_command("migrate", "documents", PREVIOUS_RELEASE_HEADS["documents"], verbosity=0)
            call_command("migrate", verbosity=0)
            _assert_distributed_as_citus_distribute_makes_it()

            tenant_id = tenant_id_on_worker(0)
            upgraded = Tenant.objects.create(
                id=tenant_id, name="upgraded", slug=f"upgraded-{tenant_id.hex[-12:]}"
            )
            document = document_ingest(
                tenant=upgraded,
                title="Handbook",
                text="Refunds are paid within ten days.\n\nInvoices go out monthly.",
                chunk_size=20,
            )
            [found] = chunk_search(tenant=upgraded, query="refunds", k=1, mode="hybrid")
            assert found.document_id == document.pk
            with system_context("test: the search was logged"):
                assert SearchQuery.objects.filter(tenant=upgraded).count() == 1
        _assert_every_shard_keeps_its_tables_objects(citus_cluster, name)
    finally:
        citus_cluster.drop_database(name)


def test_the_error_search_indexes_build_per_partition_on_a_distributed_table(
    citus_cluster, citus_database, django_db_blocker
):
    """agents.0023 on a database already distributed (an upgraded cluster): undone and
    done again, core.db.operations.AddIndexToPartitionsConcurrently declares each index
    on the distributed parent, builds it concurrently on every distributed partition and
    attaches it, and Citus carries all three to the shards: the indexes are valid on the
    coordinator and every shard of every partition has its table's indexes."""
    names = ("agent_exec_error_type_trgm", "agent_exec_error_msg_trgm")
    with django_db_blocker.unblock(), citus.django_on(citus_cluster, citus_database):
        call_command("migrate", "agents", "0022", verbosity=0)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", [list(names)]
                )
                assert cursor.fetchone() == (0,)
        finally:
            call_command("migrate", "agents", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, x.indisvalid, (SELECT count(*) FROM pg_inherits i "
                "WHERE i.inhparent = c.oid) FROM pg_class c JOIN pg_index x "
                "ON x.indexrelid = c.oid WHERE c.relname = ANY(%s) ORDER BY 1",
                [list(names)],
            )
            indexes = cursor.fetchall()
            cursor.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'agent_executions'::regclass"
            )
            (partitions,) = cursor.fetchone()
    assert partitions >= 2
    assert indexes == [(name, True, partitions) for name in sorted(names)]
    _assert_every_shard_keeps_its_tables_objects(citus_cluster, citus_database)
