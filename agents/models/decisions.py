"""Decisions: the choices made for a project, by a user or by an agent."""

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import JSONArray, JSONObject

from agents.models.executions import AgentExecution
from core.models import JSONField, TransactionNow
from tenancy.models import TenantForeignKey, TenantOwnedModel


class Decision(TenantOwnedModel):
    """A choice made for a project: the question, the researched options, the one
    selected and why; decided by a user (decided_by) or an agent (execution)."""

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="decisions",
    )
    execution = TenantForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
    )
    category = models.CharField(max_length=100)
    question = models.TextField()
    # [{"name": "...", "notes": "..."}, ...]: the options considered, each with its notes.
    options = JSONField(default=list)
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
        if self.execution is not None:  # None without a query when execution_id is
            return f"agent ({self.execution.agent_type})"
        return "unknown"
