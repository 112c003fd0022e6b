"""Status changes of an execution: start, finish, fail (with its error record), cancel.

An execution moves pending -> running -> succeeded | failed | cancelled (or pending ->
cancelled). Each transition is one conditional UPDATE (`WHERE status IN (<allowed
predecessors>)`): of two concurrent finishers exactly one matches the row, the other
gets a ValidationError naming `status`. The database trigger on agent_executions
refuses every other change of status, whoever writes it.
"""

from __future__ import annotations

import copy
import logging
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F
from django.db.models.functions import Greatest

from agents.models import ALLOWED_TRANSITIONS, AgentExecution, ExecutionError
from agents.services._common import clean
from agents.services.lifecycle import move_status
from core.expressions import StatementTimestamp
from documents.models import DocumentVersion
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef

logger = logging.getLogger(__name__)

Status = AgentExecution.Status


def _transition(
    *, tenant_id: uuid.UUID, execution: AgentExecution, to: str, changes: dict[str, Any]
) -> AgentExecution:
    """Move the execution to `to` with `changes`, in one UPDATE (move_status), and log it."""
    move_status(
        execution,
        tenant_id=tenant_id,
        to=to,
        transitions=ALLOWED_TRANSITIONS,
        changes=changes,
        noun="execution",
    )
    logger.info("execution status changed", extra={"execution_id": str(execution.pk), "status": to})
    return execution


def _completed_now() -> Greatest:
    # Never before started_at, even if the server's clock steps back (the CHECK
    # agent_executions_completed_after_started would refuse it).
    return Greatest(StatementTimestamp(), F("started_at"))


def execution_start(*, tenant: TenantRef, execution: AgentExecution) -> AgentExecution:
    """pending -> running; started_at from the database clock."""
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        return _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.RUNNING,
            changes={"started_at": StatementTimestamp()},
        )


def execution_finish(
    *,
    tenant: TenantRef,
    execution: AgentExecution,
    output_data: dict | None = None,
    model: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: Decimal | float | str = Decimal(0),
    produced_version: DocumentVersion | None = None,
) -> AgentExecution:
    """running -> succeeded, with its output, usage and the document version it wrote.

    `model=None` keeps the model the execution was created with.
    """
    tenant_id = require_tenant(tenant, execution=execution, produced_version=produced_version)
    if produced_version is not None and produced_version.project_id != execution.project_id:
        raise ValidationError(
            {"produced_version": "The produced version belongs to another project."}
        )
    candidate = copy.copy(execution)
    candidate.output_data = {} if output_data is None else output_data
    candidate.model = execution.model if model is None else model
    candidate.prompt_tokens = prompt_tokens
    candidate.completion_tokens = completion_tokens
    candidate.cost_usd = cost_usd
    candidate.produced_version = produced_version
    with tenant_context(tenant_id):
        clean(candidate)
        return _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.SUCCEEDED,
            changes={
                "output_data": candidate.output_data,
                "model": candidate.model,
                "prompt_tokens": candidate.prompt_tokens,
                "completion_tokens": candidate.completion_tokens,
                "cost_usd": candidate.cost_usd,
                "produced_version": produced_version,
                "completed_at": _completed_now(),
            },
        )


TRUNCATED_MARKER = "[... {} characters cut ...]\n"


def bounded_traceback(text: str) -> str:
    """`text` within EXECUTION_ERROR_TRACEBACK_MAX_CHARS characters: a longer one keeps
    its end (where the exception is), after a line saying how much was cut."""
    limit = settings.EXECUTION_ERROR_TRACEBACK_MAX_CHARS
    if len(text) <= limit:
        return text
    # Room left by the longest marker it could need, so marker and tail fit the limit.
    room = limit - len(TRUNCATED_MARKER.format(len(text)))
    if room <= 0:
        return text[len(text) - limit :]
    return TRUNCATED_MARKER.format(len(text) - room) + text[-room:]


def execution_fail(
    *,
    tenant: TenantRef,
    execution: AgentExecution,
    error_type: str,
    error_message: str = "",
    node: str | None = None,
    traceback: str = "",
    recovery_strategy: str = "",
) -> AgentExecution:
    """running -> failed, saying what failed, and one execution_errors record of it.

    `node` is the step that failed (default: the execution's agent type); `traceback`
    is kept to EXECUTION_ERROR_TRACEBACK_MAX_CHARS (its end); `recovery_strategy` says
    what a retry will do (execution_retry can also set it). The record's `recovered`
    turns true, by the database, once a later attempt of the same step succeeds.
    """
    tenant_id = require_tenant(tenant, execution=execution)
    candidate = copy.copy(execution)
    candidate.error_type = error_type
    candidate.error_message = error_message
    if not isinstance(traceback, str):
        raise ValidationError({"traceback": "The traceback is text."})
    error = ExecutionError(
        tenant_id=tenant_id,
        execution=execution,
        node=execution.agent_type if node is None else node,
        error_type=error_type,
        message=error_message,
        traceback=bounded_traceback(traceback),
        attempt=execution.attempt,
        recovery_strategy=recovery_strategy,
    )
    with tenant_context(tenant_id):
        missing = {"error_type": "A failed execution names its error."} if not error_type else {}
        clean(candidate, errors=missing)
        # All checked before the first write (error_type and message as the execution's).
        clean(error, exclude=("execution", "error_type", "message"))
        _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.FAILED,
            changes={
                "error_type": candidate.error_type,
                "error_message": candidate.error_message,
                "completed_at": _completed_now(),
            },
        )
        error.save(force_insert=True)
    logger.info(
        "execution error recorded",
        extra={"execution_id": str(execution.pk), "node": error.node, "attempt": error.attempt},
    )
    return execution


def execution_cancel(*, tenant: TenantRef, execution: AgentExecution) -> AgentExecution:
    """pending or running -> cancelled."""
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        return _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.CANCELLED,
            changes={"completed_at": _completed_now()},
        )
