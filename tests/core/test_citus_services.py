"""The services on a Citus cluster, through its coordinator (issue 19, points 4 and 5).

Each test takes `on_citus` (tests/conftest.py): Django's default alias on a
migrated and distributed database of a coordinator with two workers, as the runtime
role, the owner configured for system_context. What they prove is what the plain
PostgreSQL tests cannot: that the tenant context reaches the workers' row-level
security, and that every service's statements are ones Citus routes to one tenant's
shard (a row lock or an UPDATE filtered on tenant_id, no volatile function in an
UPDATE, no COPY under row-level security, joins that equate the tenants).

Rows are committed (each service call is its own transaction) and every test makes
tenants of its own, so the tests share the database without seeing each other.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from agents.models import AgentExecution, ExecutionError, ExecutionSource
from agents.services import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    execution_create,
    execution_fail,
    execution_finish,
    execution_record_sources,
    execution_retry,
    execution_start,
)
from documents.embedding import Embedder, get_embedder, hashing_embedder
from documents.models import Chunk, Document, DocumentVersion, EmbeddingCacheEntry, Project
from documents.search import chunk_search
from documents.services import (
    document_ingest,
    document_version_create,
    documents_delete_by_filter,
    project_create,
    project_soft_delete,
    projects_purge_deleted,
)
from exports.models import Export
from exports.services import export_create, exports_purge_expired
from tenancy.context import current_tenant_ids, request_scope, system_context, tenant_context
from tenancy.models import Membership, Tenant, User
from tenancy.selectors import tenant_access_for_user
from tests.factories import make_member, tenant_id_on_worker
from tests.locks import run_together
from tests.pgbouncer import routed_through, running_pgbouncer

pytestmark = [pytest.mark.slow, pytest.mark.system_program]

WRITERS = 8
TEXT = (
    "Retries back off exponentially and give up after five attempts.\n\n"
    "Storage keeps every upload for ninety days, then moves it to the archive.\n\n"
    "The billing handbook explains invoices, refunds and the monthly statement."
)


def _node_of(tenant_id: uuid.UUID) -> int:
    """The port of the node holding the tenant's shard of projects."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)"
            " WHERE p.shardid = get_shard_id_for_distribution_column('projects', %s)",
            [tenant_id],
        )
        return cursor.fetchone()[0]


def _tenant(label: str, worker: int) -> Tenant:
    """A new tenant whose rows live on the cluster's `worker`-th worker."""
    tenant_id = tenant_id_on_worker(worker)
    slug = f"{label}-{tenant_id.hex[-12:]}"
    return Tenant.objects.create(id=tenant_id, name=slug, slug=slug)


@pytest.fixture
def two_tenants(on_citus) -> tuple[Tenant, Tenant]:
    """Two tenants placed on different workers."""
    return _tenant("citus-a", 0), _tenant("citus-b", 1)


def _assert_the_context_scopes_the_rows(first: Tenant, second: Tenant) -> None:
    mine = project_create(tenant=first, name="mine")
    theirs = project_create(tenant=second, name="theirs")

    with tenant_context(first):
        assert current_tenant_ids() == [first.pk]
        assert list(Project.objects.values_list("pk", flat=True)) == [mine.pk]
        # Nested: narrowed to the other tenant, then the outer scope is restored.
        with tenant_context(second):
            assert list(Project.objects.values_list("pk", flat=True)) == [theirs.pk]
        assert list(Project.objects.values_list("pk", flat=True)) == [mine.pk]
    with tenant_context(first, second):
        assert set(Project.objects.values_list("pk", flat=True)) == {mine.pk, theirs.pk}
    # Outside any context (the settings ended with their transaction, on every node),
    # row-level security on the workers sees no tenant.
    assert not Project.objects.filter(pk__in=[mine.pk, theirs.pk]).exists()
    with system_context("test: the bypass reaches the workers"):
        assert Project.objects.filter(pk__in=[mine.pk, theirs.pk]).count() == 2


def test_the_tenant_context_reaches_the_workers(two_tenants):
    first, second = two_tenants
    assert _node_of(first.pk) != _node_of(second.pk)
    _assert_the_context_scopes_the_rows(first, second)


def test_the_tenant_context_holds_behind_pgbouncer(two_tenants):
    """Transaction pooling: each transaction may run on another server connection, and
    the next client's transaction on this one must not inherit the settings."""
    direct = connection.settings_dict
    with (
        running_pgbouncer(
            host=direct["HOST"], port=direct["PORT"], users={direct["USER"]: ""}
        ) as bouncer,
        routed_through(connection, bouncer),
    ):
        _assert_the_context_scopes_the_rows(*two_tenants)


