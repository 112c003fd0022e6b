"""Agent executions: one attempt of one agent step, its lifecycle and its idempotency
key; and the SQL for "the same step" of a run, which execution errors share.
"""

from datetime import timedelta

import pgtrigger
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q

from agents.models.lifecycle import transition_allowed_sql, transition_refused_sql
from agents.models.usage import USAGE_ROLLUP_TRIGGERS
from core.models import JSONField
from documents.models import project_live_trigger
from tenancy.models import TenantForeignKey, TenantOwnedModel


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
    return (
        f"IF {transition_allowed_sql(ALLOWED_TRANSITIONS)} THEN RETURN NEW; END IF; "
        f"{transition_refused_sql('agent execution')} RETURN NULL;"
    )


# The lock that serialises, per step of a run, recording a failure and an attempt's
# success: without it, a failure recorded while a later attempt succeeds concurrently
# would be missed by both sides (each reads before the other commits). The same key
# format as core.db.locks.advisory_xact_lock, so Python code can take it too.
def step_lock_sql(row: str) -> str:
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
        step_lock_sql("NEW")
        + " UPDATE execution_errors e SET recovered = true FROM agent_executions x "
        "WHERE e.execution_id = x.id AND e.tenant_id = NEW.tenant_id AND NOT e.recovered "
        f"AND {same_step} AND x.attempt < NEW.attempt; RETURN NULL;"
    )


class AgentExecution(TenantOwnedModel):
    """One attempt of one agent step; a run is all rows sharing a correlation_id."""

    Status = ExecutionStatus

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="executions",
    )
    agent_type = models.CharField(max_length=100)
    correlation_id = models.UUIDField()
    parent = TenantForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
    )
    attempt = models.IntegerField(default=1, validators=[MinValueValidator(1)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input_data = JSONField(default=dict, blank=True)
    output_data = JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    retry_count = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    completion_tokens = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    produced_version = TenantForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by",
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
            # ... and by error type or words of the error message ("TimeoutError").
            GinIndex(
                fields=["error_type"], name="agent_exec_error_type_trgm", opclasses=["gin_trgm_ops"]
            ),
            GinIndex(
                fields=["error_message"],
                name="agent_exec_error_msg_trgm",
                opclasses=["gin_trgm_ops"],
            ),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            project_live_trigger(),
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
            # The usage rollup (execution_usage_daily): each write adds its difference.
            *USAGE_ROLLUP_TRIGGERS,
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

    execution = TenantForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="+",
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
