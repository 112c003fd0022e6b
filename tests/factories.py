"""Rows for tests: a tenant's member, and one valid row of every tenant-owned model.

`TENANT_ROW_BUILDERS` must cover every model with a tenant field:
tests/tenancy/test_rls.py fails when a new tenant-owned model has no builder here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.apps import apps
from django.db import connection, models

from core.hashing import sha256_hex
from core.ids import uuid7
from documents.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentAccess,
    DocumentVersion,
    EmbeddingCacheEntry,
    Project,
    ProjectAccess,
    SearchQuery,
    TenantEmbeddingModel,
)
from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User

PASSWORD = "correct-horse-battery-staple"


def make_member(tenant: Tenant, email: str, role: str = "owner", **fields) -> User:
    """A user with `PASSWORD` and a membership of `tenant` in `role`."""
    user = User.objects.create_user(email=email, password=PASSWORD, name=email, **fields)
    with tenant_context(tenant):
        Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


def tenant_id_on_worker(index: int) -> uuid.UUID:
    """A new tenant id; on a Citus cluster, one whose rows live on its `index`-th worker.

    The isolation tests then hold with tenants A and B on different workers
    (tests/core/test_citus.py runs them on a distributed database); on one server it is
    any new id.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_dist_node') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return uuid7()
        cursor.execute(
            "SELECT nodeid FROM pg_dist_node WHERE shouldhaveshards AND isactive "
            "AND noderole = 'primary' ORDER BY nodeid"
        )
        workers = [nodeid for (nodeid,) in cursor.fetchall()]
        if not workers:
            return uuid7()
        wanted = workers[index % len(workers)]
        while True:  # a hash lands on each of n workers one time in n
            candidate = uuid7()
            cursor.execute(
                "SELECT n.nodeid FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) "
                "WHERE p.shardid = get_shard_id_for_distribution_column('projects', %s)",
                [candidate],
            )
            if cursor.fetchone()[0] == wanted:
                return candidate


def tenant_owned_models() -> list[type[models.Model]]:
    return sorted(
        (
            model
            for model in apps.get_models()
            if any(field.name == "tenant" for field in model._meta.concrete_fields)
        ),
        key=lambda model: model._meta.label,
    )


# Distinct numbers all along the vector: any of the later ones in a page means it was rendered.
VECTOR = [round(0.5 + i / 100_000, 5) for i in range(1536)]


@dataclass
class _Build:
    """What a row builder needs: the tenant, the rows made so far, who makes them."""

    tenant: Tenant
    label: str
    by: User | None
    rows: dict[type[models.Model], models.Model] = field(default_factory=dict)

    def __getitem__(self, model: type[models.Model]) -> models.Model:
        return self.rows[model]


def _membership(b: _Build):
    if b.by is not None:
        return Membership.objects.get(tenant=b.tenant, user=b.by)
    user = User.objects.create_user(email=f"member-{uuid.uuid4().hex[:8]}@example.com")
    return Membership.objects.create(tenant=b.tenant, user=user, role="viewer")


def _embedding_cache_entry(b: _Build):
    return EmbeddingCacheEntry.objects.create(
        tenant=b.tenant,
        model="test-embedder",
        content_sha256=sha256_hex(f"Chunk text {b.label}"),
        embedding=VECTOR,
    )


def _chunk_embedding(b: _Build):
    return ChunkEmbedding.objects.create(
        tenant=b.tenant,
        chunk=b[Chunk],
        model="test-model-v2",
        dimension=3,
        embedding=[0.5, 0.25, 1.0],
    )


def _tenant_embedding_model(b: _Build):
    return TenantEmbeddingModel.objects.create(
        tenant=b.tenant,
        model=f"test-model-{b.label}",
        role="kept",
        status="complete",
        chunks_done=1,
        chunks_total=1,
    )


def _project(b: _Build):
    return Project.objects.create(tenant=b.tenant, name=f"Project {b.label}", created_by=b.by)


def _version(b: _Build):
    content = f"About {b.label}"
    return DocumentVersion.objects.create(
        tenant=b.tenant,
        project=b[Project],
        document_type="about",
        version=1,
        content=content,
        content_sha256=sha256_hex(content),
        created_by=b.by,
    )


def _document(b: _Build):
    return Document.objects.create(
        tenant=b.tenant,
        project=b[Project],
        title=f"Handbook {b.label}",
        storage_key=f"documents/{b.tenant.pk}/{uuid.uuid4()}",
        created_by=b.by,
    )


def _chunk(b: _Build):
    return Chunk.objects.create(
        tenant=b.tenant,
        document=b[Document],
        ordinal=0,
        content=f"Chunk text {b.label}",
        token_count=3,
        embedding=VECTOR,
        embedding_model="test-embedder",
    )


