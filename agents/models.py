"""Agent executions: runs, their steps, retries and provenance."""

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Q

from core.models import TenantOwnedModel


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class AgentExecution(TenantOwnedModel):
    """One attempt of one agent step; a run is all rows sharing a correlation_id."""

    Status = ExecutionStatus

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)

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
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input_data = models.JSONField(default=dict, blank=True)
    output_data = models.JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    retry_count = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
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
            models.Index(fields=["parent"], name="agent_exec_parent_idx"),
            models.Index(fields=["produced_version"], name="agent_exec_produced_idx"),
            GinIndex(fields=["input_data"], name="agent_exec_input_gin"),
            GinIndex(fields=["output_data"], name="agent_exec_output_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_type} #{self.attempt} ({self.status})"