def test_a_request_scope_reads_the_users_memberships_on_the_workers(two_tenants):
    first, second = two_tenants
    user = make_member(first, f"member-{first.pk.hex[-12:]}@example.com")
    with tenant_context(second):
        Membership.objects.create(tenant=second, user=user, role="viewer")
    with request_scope(user, tenant_access_for_user) as ids:
        assert ids == sorted([first.pk, second.pk])
        assert current_tenant_ids() == ids


def test_a_version_write_under_concurrent_writers(two_tenants):
    tenant, _ = two_tenants
    project = project_create(tenant=tenant, name="versions")

    def write(n: int):
        return lambda: document_version_create(
            tenant=tenant, project=project, document_type="specification", content=f"draft {n}"
        )

    assert run_together([write(n) for n in range(WRITERS)]) == []
    with tenant_context(tenant):
        versions = list(
            DocumentVersion.objects.filter(project=project)
            .order_by("version")
            .values_list("version", "prev_sha256", "content_sha256")
        )
    assert [version for version, _, _ in versions] == list(range(1, WRITERS + 1))
    assert all(
        later[1] == earlier[2] for earlier, later in zip(versions, versions[1:], strict=False)
    )


def test_an_ingestion_and_chunk_search_in_every_mode(two_tenants):
    tenant, other = two_tenants
    document = document_ingest(tenant=tenant, title="Handbook", text=TEXT, chunk_size=20)
    document_ingest(tenant=other, title="Other handbook", text=TEXT, chunk_size=20)
    assert document.status == "ready"
    with tenant_context(tenant):
        chunks = Chunk.objects.filter(document=document).count()
    assert chunks > 1

    for mode in ("semantic", "fulltext", "hybrid"):
        results = chunk_search(tenant=tenant, query="billing refunds", k=5, mode=mode)
        assert results, mode
        assert {result.document_id for result in results} == {document.pk}, mode


def test_a_worker_ingests_an_upload_on_the_cluster(two_tenants, file_storages):
    """The queue's tables stay on the coordinator, beside the distributed ones: the upload
    and its job commit in one transaction, and a real worker (procrastinate's, in this
    process, on its own connection to the coordinator) runs the job in the tenant's
    context, its stages and chunks written on the tenant's shard."""
    from procrastinate.contrib.django import app

    from documents.models import Document
    from documents.services import INGEST_TASK, document_create

    tenant, _ = two_tenants
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT logicalrelid::text FROM pg_dist_partition "
            "WHERE logicalrelid::text LIKE 'procrastinate%%'"
        )
        assert cursor.fetchall() == []
    document = document_create(tenant=tenant, title="Queued handbook", text=TEXT)
    with app.replace_connector(app.connector.get_worker_connector()):
        app.run_worker(
            queues=["default"], wait=False, install_signal_handlers=False, listen_notify=False
        )
    with tenant_context(tenant):
        document.refresh_from_db()
        chunks = Chunk.objects.filter(document=document).count()
    assert (document.status, document.attempts, chunks) == (Document.Status.READY, 1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status FROM procrastinate_jobs "
            "WHERE task_name = %s AND args->>'document_id' = %s",
            [INGEST_TASK, str(document.pk)],
        )
        assert cursor.fetchall() == [("succeeded",)]


def test_a_filtered_chunk_search_and_a_deletion_by_filter(two_tenants, file_storages):
    """Metadata filters (documents/filters.py) on the cluster: the document's through a
    join that Citus routes to the tenant's shard (the tenants equated), the chunk's on
    the shard's rows; another tenant's matching document stays out, then goes by filter
    in its own tenant only."""
    tenant, other = two_tenants
    wanted = document_ingest(
        tenant=tenant, title="Billing", text=TEXT, chunk_size=20, metadata={"team": "billing"}
    )
    # The same text on purpose (only the filter tells them apart): kept as a duplicate.
    document_ingest(
        tenant=tenant,
        title="Ops",
        text=TEXT,
        chunk_size=20,
        metadata={"team": "ops", "v": 2},
        allow_duplicate=True,
    )
    document_ingest(
        tenant=other, title="Theirs", text=TEXT, chunk_size=20, metadata={"team": "billing"}
    )
    filters = {"document.team": {"in": ["billing"]}, "chunk.start": {"gte": 0}}
    for mode in ("semantic", "fulltext", "hybrid"):
        results = chunk_search(
            tenant=tenant, query="billing refunds", k=5, mode=mode, filters=filters
        )
        assert results, mode
        assert {result.document_id for result in results} == {wanted.pk}, mode
    first_chunks = chunk_search(
        tenant=tenant, query="retries", k=5, mode="semantic", filters={"chunk.start": 0}
    )
    assert len(first_chunks) == 2  # the first chunk of each of the tenant's documents
    deleted = documents_delete_by_filter(tenant=tenant, filters={"document.v": {"exists": True}})
    assert [title for _id, title, _chunks in deleted.documents] == ["Ops"]
    with tenant_context(tenant, other):
        assert set(Document.objects.values_list("title", flat=True)) == {"Billing", "Theirs"}


