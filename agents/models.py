"""Agent executions: runs, their steps, retries and provenance."""

from datetime import timedelta

import pgtrigger
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q

from core.expressions import Sha256Hex
from core.hashing import SHA256_HEX_PATTERN
from core.models import TenantOwnedModel


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


class AgentExecution(TenantOwnedModel):
    """One attempt of one agent step; a run is all rows sharing a correlation_id."""

    Status = ExecutionStatus

    project = models.ForeignKey(
        "documents.Project", on_delete=models.CASCADE, related_name="executions", db_index=False
    )
    agent_type = models.CharField(max_length=100)
    correlation_id = models.UUIDField()
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
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
            # Retrying with the same key returns the first execution.
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="agent_executions_tenant_idempotency_uniq",
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


class ExecutionSource(TenantOwnedModel):
    """A chunk an execution retrieved, with its rank, score and a snapshot of its content.

    The snapshot (content, its hash, the document and ordinal) keeps provenance exact
    after the chunk or its document is deleted and chunk_id is set to NULL.
    """

    execution = models.ForeignKey(
        AgentExecution, on_delete=models.CASCADE, related_name="sources", db_index=False
    )
    chunk = models.ForeignKey(
        "documents.Chunk",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="execution_sources",
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
            # Also the index on execution_id: an execution's sources.
            models.UniqueConstraint(
                fields=["execution", "chunk"], name="execution_sources_execution_chunk_uniq"
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
        "documents.Project", on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
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
        "documents.Project", on_delete=models.CASCADE, related_name="evaluations", db_index=False
    )
    document_version = models.ForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
        db_index=False,
    )
    execution = models.ForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
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
