"""Agent executions: runs, their steps, retries and provenance."""

from datetime import timedelta

import pgtrigger
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import JSONArray, JSONObject

from core.expressions import Sha256Hex
from core.hashing import SHA256_HEX_PATTERN
from core.models import TransactionNow
from documents.models import DocumentType
from tenancy.models import TenantOwnedModel


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# The execution lifecycle: every status change not listed here is refused by the
# `status_transition` trigger, whoever writes the row; terminal states are final.
ALLOWED_TRANSITIONS = frozenset(
    {
        (ExecutionStatus.PENDING, ExecutionStatus.RUNNING),
        (ExecutionStatus.PENDING, ExecutionStatus.CANCELLED),
        (ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED),
        (ExecutionStatus.RUNNING, ExecutionStatus.FAILED),
        (ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED),
    }
)


def _transition_check_sql() -> str:
    allowed = " OR ".join(
        f"(OLD.status = '{old.value}' AND NEW.status = '{new.value}')"
        for old, new in sorted(ALLOWED_TRANSITIONS)
    )
    return (
        f"IF {allowed} THEN RETURN NEW; END IF; "
        "RAISE EXCEPTION 'agent execution %: status cannot change from % to %', "
        "OLD.id, OLD.status, NEW.status USING ERRCODE = 'integrity_constraint_violation'; "
        "RETURN NULL;"
    )


# The lock that serialises, per step of a run, recording a failure and an attempt's
# success: without it, a failure recorded while a later attempt succeeds concurrently
# would be missed by both sides (each reads before the other commits). The same key
# format as core.db.advisory_xact_lock, so Python code can take it too.
def _step_lock_sql(row: str) -> str:
    return (
        "PERFORM pg_advisory_xact_lock(hashtextextended('execution_errors:' || "
        f"{row}.correlation_id::text || ':' || {row}.agent_type || ':' || "
        f"coalesce({row}.parent_id::text, ''), 0));"
    )


# "The same step" of a run: same correlation_id, agent type and parent, which is what
# execution_retry copies onto the next attempt.
SAME_STEP_SQL = (
    "{a}.tenant_id = {b}.tenant_id AND {a}.correlation_id = {b}.correlation_id "
    "AND {a}.agent_type = {b}.agent_type AND {a}.parent_id IS NOT DISTINCT FROM {b}.parent_id"
)


def _recover_errors_sql() -> str:
    same_step = SAME_STEP_SQL.format(a="x", b="NEW")
    return (
        _step_lock_sql("NEW")
        + " UPDATE execution_errors e SET recovered = true FROM agent_executions x "
        "WHERE e.execution_id = x.id AND e.tenant_id = NEW.tenant_id AND NOT e.recovered "
        f"AND {same_step} AND x.attempt < NEW.attempt; RETURN NULL;"
    )