def test_duplicate_uploads_and_the_embedding_cache_on_the_cluster(two_tenants):
    """The unique SHA-256 index refuses a duplicate on the tenant's shard, and the
    embedding cache's read and ON CONFLICT write are routed there too: per tenant."""
    tenant, other = two_tenants
    calls: list[int] = []

    def counted(texts):
        calls.append(len(texts))
        return hashing_embedder(texts)

    counting = Embedder(function=counted, model="counting", dimension=1536)
    first = document_ingest(
        tenant=tenant, title="Handbook", text=TEXT, chunk_size=20, embedder=counting
    )
    embedded = sum(calls)
    assert first.status == "ready" and embedded > 1
    with pytest.raises(ValidationError) as refused:
        document_ingest(tenant=tenant, title="Again", text=TEXT, chunk_size=20, embedder=counting)
    assert refused.value.error_dict["text"][0].params["document_id"] == str(first.pk)
    again = document_ingest(
        tenant=tenant,
        title="Again",
        text=TEXT,
        chunk_size=20,
        embedder=counting,
        allow_duplicate=True,
    )
    assert again.status == "ready" and sum(calls) == embedded, "all from the cache"
    document_ingest(tenant=other, title="Theirs", text=TEXT, chunk_size=20, embedder=counting)
    assert sum(calls) == 2 * embedded, "the other tenant embeds its own"
    for owner in (tenant, other):
        with tenant_context(owner):
            assert EmbeddingCacheEntry.objects.filter(tenant=owner).count() == embedded


