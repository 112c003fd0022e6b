"""New executions: created once per idempotency key, and retried as a new attempt; both
refused once the tenant's monthly quota is reached (agents.services.usage)."""

from __future__ import annotations

import copy
import logging
import uuid

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from agents.models import AgentExecution, ExecutionError, ExecutionIdempotencyKey
from agents.services._common import clean
from agents.services.usage import require_within_quota
from core.ids import uuid7
from documents.models import Project
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = (AgentExecution.Status.FAILED, AgentExecution.Status.CANCELLED)


def _by_idempotency_key(tenant_id: uuid.UUID, key: str) -> AgentExecution | None:
    # Through the key's own unique index, then by primary key: agent_executions has no
    # index on the key (its uniqueness lives in execution_idempotency_keys).
    execution_id = (
        ExecutionIdempotencyKey.objects.filter(tenant_id=tenant_id, idempotency_key=key)
        .values_list("execution_id", flat=True)
        .first()
    )
    if execution_id is None:
        return None
    return AgentExecution.objects.filter(tenant_id=tenant_id, pk=execution_id).first()


def _same_request(existing: AgentExecution, requested: AgentExecution) -> AgentExecution:
    if (existing.project_id, existing.agent_type) != (
        requested.project_id,
        requested.agent_type,
    ):
        raise ValidationError(
            {
                "idempotency_key": "This key was already used for an execution of another "
                "project or agent type."
            }
        )
    return existing


def _insert_once(execution: AgentExecution) -> AgentExecution:
    """Insert the execution, or return the tenant's execution holding its idempotency key.

    Race-safe: the unique key agent_executions_tenant_idempotency_uniq decides (on
    execution_idempotency_keys, written by the insert's trigger).
    The loser's INSERT waits for the winner's commit, fails inside a savepoint (so the
    surrounding transaction stays usable) and reads the winner's row. Must run inside
    the tenant's context.
    """
    # Validated first: the key itself goes into the lookup, so it must be storable text.
    clean(execution)
    key = execution.idempotency_key
    if key is not None and (existing := _by_idempotency_key(execution.tenant_id, key)):
        return _same_request(existing, execution)
    # A new execution, so the tenant's quota decides (agents.services.usage); a request
    # answered by an existing one above is no new usage.
    require_within_quota(execution.tenant_id)
    try:
        with transaction.atomic():
            execution.save(force_insert=True)
    except IntegrityError:
        existing = _by_idempotency_key(execution.tenant_id, key) if key is not None else None
        if existing is None:
            raise
        logger.info(
            "execution idempotency key taken concurrently",
            extra={"execution_id": str(existing.pk), "tenant_id": str(execution.tenant_id)},
        )
        return _same_request(existing, execution)
    logger.info(
        "execution created",
        extra={
            "execution_id": str(execution.pk),
            "correlation_id": str(execution.correlation_id),
            "agent_type": execution.agent_type,
            "attempt": execution.attempt,
        },
    )
    return execution


def execution_create(
    *,
    tenant: TenantRef,
    project: Project,
    agent_type: str,
    input_data: dict | None = None,
    correlation_id: uuid.UUID | None = None,
    parent: AgentExecution | None = None,
    idempotency_key: str | None = None,
    model: str = "",
) -> AgentExecution:
    """A new pending execution; with an idempotency key, the tenant's existing one if any.

    A step (with a parent) belongs to its parent's project and run: its correlation_id
    is the parent's. Without parent or correlation_id the execution starts a new run.
    """
    tenant_id = require_tenant(tenant, project=project, parent=parent)
    if parent is not None:
        if parent.project_id != project.pk:
            raise ValidationError({"parent": "A step belongs to its parent's project."})
        if correlation_id is not None and correlation_id != parent.correlation_id:
            raise ValidationError(
                {"correlation_id": "A step belongs to its parent's run (its correlation_id)."}
            )
        correlation_id = parent.correlation_id
    execution = AgentExecution(
        tenant_id=tenant_id,
        project=project,
        agent_type=agent_type,
        input_data={} if input_data is None else input_data,
        correlation_id=correlation_id or uuid7(),
        parent=parent,
        idempotency_key=idempotency_key or None,
        model=model,
    )
    with tenant_context(tenant_id):
        return _insert_once(execution)


def execution_update(
    *, tenant: TenantRef, execution: AgentExecution, input_data: dict, model: str
) -> AgentExecution:
    """A pending execution's input and model, what may be corrected before it runs.

    One conditional UPDATE (`WHERE status = 'pending'`): refused naming `status` once the
    execution has left pending, as a worker may have started it since it was read.
    """
    tenant_id = require_tenant(tenant, execution=execution)
    candidate = copy.copy(execution)
    candidate.input_data, candidate.model = input_data, model
    with tenant_context(tenant_id):
        clean(candidate)
        pending = AgentExecution.objects.filter(
            tenant_id=tenant_id, pk=execution.pk, status=AgentExecution.Status.PENDING
        )
        if not pending.update(input_data=candidate.input_data, model=candidate.model):
            raise ValidationError(
                {"status": "The execution is no longer pending; it cannot be changed."}
            )
    execution.input_data, execution.model = candidate.input_data, candidate.model
    logger.info("execution updated", extra={"execution_id": str(execution.pk)})
    return execution


def execution_retry(
    *, tenant: TenantRef, execution: AgentExecution, recovery_strategy: str | None = None
) -> AgentExecution:
    """A new pending attempt of a failed or cancelled execution, in the same run.

    Same project, agent type, input, model, parent and correlation_id; attempt and
    retry_count one more than the previous attempt's. Idempotent: the new row holds the
    idempotency key "retry:<previous id>", so retrying one attempt twice (or from two
    workers at once) returns the same new attempt. `recovery_strategy` (what this retry
    does differently) is written on the previous attempt's error record.
    """
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        # Terminal states are final (trigger), so a status read once stays true.
        previous = AgentExecution.objects.filter(tenant_id=tenant_id, pk=execution.pk).first()
        if previous is None or previous.status not in RETRYABLE_STATUSES:
            current = previous.status if previous else "missing"
            raise ValidationError(
                {"status": f"Only a failed or cancelled execution can be retried, not {current}."}
            )
        if recovery_strategy is not None:
            _record_recovery_strategy(tenant_id, previous, recovery_strategy)
        retry = AgentExecution(
            tenant_id=tenant_id,
            project_id=previous.project_id,
            agent_type=previous.agent_type,
            correlation_id=previous.correlation_id,
            parent_id=previous.parent_id,
            attempt=previous.attempt + 1,
            retry_count=previous.retry_count + 1,
            input_data=previous.input_data,
            model=previous.model,
            idempotency_key=f"retry:{previous.pk}",
        )
        return _insert_once(retry)


def _record_recovery_strategy(
    tenant_id: uuid.UUID, execution: AgentExecution, strategy: str
) -> None:
    for error in ExecutionError.objects.filter(tenant_id=tenant_id, execution=execution):
        error.recovery_strategy = strategy
        clean(error, exclude=("execution",))
        error.save(update_fields=["recovery_strategy"])
