"""Evaluations: the scores given to document versions and executions."""

from django.db import models
from django.db.models import F, Q

from agents.models.executions import AgentExecution
from core.models import JSONField
from tenancy.models import TenantForeignKey, TenantOwnedModel


class EvaluationRun(TenantOwnedModel):
    """A score given to one document version or one execution, with its metrics."""

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="evaluations",
    )
    document_version = TenantForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
    )
    execution = TenantForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
    )
    evaluator = models.CharField(max_length=200, blank=True)
    metrics = JSONField(default=dict, blank=True)
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