def test_the_search_log_on_the_cluster(two_tenants, file_storages):
    """search_queries is distributed by tenant_id with the other tenant tables; each
    search writes its row on the tenant's shard, a chunk's hits are counted there, the
    other tenant sees none, and retention removes one tenant's old searches only."""
    from core.db import partitions
    from core.hashing import sha256_hex
    from core.ids import uuid7_at
    from documents.models import SearchQuery
    from documents.selectors import chunk_hits
    from retention.services import retention_enforce, retention_policy_set

    tenant, other = two_tenants
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.partmethod, p.colocationid = c.colocationid FROM pg_dist_partition p, "
            "pg_dist_partition c WHERE p.logicalrelid = 'search_queries'::regclass "
            "AND c.logicalrelid = 'chunks'::regclass"
        )
        assert cursor.fetchone() == ("h", True)
    document_ingest(tenant=tenant, title="Handbook", text=TEXT, chunk_size=20)
    document_ingest(tenant=other, title="Other handbook", text=TEXT, chunk_size=20)
    member = make_member(tenant, f"searcher-{uuid.uuid4().hex[:8]}@example.com", "viewer")
    for mode in ("semantic", "fulltext", "hybrid"):
        [best] = chunk_search(tenant=tenant, query="billing refunds", k=1, mode=mode, user=member)
    # The member reads their own searches, which is all of them here.
    with tenant_context(tenant, user=member):
        logged = list(SearchQuery.objects.order_by("id"))
    assert [(e.mode, e.user_id, len(e.chunk_ids)) for e in logged] == [
        (mode, member.pk, 1) for mode in ("semantic", "fulltext", "hybrid")
    ]
    with tenant_context(tenant, user=member):
        assert chunk_hits(tenant=tenant, chunk=best.chunk_id).count >= 1
    with tenant_context(other):
        assert not SearchQuery.objects.exists()

    old = timezone.now() - timedelta(days=60)
    with system_context("test: an old month of the log"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, "search_queries", old, timezone.now())
    for each in (tenant, other):
        with system_context("test: an old search"):
            SearchQuery.objects.create(
                id=uuid7_at(old),
                tenant=each,
                mode="fulltext",
                query="old",
                query_sha256=sha256_hex("old"),
                k=1,
                latency_ms=1.0,
            )
    owner = make_member(tenant, f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner")
    retention_policy_set(tenant=tenant, by=owner, search_queries_days=30)
    removed = retention_enforce().removed
    assert removed[tenant.pk]["search_queries"] == 1
    assert removed[other.pk].get("search_queries", 0) == 0
    with system_context("test: what retention left"):
        assert sorted(
            SearchQuery.objects.filter(query="old", tenant__in=[tenant, other]).values_list(
                "tenant_id", flat=True
            )
        ) == [other.pk]


def test_an_export(two_tenants, file_storages):
    tenant, _ = two_tenants
    project = project_create(tenant=tenant, name="exported")
    document_version_create(
        tenant=tenant, project=project, document_type="specification", content="# PRD"
    )
    export = export_create(tenant=tenant, project=project)
    assert (export.status, export.error_message) == (Export.Status.COMPLETED, "")


def test_a_proposal_apply(two_tenants):
    tenant, _ = two_tenants
    project = project_create(tenant=tenant, name="proposed")
    base = document_version_create(
        tenant=tenant, project=project, document_type="specification", content="# PRD\n\nv1"
    )
    proposal = change_proposal_propose(tenant=tenant, base_version=base, content="# PRD\n\nv2")
    change_proposal_approve(tenant=tenant, proposal=proposal)
    applied = change_proposal_apply(tenant=tenant, proposal=proposal)
    assert applied.status == "applied"
    with tenant_context(tenant):
        assert applied.applied_version.version == 2


def test_a_run_with_errors_and_sources(two_tenants):
    tenant, _ = two_tenants
    project = project_create(tenant=tenant, name="run")
    document_ingest(tenant=tenant, title="Handbook", text=TEXT, chunk_size=20)
    execution = execution_create(tenant=tenant, project=project, agent_type="retriever")
    execution_start(tenant=tenant, execution=execution)
    execution_fail(tenant=tenant, execution=execution, error_type="Timeout", error_message="slow")
    retry = execution_retry(tenant=tenant, execution=execution, recovery_strategy="wait")
    execution_start(tenant=tenant, execution=retry)
    results = chunk_search(tenant=tenant, query="retries storage", k=3)
    execution_record_sources(tenant=tenant, execution=retry, results=results)
    execution_finish(tenant=tenant, execution=retry, output_data={"chunks": len(results)})

    with tenant_context(tenant):
        assert AgentExecution.objects.get(pk=retry.pk).status == "succeeded"
        assert ExecutionSource.objects.filter(execution=retry).count() == len(results)
        error = ExecutionError.objects.get(execution=execution)
    # The later attempt of the same step succeeded: the error is recovered.
    assert (error.recovery_strategy, error.recovered) == ("wait", True)


def test_the_purges_lock_and_update_tenant_by_tenant(two_tenants, file_storages):
    first, second = two_tenants
    doomed = [project_create(tenant=tenant, name="doomed") for tenant in (first, second)]
    exports = []
    for tenant, project in zip((first, second), doomed, strict=True):
        document_version_create(
            tenant=tenant, project=project, document_type="specification", content="# Spec"
        )
        exports.append(export_create(tenant=tenant, project=project))
        project_soft_delete(tenant=tenant, project=project)

    summary = exports_purge_expired(now=timezone.now() + timedelta(days=2))
    assert summary.expired >= 2
    with system_context("test: the purged exports"):
        statuses = set(
            Export.objects.filter(pk__in=[e.pk for e in exports]).values_list("status", flat=True)
        )
    assert statuses == {Export.Status.EXPIRED}

    projects_purge_deleted(older_than=timedelta(0))
    with system_context("test: the purged projects"):
        assert not Project.all_objects.filter(pk__in=[p.pk for p in doomed]).exists()


def test_seed(on_citus):
    call_command("seed", verbosity=0)


def test_the_partitions_job_creates_and_removes_months_on_the_cluster(on_citus):
    """New months of the distributed agent_executions are distributed with it and keep
    its forced row-level security; retention's dry run goes through."""
    call_command("partitions", "--ahead", "8", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE d.logicalrelid IS NULL), "
            "bool_and(c.relforcerowsecurity) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN pg_dist_partition d ON d.logicalrelid = c.oid "
            "WHERE i.inhparent = 'agent_executions'::regclass"
        )
        undistributed, forced = cursor.fetchone()
    assert (undistributed, forced) == (0, True)
    call_command("partitions", "--retain-months", "1", "--dry-run", verbosity=0)