def _search_query(b: _Build):
    query = f"Where is {b.label}"
    # A search is logged as its own user's (the policy's WITH CHECK) and read by that
    # user or the tenant's owners and admins.
    searcher = _grant_writer(b)
    with tenant_context(b.tenant, user=searcher):
        return SearchQuery.objects.create(
            tenant=b.tenant,
            user=searcher,
            mode="hybrid",
            query=query,
            query_sha256=sha256_hex(query),
            filters={"topic": b.label},
            k=10,
            latency_ms=4.2,
            chunk_ids=[b[Chunk].pk],
        )


def _template(b: _Build):
    from documents.services import project_template_create

    return project_template_create(
        tenant=b.tenant,
        name=f"Template {b.label}",
        files={"about.md": "# {project_name}"},
        tags=["web"],
        tech_stack=["django"],
    )


def _execution(b: _Build):
    from agents.models import AgentExecution

    return AgentExecution.objects.create(
        tenant=b.tenant,
        project=b[Project],
        agent_type="writer",
        correlation_id=uuid.uuid4(),
        produced_version=b[DocumentVersion],
        idempotency_key=f"job {b.label}",
    )


def _idempotency_key(b: _Build):
    from agents.models import AgentExecution, ExecutionIdempotencyKey

    # Written by the execution's insert trigger, never on its own.
    return ExecutionIdempotencyKey.objects.get(tenant=b.tenant, execution=b[AgentExecution])


def _source(b: _Build):
    from agents.models import AgentExecution
    from agents.services import execution_record_sources

    [source] = execution_record_sources(
        tenant=b.tenant, execution=b[AgentExecution], results=[{"chunk": b[Chunk], "score": 0.9}]
    )
    return source


def _message(b: _Build):
    from agents.models import AgentExecution
    from agents.services import message_add

    return message_add(
        tenant=b.tenant,
        project=b[Project],
        role="user",
        content=f"Hello {b.label}",
        execution=b[AgentExecution],
    )


def _evaluation(b: _Build):
    from agents.services import evaluation_record

    return evaluation_record(
        tenant=b.tenant, score=80, document_version=b[DocumentVersion], evaluator="readability"
    )


def _proposal(b: _Build):
    from agents.models import AgentExecution
    from agents.services import change_proposal_propose

    return change_proposal_propose(
        tenant=b.tenant,
        base_version=b[DocumentVersion],
        content=f"About {b.label}, revised",
        execution=b[AgentExecution],
        impact={"risk": "low"},
    )


def _decision(b: _Build):
    from agents.models import AgentExecution
    from agents.services import decision_record

    return decision_record(
        tenant=b.tenant,
        project=b[Project],
        category="storage",
        question=f"Where does {b.label} keep embeddings?",
        options=[{"name": "PostgreSQL", "notes": "pgvector"}, {"name": "Elsewhere", "notes": ""}],
        selected="PostgreSQL",
        execution=b[AgentExecution],
        decided_by=b.by,
    )


def _execution_error(b: _Build):
    from agents.models import AgentExecution, ExecutionError

    return ExecutionError.objects.create(
        tenant=b.tenant,
        execution=b[AgentExecution],
        node="writer",
        error_type="TimeoutError",
        message=f"slow {b.label}",
        traceback="Traceback (most recent call last):\nTimeoutError\n",
        attempt=1,
    )


def _stale_source(b: _Build):
    from agents.models import AgentExecution, ExecutionSource, StaleSource
    from documents.models import Chunk

    # As the trigger writes it when the source's chunk changes; inserted directly, so the
    # other rows (the chunk, the source) stay as they are.
    source = b[ExecutionSource]
    return StaleSource.objects.create(
        tenant=b.tenant,
        execution=b[AgentExecution],
        chunk_id=b[Chunk].pk,
        document_id=source.document_id,
        ordinal=source.ordinal,
        read_sha256=source.chunk_sha256,
        new_sha256=sha256_hex(f"changed {b.label}"),
        reason=StaleSource.Reason.REINGESTED,
    )


def _usage_day(b: _Build):
    from agents.models import AgentExecution, ExecutionUsageDaily

    # Written by the execution's insert trigger (the usage rollup).
    execution = b[AgentExecution]
    return (
        ExecutionUsageDaily.objects.filter(tenant=b.tenant, model=execution.model)
        .order_by("-day")
        .first()
    )


def _quota(b: _Build):
    from agents.models import TenantQuota

    # One per tenant, whichever call makes it; far above any test's usage.
    quota, _ = TenantQuota.objects.get_or_create(
        tenant=b.tenant, defaults={"monthly_token_limit": 10**9}
    )
    return quota


def _export(b: _Build):
    from exports.models import Export

    return Export.objects.create(tenant=b.tenant, project=b[Project], created_by=b.by)


def _grant_writer(b: _Build) -> User:
    """Who writes the grants, which take writes from owners and admins only: `by` (an
    owner, as make_member makes one), else a superuser, whom the policies let see
    every tenant, so that the tenant gets no member beyond the rows' own."""
    if b.by is not None:
        return b.by
    return User.objects.create_superuser(email=f"root-{uuid.uuid4().hex[:8]}@example.com")


