"""Execution errors: each failure of an execution, and whether a later attempt of the
same step recovered it.
"""

import pgtrigger
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from agents.models.executions import SAME_STEP_SQL, AgentExecution, step_lock_sql
from tenancy.models import TenantForeignKey, TenantOwnedModel


def _error_recovered_on_insert_sql() -> str:
    # By tenant_id and id: on a Citus cluster a trigger may only query its own
    # tenant's (co-located) shards.
    same_step = SAME_STEP_SQL.format(a="s", b="f")
    return (
        "SELECT * INTO failed FROM agent_executions "
        "WHERE tenant_id = NEW.tenant_id AND id = NEW.execution_id; "
        "IF NOT FOUND THEN RETURN NEW; END IF; "
        + step_lock_sql("failed")
        + " IF EXISTS (SELECT 1 FROM agent_executions f JOIN agent_executions s "
        f"ON {same_step} AND s.attempt > f.attempt AND s.status = 'succeeded' "
        "WHERE f.tenant_id = NEW.tenant_id AND f.id = NEW.execution_id) "
        "THEN NEW.recovered := true; END IF; RETURN NEW;"
    )


class ExecutionError(TenantOwnedModel):
    """One failure of one execution: the step (node), the error and whether a later
    attempt of the same step succeeded (`recovered`, kept by the database)."""

    execution = TenantForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="errors",
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