def test_a_tenants_knn_runs_on_its_shard_through_the_hnsw_index(two_tenants):
    """chunk_search's kNN, filtered on the tenant, is routed to the one shard that holds
    it, where the planner uses the HNSW index (a tenant holding most of the shard's rows)."""
    from pgvector.django import CosineDistance

    tenant = two_tenants[0]
    embedder = get_embedder()
    document = document_ingest(tenant=tenant, title="notes", text=TEXT)
    texts = [f"note {n} about topic {n % 37} and item {n % 11}" for n in range(2000)]
    vectors = embedder.embed(texts)
    with tenant_context(tenant):
        Chunk.objects.bulk_create(
            Chunk(
                tenant=tenant,
                document=document,
                ordinal=100 + n,
                content=text,
                embedding=vectors[n],
                embedding_model=embedder.model,
            )
            for n, text in enumerate(texts)
        )
    with system_context("test: statistics of the chunks"), connection.cursor() as cursor:
        cursor.execute("ANALYZE chunks")
    query = embedder.embed(["note 5 about topic 5"])[0]
    with tenant_context(tenant):
        nearest = Chunk.objects.filter(tenant=tenant).order_by(CosineDistance("embedding", query))
        plan = nearest[:5].explain()
    assert "Task Count: 1" in plan and "chunks_embedding_hnsw_idx" in plan, plan


def test_the_audit_trail_is_sealed_and_verified_on_the_cluster(two_tenants, capsys):
    """Writers of one tenant write unsealed events on their shard without waiting; the
    seal's statements (tenant-filtered reads, one UPDATE ... FROM VALUES per batch) are
    routed to each tenant's shard, and audit_verify rebuilds every hash."""
    from tenancy.audit import audit_seal
    from tenancy.models import AuditEvent

    first, second = two_tenants
    # Events are read by owners, admins and superusers only.
    auditor = User.objects.create_superuser(email=f"auditor-{uuid.uuid4().hex[:8]}@example.com")
    projects = [project_create(tenant=first, name=f"audited {n}") for n in range(WRITERS)]
    project_create(tenant=second, name="audited elsewhere")

    def writer(project: Project):
        def write() -> None:
            for n in range(3):
                document_version_create(
                    tenant=first, project=project, document_type="plan", content=f"v{n}"
                )

        return write

    assert run_together([writer(project) for project in projects]) == []
    sealed = audit_seal().sealed
    with tenant_context(first, user=auditor):
        written = AuditEvent.objects.filter(tenant=first).count()
    assert sealed[f"tenant {first.slug}"] == written
    assert sealed[f"tenant {second.slug}"] >= 1
    with tenant_context(first, user=auditor):
        chain = list(AuditEvent.objects.filter(tenant=first).order_by("seq"))
    assert [event.seq for event in chain] == list(range(1, written + 1))
    assert audit_seal(tenant_slug=first.slug).sealed == {}
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert f"ok      tenant {first.slug}: {written} events" in out
    assert f"ok      tenant {second.slug}: " in out and " 0 broken" in out