def _project_access(b: _Build):
    writer = _grant_writer(b)
    with tenant_context(b.tenant, user=writer):
        return ProjectAccess.objects.create(
            tenant=b.tenant, project=b[Project], user=b[Membership].user, created_by=writer
        )


def _document_access(b: _Build):
    writer = _grant_writer(b)
    with tenant_context(b.tenant, user=writer):
        return DocumentAccess.objects.create(
            tenant=b.tenant, document=b[Document], user=b[Membership].user, created_by=writer
        )


# Insertion order matters: parents first.


def _audit_event(b: _Build):
    """The newest of the events the rows built before wrote (audit_events is written by
    triggers only)."""
    from tenancy.models import AuditEvent

    # Read as an owner or superuser: members other than owners and admins read none.
    with tenant_context(b.tenant, user=_grant_writer(b)):
        return AuditEvent.objects.filter(tenant=b.tenant).order_by("-id").first()


def _retention_policy(b: _Build):
    from retention.models import RetentionPolicy

    # One per tenant, whichever call makes it; a category not enforced yet, so the rows
    # made beside it keep the defaults.
    policy, _ = RetentionPolicy.objects.get_or_create(
        tenant=b.tenant, defaults={"search_queries_days": 30}
    )
    return policy


def _retention_run(b: _Build):
    from django.utils import timezone

    from retention.models import RetentionRun

    now = timezone.now()
    return RetentionRun.objects.create(
        tenant=b.tenant,
        run_id=uuid.uuid4(),
        started_at=now,
        finished_at=now,
        dry_run=True,
        removed={"agent_executions": 0},
    )


def _erasure_receipt(b: _Build):
    from django.utils import timezone

    from erasure.models import ErasureReceipt

    # Written (and read) by owners and admins only.
    with tenant_context(b.tenant, user=_grant_writer(b)):
        return ErasureReceipt.objects.create(
            tenant=b.tenant,
            subject_type=ErasureReceipt.Subject.DOCUMENT,
            subject_id=uuid.uuid4(),
            subject_sha256="0" * 64,
            requested_by="the row builder",  # a receipt outlives its tenant: no label
            rows_touched={"documents": 1},
            completed_at=timezone.now(),
        )


def _audit_chain_anchor(b: _Build):
    from django.utils import timezone

    from tenancy.models import AuditChainAnchor

    # One per tenant, whichever call makes it: as if retention had cut the chain's first
    # event, so the chain's next seal goes on after it (tenancy.audit).
    anchor, _ = AuditChainAnchor.objects.get_or_create(
        tenant=b.tenant, defaults={"seq": 1, "hash": "0" * 64, "cut_at": timezone.now()}
    )
    return anchor


# Insertion order matters: parents first; the audit trail last.
TENANT_ROW_BUILDERS = {
    "tenancy.Membership": _membership,
    "documents.Project": _project,
    "documents.DocumentVersion": _version,
    "documents.Document": _document,
    "documents.Chunk": _chunk,
    "documents.EmbeddingCacheEntry": _embedding_cache_entry,
    "documents.ChunkEmbedding": _chunk_embedding,
    "documents.TenantEmbeddingModel": _tenant_embedding_model,
    "documents.ProjectAccess": _project_access,
    "documents.DocumentAccess": _document_access,
    "documents.SearchQuery": _search_query,
    "documents.ProjectTemplate": _template,
    "agents.AgentExecution": _execution,
    "agents.ExecutionIdempotencyKey": _idempotency_key,
    "agents.ExecutionSource": _source,
    "agents.ConversationMessage": _message,
    "agents.EvaluationRun": _evaluation,
    "agents.ChangeProposal": _proposal,
    "agents.Decision": _decision,
    "agents.ExecutionError": _execution_error,
    "agents.StaleSource": _stale_source,
    "agents.ExecutionUsageDaily": _usage_day,
    "agents.TenantQuota": _quota,
    "exports.Export": _export,
    "retention.RetentionPolicy": _retention_policy,
    "retention.RetentionRun": _retention_run,
    "erasure.ErasureReceipt": _erasure_receipt,
    "tenancy.AuditChainAnchor": _audit_chain_anchor,
    "tenancy.AuditEvent": _audit_event,
}


def make_tenant_rows(
    tenant: Tenant, *, by: User | None = None, label: str | None = None
) -> dict[type[models.Model], models.Model]:
    """One row of every tenant-owned model for `tenant`, keyed by model.

    `by` is a member of the tenant: the Membership row is theirs and they created the
    rows; without one a new viewer is made. `label` names the rows ("Project A", "About
    A") and keeps two calls in one tenant apart; the tenant's slug by default.
    """
    build = _Build(tenant=tenant, label=label or tenant.slug, by=by)
    with tenant_context(tenant):
        for model_label, builder in TENANT_ROW_BUILDERS.items():
            build.rows[apps.get_model(model_label)] = builder(build)
    return build.rows