class AgentExecution(TenantOwnedModel):
    """One attempt of one agent step; a run is all rows sharing a correlation_id."""

    Status = ExecutionStatus

    project = models.ForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="executions",
        db_constraint=False,
        db_index=False,
    )
    agent_type = models.CharField(max_length=100)
    correlation_id = models.UUIDField()
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
        db_constraint=False,
        db_index=False,
    )
    attempt = models.IntegerField(default=1, validators=[MinValueValidator(1)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input_data = models.JSONField(default=dict, blank=True)
    output_data = models.JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    retry_count = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    completion_tokens = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    produced_version = models.ForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by",
        db_constraint=False,
        db_index=False,
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "agent_executions"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "id"], name="agent_executions_tenant_id_uniq"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ExecutionStatus.values), name="agent_executions_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(attempt__gte=1), name="agent_executions_attempt_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(retry_count__gte=0), name="agent_executions_retry_count_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(prompt_tokens__gte=0, completion_tokens__gte=0),
                name="agent_executions_tokens_gte_0",
            ),
            models.CheckConstraint(
                condition=Q(cost_usd__gte=0), name="agent_executions_cost_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(completed_at__isnull=True)
                | Q(started_at__isnull=True)
                | Q(completed_at__gte=F("started_at")),
                name="agent_executions_completed_after_started",
            ),
        ]
        indexes = [
            # A project's executions, newest first.
            models.Index("project", F("started_at").desc(), name="agent_exec_proj_started_idx"),
            # All rows of one run.
            models.Index(fields=["correlation_id"], name="agent_exec_correlation_idx"),
            # Work queue: what is pending or running, oldest first.
            models.Index(
                fields=["status", "started_at"],
                name="agent_exec_active_idx",
                condition=Q(status__in=["pending", "running"]),
            ),
            # Tenant-first access and the (tenant_id, project_id) foreign key.
            models.Index(fields=["tenant", "project"], name="agent_exec_tenant_proj_idx"),
            # A step's sub-steps; the parent and produced-version foreign keys, simple and
            # composite (tenant_id second, so one index serves both).
            models.Index(fields=["parent", "tenant"], name="agent_exec_parent_idx"),
            models.Index(fields=["produced_version", "tenant"], name="agent_exec_produced_idx"),
            GinIndex(fields=["input_data"], name="agent_exec_input_gin"),
            GinIndex(fields=["output_data"], name="agent_exec_output_gin"),
            # The admin's search by agent type or model (ILIKE '%term%', core.lookups).
            GinIndex(
                fields=["agent_type"], name="agent_exec_agent_type_trgm", opclasses=["gin_trgm_ops"]
            ),
            GinIndex(fields=["model"], name="agent_exec_model_trgm", opclasses=["gin_trgm_ops"]),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # Only the lifecycle's transitions; terminal states are final. An unchanged
            # status passes, so e.g. produced_version's ON DELETE SET NULL still works.
            pgtrigger.Trigger(
                name="status_transition",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition("OLD.status IS DISTINCT FROM NEW.status"),
                func=_transition_check_sql(),
            ),
            # An attempt that succeeds recovers the recorded failures of the earlier
            # attempts of its step (execution_errors.recovered).
            pgtrigger.Trigger(
                name="errors_recovered",
                when=pgtrigger.After,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'succeeded'"
                ),
                func=_recover_errors_sql(),
            ),
            # The key's uniqueness per tenant lives in execution_idempotency_keys: a
            # partitioned table's unique keys must include its partition key (id).
            pgtrigger.Trigger(
                name="idempotency_key_claim",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition("NEW.idempotency_key IS NOT NULL"),
                func=(
                    "INSERT INTO execution_idempotency_keys (tenant_id, execution_id, "
                    "idempotency_key) VALUES (NEW.tenant_id, NEW.id, NEW.idempotency_key); "
                    "RETURN NULL;"
                ),
            ),
            pgtrigger.Trigger(
                name="idempotency_key_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "OLD.idempotency_key IS DISTINCT FROM NEW.idempotency_key"
                ),
                func=(
                    "RAISE EXCEPTION 'agent execution %: the idempotency key cannot change', "
                    "OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
            # A new execution has not finished yet.
            pgtrigger.Trigger(
                name="status_initial",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition("NEW.status NOT IN ('pending', 'running')"),
                func=(
                    "RAISE EXCEPTION 'agent execution %: a new execution starts as pending or "
                    "running, not %', NEW.id, NEW.status "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_type} #{self.attempt} ({self.status})"

    @property
    def duration(self) -> timedelta | None:
        """completed_at - started_at, exactly; None until both are set."""
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at


class ExecutionIdempotencyKey(TenantOwnedModel):
    """An execution's idempotency key, unique per tenant; written by agent_executions'
    idempotency_key_claim trigger, so raw SQL inserts are held to it too.

    agent_executions is partitioned by month of its id, and PostgreSQL allows a unique
    key on a partitioned table only if it includes the partition key: (tenant_id,
    idempotency_key, id) would guarantee nothing. This small table keeps the guarantee
    under the constraint name the key always had.
    """

    execution = models.ForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    idempotency_key = models.CharField(max_length=200)

    class Meta(TenantOwnedModel.Meta):
        db_table = "execution_idempotency_keys"
        constraints = [
            # Retrying with the same key returns the first execution.
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                name="agent_executions_tenant_idempotency_uniq",
            ),
            # One key per execution; the (tenant_id, execution_id) FK's ON DELETE CASCADE.
            models.UniqueConstraint(
                fields=["tenant", "execution"], name="execution_idempotency_keys_exec_uniq"
            ),
        ]

    def __str__(self) -> str:
        return self.idempotency_key


class ExecutionSource(TenantOwnedModel):
    """A chunk an execution retrieved, with its rank, score and a snapshot of its content.

    The snapshot (content, its hash, the document and ordinal) keeps provenance exact
    after the chunk or its document is deleted and chunk_id is set to NULL.
    """

    execution = models.ForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="sources",
        db_constraint=False,
        db_index=False,
    )
    chunk = models.ForeignKey(
        "documents.Chunk",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="execution_sources",
        db_constraint=False,
        db_index=False,
    )
    rank = models.IntegerField(validators=[MinValueValidator(1)])
    score = models.FloatField()
    chunk_sha256 = models.CharField(max_length=64)
    # Snapshot of the chunk at retrieval time; plain columns, not foreign keys, so
    # they outlive the chunk and its document.
    document_id = models.UUIDField(null=True, blank=True)
    document_title = models.CharField(max_length=300, blank=True)
    ordinal = models.IntegerField(null=True, blank=True, validators=[MinValueValidator(0)])
    content = models.TextField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "execution_sources"
        constraints = [
            # Tenant-first, as every unique key (a Citus cluster requires the tenant in it).
            models.UniqueConstraint(
                fields=["tenant", "execution", "chunk"],
                name="execution_sources_tenant_exec_chunk_uniq",
            ),
            models.CheckConstraint(condition=Q(rank__gte=1), name="execution_sources_rank_gte_1"),
            models.CheckConstraint(
                condition=Q(chunk_sha256__regex=SHA256_HEX_PATTERN),
                name="execution_sources_chunk_sha256_hex",
            ),
            # The stored hash is the snapshot's hash, whoever wrote the row.
            models.CheckConstraint(
                condition=Q(chunk_sha256=Sha256Hex("content")),
                name="execution_sources_chunk_sha256_matches",
            ),
            models.CheckConstraint(
                condition=Q(ordinal__isnull=True) | Q(ordinal__gte=0),
                name="execution_sources_ordinal_gte_0",
            ),
        ]
        indexes = [
            # Tenant-first: an execution's sources by rank; the (tenant_id, execution_id) FK.
            models.Index(
                fields=["tenant", "execution", "rank"], name="exec_sources_tenant_exec_idx"
            ),
            # "Which executions used this chunk?"; both chunk FKs' ON DELETE SET NULL.
            models.Index(fields=["chunk", "tenant"], name="exec_sources_chunk_idx"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # Provenance is a record: only chunk_id may change, and only to NULL (the
            # chunk's deletion).
            pgtrigger.Trigger(
                name="sources_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "NEW.chunk_id IS NOT NULL AND NEW.chunk_id IS DISTINCT FROM OLD.chunk_id "
                    "OR ROW(OLD.tenant_id, OLD.execution_id, OLD.rank, OLD.score, "
                    "OLD.chunk_sha256, OLD.document_id, OLD.document_title, OLD.ordinal, "
                    "OLD.content) "
                    "IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.rank, NEW.score, "
                    "NEW.chunk_sha256, NEW.document_id, NEW.document_title, NEW.ordinal, "
                    "NEW.content)"
                ),
                func=(
                    "RAISE EXCEPTION 'execution source % is immutable: only chunk_id may be "
                    "cleared', OLD.id USING ERRCODE = 'integrity_constraint_violation'; "
                    "RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.rank} of {self.execution_id} ({self.score:.3f})"


class MessageRole(models.TextChoices):
    USER = "user", "User"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"
    TOOL = "tool", "Tool"


class ConversationMessage(TenantOwnedModel):
    """One message of a project's conversation, optionally tied to an execution.

    Order is `position`, allocated 1, 2, 3... per project under a lock (like document
    versions), so it follows commit order with no ties or gaps; created_at can tie
    and, between concurrent writers, disagree with the order the messages landed in.
    """

    Role = MessageRole

    project = models.ForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="messages",
        db_constraint=False,
        db_index=False,
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_constraint=False,
        db_index=False,
    )
    position = models.IntegerField(validators=[MinValueValidator(1)])
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "conversation_messages"
        constraints = [
            # The conversation's order; tenant-first, so also the (tenant_id, project_id) FK.
            models.UniqueConstraint(
                fields=["tenant", "project", "position"],
                name="conversation_messages_position_uniq",
            ),
            models.CheckConstraint(
                condition=Q(role__in=MessageRole.values), name="conversation_messages_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(position__gte=1), name="conversation_messages_position_gte_1"
            ),
        ]
        indexes = [
            # A project's messages by time.
            models.Index(fields=["project", "created_at"], name="conv_messages_proj_created_idx"),
            # One execution's messages in order; both execution FKs' ON DELETE SET NULL.
            models.Index(
                fields=["execution", "tenant", "position"], name="conv_messages_execution_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}"


class EvaluationRun(TenantOwnedModel):
    """A score given to one document version or one execution, with its metrics."""

    project = models.ForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="evaluations",
        db_constraint=False,
        db_index=False,
    )
    document_version = models.ForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
        db_constraint=False,
        db_index=False,
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
        db_constraint=False,
        db_index=False,
    )
    evaluator = models.CharField(max_length=200, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # 0..100, the scale of document_versions' readability and grammar scores.
    score = models.FloatField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "evaluation_runs"
        constraints = [
            models.CheckConstraint(
                condition=Q(document_version__isnull=False, execution__isnull=True)
                | Q(document_version__isnull=True, execution__isnull=False),
                name="evaluation_runs_exactly_one_target",
            ),
            models.CheckConstraint(
                condition=Q(score__gte=0, score__lte=100), name="evaluation_runs_score_range"
            ),
        ]
        indexes = [
            # A project's evaluations, newest first.
            models.Index("project", F("created_at").desc(), name="eval_runs_proj_created_idx"),
            # Tenant-first access and the (tenant_id, project_id) foreign key.
            models.Index(fields=["tenant", "project"], name="eval_runs_tenant_proj_idx"),
            # A version's or an execution's evaluations; their FKs' (simple and composite)
            # ON DELETE CASCADE.
            models.Index(fields=["document_version", "tenant"], name="eval_runs_version_idx"),
            models.Index(fields=["execution", "tenant"], name="eval_runs_execution_idx"),
        ]

    def __str__(self) -> str:
        target = self.document_version_id or self.execution_id
        return f"{self.score:g} for {target}"


class ProposalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"


# A proposal's lifecycle: every status change not listed here is refused by the
# `proposal_status_transition` trigger; applied, rejected and failed are final.
PROPOSAL_TRANSITIONS = frozenset(
    {
        (ProposalStatus.PENDING, ProposalStatus.APPROVED),
        (ProposalStatus.PENDING, ProposalStatus.REJECTED),
        (ProposalStatus.APPROVED, ProposalStatus.APPLIED),
        (ProposalStatus.APPROVED, ProposalStatus.FAILED),
    }
)
PROPOSAL_FINAL_STATUSES = frozenset(
    {ProposalStatus.APPLIED, ProposalStatus.REJECTED, ProposalStatus.FAILED}
)


# Applying refuses a stale base: the applied version is the one right after the base,
# with the proposal's content, so no other version was written in between.
APPLIED_VERSION_IS_NEXT_SQL = (
    "EXISTS (SELECT 1 FROM document_versions v JOIN document_versions b "
    "ON b.id = NEW.base_version_id WHERE v.id = NEW.applied_version_id "
    "AND v.project_id = NEW.project_id AND v.document_type = NEW.document_type "
    "AND v.version = b.version + 1 AND v.content_sha256 = NEW.content_sha256)"
)


def _proposal_transition_check_sql() -> str:
    allowed = " OR ".join(
        f"(OLD.status = '{old.value}' AND NEW.status = '{new.value}')"
        for old, new in sorted(PROPOSAL_TRANSITIONS)
    )
    return (
        f"IF NOT ({allowed}) THEN "
        "RAISE EXCEPTION 'change proposal %: status cannot change from % to %', "
        "OLD.id, OLD.status, NEW.status USING ERRCODE = 'integrity_constraint_violation'; "
        "END IF; "
        f"IF NEW.status = 'applied' AND NOT {APPLIED_VERSION_IS_NEXT_SQL} THEN "
        "RAISE EXCEPTION 'change proposal %: the applied version must be the version right "
        "after the base, with the proposed content (was another version written since?)', "
        "NEW.id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW;"
    )


class ChangeProposal(TenantOwnedModel):
    """New content for one of a project's documents, proposed on a base version and
    reviewed by a person before it becomes the document's next version."""

    Status = ProposalStatus

    project = models.ForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="proposals",
        db_constraint=False,
        db_index=False,
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="proposals",
        db_constraint=False,
        db_index=False,
    )
    document_type = models.CharField(max_length=16, choices=DocumentType.choices)
    # RESTRICT: a version goes only with its project, which takes its proposals along.
    base_version = models.ForeignKey(
        "documents.DocumentVersion",
        on_delete=models.RESTRICT,
        related_name="proposals",
        db_constraint=False,
        db_index=False,
    )
    content = models.TextField()
    content_sha256 = models.CharField(max_length=64)
    # The agent's impact analysis: what the change touches and how risky it is.
    impact = models.JSONField(default=dict, blank=True)
    # Headings of the sections the change touches; searched with && and @> (GIN).
    affected_sections = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    applied_version = models.ForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="applied_proposals",
        db_constraint=False,
        db_index=False,
    )
    # Why applying failed (the base version was no longer the latest, ...).
    failure_reason = models.TextField(blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "change_proposals"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ProposalStatus.values),
                name="change_proposals_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(document_type__in=DocumentType.values),
                name="change_proposals_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(content_sha256__regex=SHA256_HEX_PATTERN),
                name="change_proposals_content_sha256_hex",
            ),
            # The stored hash is the content's hash, whoever wrote the row.
            models.CheckConstraint(
                condition=Q(content_sha256=Sha256Hex("content")),
                name="change_proposals_content_sha256_matches",
            ),
            # Reviewed (approved or rejected, then applied or failed) means a review time.
            models.CheckConstraint(
                condition=Q(status=ProposalStatus.PENDING, reviewed_at__isnull=True)
                | (~Q(status=ProposalStatus.PENDING) & Q(reviewed_at__isnull=False)),
                name="change_proposals_reviewed_at_when_reviewed",
            ),
            # Applied, and only applied, names the version it became.
            models.CheckConstraint(
                condition=Q(status=ProposalStatus.APPLIED, applied_version__isnull=False)
                | (~Q(status=ProposalStatus.APPLIED) & Q(applied_version__isnull=True)),
                name="change_proposals_applied_has_version",
            ),
            # Failed, and only failed, says why.
            models.CheckConstraint(
                condition=(Q(status=ProposalStatus.FAILED) & ~Q(failure_reason=""))
                | (~Q(status=ProposalStatus.FAILED) & Q(failure_reason="")),
                name="change_proposals_failed_has_reason",
            ),
        ]
        indexes = [
            # A project's proposals by status, newest first; both project FKs.
            models.Index(
                "project", "status", F("created_at").desc(), name="change_proposals_proj_idx"
            ),
            # A tenant's review queue: proposals in one status, oldest first; the tenant FK.
            models.Index(
                fields=["tenant", "status", "created_at"], name="change_proposals_queue_idx"
            ),
            # The proposals of an execution; both execution FKs' ON DELETE SET NULL.
            models.Index(fields=["execution", "tenant"], name="change_proposals_exec_idx"),
            # Proposals based on / applied as a version; their FKs' RESTRICT checks.
            models.Index(fields=["base_version", "tenant"], name="change_proposals_base_idx"),
            models.Index(fields=["applied_version", "tenant"], name="change_prop_applied_idx"),
            # A reviewer's proposals; the user FK's ON DELETE SET NULL.
            models.Index(fields=["reviewed_by"], name="change_prop_reviewer_idx"),
            # "Proposals touching section X": affected_sections @> / && ARRAY[...].
            GinIndex(fields=["affected_sections"], name="change_prop_sections_gin"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # A new proposal waits for review.
            pgtrigger.Trigger(
                name="proposal_status_initial",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition("NEW.status <> 'pending'"),
                func=(
                    "RAISE EXCEPTION 'change proposal %: a new proposal is pending, not %', "
                    "NEW.id, NEW.status USING ERRCODE = 'integrity_constraint_violation'; "
                    "RETURN NULL;"
                ),
            ),
            # The base version is a version of the proposal's own document. AFTER the
            # insert, so the composite foreign keys (which fire first, by name) refuse
            # another tenant's project or version by their own names.
            pgtrigger.Trigger(
                name="proposal_base_version",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                declare=[("base", "document_versions")],
                func=(
                    "SELECT * INTO base FROM document_versions WHERE id = NEW.base_version_id; "
                    "IF FOUND AND (base.project_id, base.document_type) IS DISTINCT FROM "
                    "(NEW.project_id, NEW.document_type) THEN "
                    "RAISE EXCEPTION 'change proposal %: the base version is not a % version "
                    "of project %', NEW.id, NEW.document_type, NEW.project_id "
                    "USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NULL;"
                ),
            ),
            # Only the lifecycle's transitions (applied, rejected and failed are final),
            # and applied only as the version right after the base.
            pgtrigger.Trigger(
                name="proposal_status_transition",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition("OLD.status IS DISTINCT FROM NEW.status"),
                func=_proposal_transition_check_sql(),
            ),
            # What was reviewed is what gets applied: the proposal itself never changes
            # (execution_id only to NULL, its ON DELETE SET NULL); the review is written
            # while pending or by leaving pending; the applied version and the failure
            # reason only by the transition that sets them; a user's deletion may clear
            # reviewed_by_id.
            pgtrigger.Trigger(
                name="proposal_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "ROW(OLD.tenant_id, OLD.project_id, OLD.document_type, "
                    "OLD.base_version_id, OLD.content, OLD.content_sha256, OLD.impact, "
                    "OLD.affected_sections) IS DISTINCT FROM ROW(NEW.tenant_id, "
                    "NEW.project_id, NEW.document_type, NEW.base_version_id, NEW.content, "
                    "NEW.content_sha256, NEW.impact, NEW.affected_sections) "
                    "OR (NEW.execution_id IS NOT NULL "
                    "AND NEW.execution_id IS DISTINCT FROM OLD.execution_id) "
                    "OR (OLD.status <> 'pending' AND (NEW.reviewed_at IS DISTINCT FROM "
                    "OLD.reviewed_at OR NEW.review_note IS DISTINCT FROM OLD.review_note "
                    "OR (NEW.reviewed_by_id IS NOT NULL "
                    "AND NEW.reviewed_by_id IS DISTINCT FROM OLD.reviewed_by_id))) "
                    "OR (NEW.applied_version_id IS DISTINCT FROM OLD.applied_version_id "
                    "AND NOT (OLD.status = 'approved' AND NEW.status = 'applied')) "
                    "OR (NEW.failure_reason IS DISTINCT FROM OLD.failure_reason "
                    "AND NOT (OLD.status = 'approved' AND NEW.status = 'failed'))"
                ),
                func=(
                    "RAISE EXCEPTION 'change proposal %: its content, base and analysis are "
                    "immutable, and so is its review once written', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_type} proposal ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in PROPOSAL_FINAL_STATUSES


class Decision(TenantOwnedModel):
    """A choice made for a project: the question, the researched options, the one
    selected and why; decided by a user (decided_by) or an agent (execution)."""

    project = models.ForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="decisions",
        db_constraint=False,
        db_index=False,
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
        db_constraint=False,
        db_index=False,
    )
    category = models.CharField(max_length=100)
    question = models.TextField()
    # [{"name": "...", "notes": "..."}, ...]: the options considered, each with its notes.
    options = models.JSONField(default=list)
    # The name of the selected option.
    selected = models.CharField(max_length=200)
    reasoning = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    decided_at = models.DateTimeField(db_default=TransactionNow())

    class Meta(TenantOwnedModel.Meta):
        db_table = "decisions"
        constraints = [
            # The selected option is one of the options: options @> [{"name": selected}].
            models.CheckConstraint(
                condition=Q(options__contains=JSONArray(JSONObject(name=F("selected")))),
                name="decisions_selected_is_an_option",
            ),
        ]
        indexes = [
            # A project's decisions by category, in the order they were made; both
            # project FKs.
            models.Index(
                fields=["project", "category", "decided_at"], name="decisions_proj_cat_idx"
            ),
            # A tenant's decisions of one category across projects; the tenant FK.
            models.Index(
                fields=["tenant", "category", "decided_at"], name="decisions_tenant_cat_idx"
            ),
            # An execution's decisions; both execution FKs' ON DELETE SET NULL.
            models.Index(fields=["execution", "tenant"], name="decisions_execution_idx"),
            # A user's decisions; the user FK's ON DELETE SET NULL.
            models.Index(fields=["decided_by"], name="decisions_decided_by_idx"),
            # options @> '[{"name": "..."}]': decisions that considered an option.
            GinIndex(fields=["options"], name="decisions_options_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.category}: {self.selected}"

    @property
    def decider(self) -> str:
        """Who decided: the user, else the agent of the execution, else unknown."""
        if self.decided_by_id is not None:
            return str(self.decided_by)
        if self.execution_id is not None:
            return f"agent ({self.execution.agent_type})"
        return "unknown"


def _error_recovered_on_insert_sql() -> str:
    same_step = SAME_STEP_SQL.format(a="s", b="f")
    return (
        "SELECT * INTO failed FROM agent_executions WHERE id = NEW.execution_id; "
        "IF NOT FOUND THEN RETURN NEW; END IF; "
        + _step_lock_sql("failed")
        + " IF EXISTS (SELECT 1 FROM agent_executions f JOIN agent_executions s "
        f"ON {same_step} AND s.attempt > f.attempt AND s.status = 'succeeded' "
        "WHERE f.id = NEW.execution_id) THEN NEW.recovered := true; END IF; RETURN NEW;"
    )


class ExecutionError(TenantOwnedModel):
    """One failure of one execution: the step (node), the error and whether a later
    attempt of the same step succeeded (`recovered`, kept by the database)."""

    execution = models.ForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="errors",
        db_constraint=False,
        db_index=False,
    )
    # The step that failed (by default the execution's agent type).
    node = models.CharField(max_length=200)
    error_type = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    # At most EXECUTION_ERROR_TRACEBACK_MAX_CHARS characters (agents.services).
    traceback = models.TextField(blank=True)
    attempt = models.IntegerField(validators=[MinValueValidator(1)])
    # Set by the database once a later attempt of the same step succeeds.
    recovered = models.BooleanField(default=False)
    # What the retry did about it (backoff, a smaller context, another model, ...).
    recovery_strategy = models.CharField(max_length=200, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "execution_errors"
        constraints = [
            # One failure per execution (a failed execution is final); also the index on
            # execution_id for both execution FKs' ON DELETE CASCADE.
            models.UniqueConstraint(
                fields=["execution", "tenant"], name="execution_errors_execution_uniq"
            ),
            models.CheckConstraint(
                condition=Q(attempt__gte=1), name="execution_errors_attempt_gte_1"
            ),
        ]
        indexes = [
            # "Which steps fail?": a tenant's errors by node over time; the tenant FK.
            models.Index(fields=["tenant", "node", "created_at"], name="exec_errors_node_idx"),
            # The open problems: unrecovered errors by node over time.
            models.Index(
                fields=["tenant", "node", "created_at"],
                condition=Q(recovered=False),
                name="exec_errors_unrecovered_idx",
            ),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # A failure recorded after a later attempt already succeeded is recovered.
            pgtrigger.Trigger(
                name="error_recovered_on_insert",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                declare=[("failed", "agent_executions")],
                func=_error_recovered_on_insert_sql(),
            ),
            # A record: only recovery_strategy may change, and recovered only to true.
            pgtrigger.Trigger(
                name="error_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "ROW(OLD.tenant_id, OLD.execution_id, OLD.node, OLD.error_type, "
                    "OLD.message, OLD.traceback, OLD.attempt) IS DISTINCT FROM "
                    "ROW(NEW.tenant_id, NEW.execution_id, NEW.node, NEW.error_type, "
                    "NEW.message, NEW.traceback, NEW.attempt) "
                    "OR (OLD.recovered AND NOT NEW.recovered)"
                ),
                func=(
                    "RAISE EXCEPTION 'execution error % is a record: only recovery_strategy "
                    "may change, and recovered only to true', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node}: {self.error_type} (attempt {self.attempt})"