def test_audit_events_are_redacted_and_cut_on_the_cluster(two_tenants):
    """An erasure's redaction (one UPDATE on the tenant's shard, let through by the
    append-only trigger there) and retention's cut of a chain (the anchor written on the
    shard, read by the append-only trigger of each deleted event on its shard): both
    chains still verify, the other tenant's untouched."""
    from retention.services import retention_enforce, retention_policy_set
    from tenancy.audit import audit_seal, audit_verify, redact_events
    from tenancy.models import AuditChainAnchor, AuditEvent

    first, second = two_tenants
    owner = make_member(first, f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner")
    retention_policy_set(tenant=first, by=owner, audit_events_days=1)
    erased = project_create(tenant=first, name="Canary 4e1d")
    project_create(tenant=second, name="kept")
    audit_seal()
    with system_context("test: erasure"):
        assert redact_events(rows=[("projects", erased.pk)], tenant_id=first.pk) == 1
        (event,) = AuditEvent.objects.filter(tenant=first, row_id=erased.pk)
        assert event.changes == {"redacted": True} and event.hash is not None
    assert audit_verify().ok

    # Two days on, all of the first tenant's events are past its policy.
    summary = retention_enforce(now=timezone.now() + timedelta(days=2))

    assert summary.removed[first.pk]["audit_events"] >= 3
    assert summary.removed[second.pk].get("audit_events", 0) == 0
    with system_context("test: the cut"):
        anchor = AuditChainAnchor.objects.get(tenant=first)
        assert not AuditEvent.objects.filter(tenant=first, seq__lte=anchor.seq).exists()
        assert AuditEvent.objects.filter(tenant=second, table_name="projects").exists()
    assert audit_verify().ok


def test_retention_removes_one_tenants_old_rows_on_the_cluster(two_tenants, file_storages):
    """`manage.py retention` on the cluster: every statement filtered on its tenant, the
    context and the bypass reaching the workers; tenant A keeps 30 days, tenant B the
    defaults, so only A's old rows go, and a dry run first reports the same counts."""
    from core.db import partitions
    from core.ids import uuid7_at
    from retention.models import RetentionRun
    from retention.services import retention_enforce, retention_policy_set

    first, second = two_tenants
    old = timezone.now() - timedelta(days=60)
    with system_context("test: the months of old runs"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, "agent_executions", old, timezone.now())
    owner = make_member(first, f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner")
    retention_policy_set(
        tenant=first, by=owner, executions_days=30, messages_days=30, exports_days=30
    )
    made = {}
    for tenant in (first, second):
        project = project_create(tenant=tenant, name="kept or not")
        document_version_create(
            tenant=tenant, project=project, document_type="specification", content="# Spec"
        )
        export = export_create(tenant=tenant, project=project)
        with tenant_context(tenant):
            execution = AgentExecution.objects.create(
                id=uuid7_at(old),
                tenant=tenant,
                project=project,
                agent_type="writer",
                correlation_id=uuid.uuid4(),
            )
            ExecutionError.objects.create(
                tenant=tenant,
                execution=execution,
                node="w",
                error_type="E",
                message="m",
                attempt=1,
            )
            old_export = uuid7_at(old)
            Export.objects.filter(tenant=tenant, pk=export.pk).update(id=old_export)
        made[tenant.pk] = (execution.pk, old_export)

    dry = retention_enforce(dry_run=True)
    real = retention_enforce()

    assert dry.removed[first.pk] == real.removed[first.pk]
    removed = real.removed[first.pk]
    assert (removed["agent_executions"], removed["execution_errors"]) == (1, 1)
    assert (removed["exports"], removed["files"]) == (1, 1)
    assert sum(real.removed[second.pk].values()) == 0
    with tenant_context(first, second):
        executions = set(AgentExecution.objects.values_list("pk", flat=True))
        exports = set(Export.objects.values_list("pk", flat=True))
        assert RetentionRun.objects.filter(run_id=real.run_id).count() == 2
    assert made[first.pk][0] not in executions and made[first.pk][1] not in exports
    assert made[second.pk][0] in executions and made[second.pk][1] in exports


def test_erasures_on_the_cluster(two_tenants, file_storages):
    """erase_document and erase_user on the cluster: their reads, updates and deletes
    routed to the tenant's shard (the person's account across shards), the receipts on
    the coordinator; the canary scan finds nothing of them, and the other tenant's rows
    stay."""
    from erasure.models import ErasureReceipt
    from erasure.services import erase_document, erase_user
    from tests.erasure.canary import find_canary
    from tests.erasure.test_erase_document import grounded_work
    from tests.erasure.test_erase_user import their_work

    first, second = two_tenants
    with system_context("test: both tenants erase a person's uploads with them"):
        Tenant.objects.filter(pk__in=[first.pk, second.pk]).update(
            settings={"erase_uploads_with_user": True}
        )
    document_canary, person_canary, kept_canary = (f"canary-{uuid.uuid4().hex}" for _ in range(3))
    work = grounded_work(first, document_canary)
    grounded_work(second, kept_canary)
    email = f"{person_canary}@example.com"
    person = make_member(first, email, role="editor")
    with tenant_context(second):
        Membership.objects.create(tenant=second, user=person, role="editor")
    their_work(first, person, person_canary)
    their_work(second, person, person_canary)

    erase_document(document_id=work["document"].pk, requested_by="dpo")
    receipts = erase_user(email=email, requested_by="dpo")

    assert find_canary(person_canary) == []
    assert find_canary(document_canary) == []
    assert {"chunks.content", "document_versions.content", "chunk_search:fulltext"} <= set(
        place.rsplit(":", 1)[0] for place in find_canary(kept_canary)
    )
    assert len(receipts) == 3
    with system_context("test: the receipts"):
        assert ErasureReceipt.objects.filter(subject_id=person.pk).count() == 3
    call_command("audit_verify")


def test_erase_tenant_removes_one_tenant_on_the_cluster(two_tenants, file_storages):
    """`erase_tenant` on the cluster: every delete names its tenant (one shard each), the
    tenants row is a reference table's, the audit events' delete passes the shard's
    append-only trigger (the erasing setting reaching the workers), the receipt is a
    coordinator table's; the other tenant, on the other worker, keeps every row."""
    from erasure.services import erase_tenant
    from tests.erasure.canary import find_canary, put_canary

    first, second = two_tenants
    canaries = {}
    for tenant in (first, second):
        owner = make_member(tenant, f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner")
        canaries[tenant.pk] = f"canary{uuid.uuid4().hex}"
        put_canary(tenant, canaries[tenant.pk], by=owner)
    kept_before = find_canary(canaries[second.pk])

    receipt = erase_tenant(slug=first.slug, requested_by="cluster test")

    assert receipt.rows_touched["tenants"] == 1 and receipt.rows_touched["files"] == 2
    assert find_canary(canaries[first.pk]) == []
    assert find_canary(canaries[second.pk]) == kept_before
    assert not Tenant.objects.filter(pk=first.pk).exists()
    with tenant_context(second):
        assert Project.objects.filter(tenant=second).exists()
        assert Chunk.objects.filter(tenant=second).exists()
    call_command("audit_verify", tenant=second.slug)


def test_stale_source_flags_on_the_cluster(two_tenants, file_storages):
    """The stale-source triggers on the workers: a re-ingestion, a re-embedding and an
    erasure each flag the run on the tenant's shard (their reads and writes filtered on
    its tenant, the bypass reaching the worker), the selectors read them back, and the
    other tenant sees none."""
    from agents.models import StaleSource
    from agents.selectors import stale_outputs
    from documents.services import chunks_reembed, document_reingest
    from erasure.services import erase_document
    from exports.selectors import exports_on_changed_sources
    from tests.agents.test_stale_sources import (
        CHANGED_MIDDLE,
        CHUNKING,
        CountingEmbedder,
        grounded_run,
    )

    first, second = two_tenants
    work = grounded_run(first)

    document_reingest(tenant=first, document=work["document"], text=CHANGED_MIDDLE, **CHUNKING)
    chunks_reembed(tenant=first, embedder=CountingEmbedder("hashing-v2").embedder)
    erase_document(document_id=work["document"].pk, requested_by="dpo")

    with tenant_context(first):
        reasons = sorted(StaleSource.objects.values_list("reason", flat=True))
    # The middle chunk re-ingested; the two others re-embedded (the middle one's new text
    # under another model is the change already flagged); all three erased.
    assert reasons == ["erased"] * 3 + ["reembedded"] * 2 + ["reingested"]
    outputs = stale_outputs(tenant=first, project=work["project"])
    assert [item.execution.pk for item in outputs.executions] == [work["retriever"].pk]
    assert [item.version.pk for item in outputs.versions] == [work["version"].pk]
    # The version was written by the run's other step (not the one that read the
    # document), so the erasure left it and its export; both are flagged.
    stale_exports = exports_on_changed_sources(tenant=first, project=work["project"])
    assert [item.export.pk for item in stale_exports] == [work["export"].pk]
    with tenant_context(second):
        assert not StaleSource.objects.exists()


def test_switching_embedding_models_on_the_cluster(two_tenants):
    """The backfill's statements (a tenant's chunks lacking a vector, the multi-row INSERT
    of its vectors, the progress UPDATE) run on the tenant's shard; CREATE INDEX
    CONCURRENTLY of the model's partial expression index and ANALYZE go through the
    coordinator to every shard; the switched search reads that index on the one shard;
    the prune deletes the forgotten tenant's vectors and drops the index."""
    from documents.services import (
        BACKFILL_TASK,
        REEMBED_TASK,
        chunks_reembed,
        embedding_backfill_start,
        embedding_model_forget,
        embedding_model_rollback,
        embedding_model_switch,
        embeddings_backfill,
        embeddings_prune,
    )
    from documents.services.embedding_models import model_index_name, model_index_state
    from tenancy.context import job_scope

    model = "hashing-v2"
    for tenant in two_tenants:
        document_ingest(tenant=tenant, title="notes", text=TEXT)
        embedding_backfill_start(tenant=tenant, model=model)
        with job_scope(BACKFILL_TASK, tenant):
            assert embeddings_backfill(tenant=tenant, model=model) == 1
    assert model_index_state(model) == "valid"
    first, second = two_tenants
    embedding_model_switch(tenant=first, model=model)
    [hit] = chunk_search(tenant=first, query="billing invoices refunds", k=1, mode="semantic")
    assert "billing handbook" in hit.content
    # EMBEDDER's model forgotten: the prune clears the first tenant's chunks.embedding on
    # its shard (batched UPDATEs through the flagging trigger), the search stays.
    default = get_embedder().model
    embedding_model_forget(tenant=first, model=default)
    assert embeddings_prune().vectors[(first.slug, default)] == 1
    with tenant_context(first):
        assert not Chunk.objects.filter(embedding__isnull=False).exists()
    [hit] = chunk_search(tenant=first, query="billing invoices refunds", k=1, mode="semantic")
    assert "billing handbook" in hit.content
    # Backfilled again by the re-embedding job, then searched again.
    embedding_backfill_start(tenant=first, model=default)
    with job_scope(REEMBED_TASK, first):
        assert chunks_reembed(tenant=first) == 1
    embedding_model_switch(tenant=first, model=default)
    [hit] = chunk_search(tenant=first, query="billing invoices refunds", k=1, mode="semantic")
    assert "billing handbook" in hit.content
    embedding_model_rollback(tenant=first)
    embedding_model_rollback(tenant=first)
    for tenant in two_tenants:
        embedding_model_forget(tenant=tenant, model=model)
    pruned = embeddings_prune()
    # The cluster's database is shared by the session's tests: only these tenants' counts.
    ours = {
        key: count
        for key, count in pruned.vectors.items()
        if key[0] in {t.slug for t in two_tenants}
    }
    assert ours == {(first.slug, model): 1, (second.slug, model): 1}
    assert model_index_name(model) in pruned.indexes
    assert model_index_state(model) is None


def test_the_usage_rollup_and_a_quota_on_the_cluster(two_tenants):
    """The rollup's triggers write the tenant's co-located shard (an execution's create,
    finish, failure and retry), and the quota reads it back through the coordinator."""
    from agents.models import ExecutionUsageDaily
    from agents.selectors import usage_of_month
    from agents.services import tenant_quota_set

    tenant, other = two_tenants
    owner = make_member(tenant, f"owner-{tenant.pk.hex[:8]}@example.com")
    project = project_create(tenant=tenant, name="usage")
    first = execution_create(tenant=tenant, project=project, agent_type="w", model="m")
    execution_start(tenant=tenant, execution=first)
    execution_fail(tenant=tenant, execution=first, error_type="Timeout")
    retry = execution_retry(tenant=tenant, execution=first)
    execution_start(tenant=tenant, execution=retry)
    execution_finish(
        tenant=tenant, execution=retry, prompt_tokens=700, completion_tokens=300, cost_usd="1.5"
    )
    with tenant_context(tenant):
        rows = list(ExecutionUsageDaily.objects.values_list("model", "executions", "failures"))
    assert rows == [("m", 2, 1)]
    used = usage_of_month(tenant=tenant)
    assert (used.tokens, used.cost_usd) == (1000, Decimal("1.5"))
    assert usage_of_month(tenant=other).executions == 0

    tenant_quota_set(tenant=tenant, by=owner, monthly_token_limit=1000)
    with pytest.raises(ValidationError) as refused:
        execution_create(tenant=tenant, project=project, agent_type="w")
    assert set(refused.value.message_dict) == {"monthly_token_limit"}
    # /health/'s note sums every tenant's month through the coordinator, on the health
    # check's own connection as the runtime role with no tenant set: the function's
    # bypass reaches the workers (SET LOCAL, propagated in the probe's transaction), so
    # the tenant at its limit is counted on the cluster too.
    from agents.health import quota_note
    from core.ops.health import probe_cursor

    with probe_cursor() as cursor:
        note = quota_note(cursor)
    assert note and note[0].startswith("1 tenant past the warning threshold"), note
    assert "1 at a limit" in note[0], note
