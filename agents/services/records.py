"""A project's records: conversation messages, evaluations and decisions."""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import Max
from django.utils import timezone

from agents.models import AgentExecution, ConversationMessage, Decision, EvaluationRun
from agents.services._common import clean
from core.db.locks import advisory_xact_lock
from documents.models import DocumentVersion, Project
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

# Conversations


def message_add(
    *,
    tenant: TenantRef,
    project: Project,
    role: str,
    content: str,
    execution: AgentExecution | None = None,
    metadata: dict | None = None,
) -> ConversationMessage:
    """Append a message to a project's conversation, optionally tied to an execution."""
    tenant_id = require_tenant(tenant, project=project, execution=execution)
    if execution is not None and execution.project_id != project.pk:
        raise ValidationError({"execution": "The execution belongs to another project."})
    with tenant_context(tenant_id):
        # Writers of one conversation queue here: positions come out 1..N in commit order.
        advisory_xact_lock(f"conversation_messages:{project.pk}")
        last = ConversationMessage.objects.filter(tenant_id=tenant_id, project=project).aggregate(
            last=Max("position")
        )["last"]
        message = ConversationMessage(
            tenant_id=tenant_id,
            project=project,
            execution=execution,
            position=(last or 0) + 1,
            role=role,
            content=content,
            metadata={} if metadata is None else metadata,
        )
        clean(message)
        message.save(force_insert=True)
    return message


# Evaluations


def evaluation_record(
    *,
    tenant: TenantRef,
    score: float,
    document_version: DocumentVersion | None = None,
    execution: AgentExecution | None = None,
    metrics: dict | None = None,
    evaluator: str = "",
) -> EvaluationRun:
    """Score one document version or one execution (0..100); its project is the target's."""
    tenant_id = require_tenant(tenant, document_version=document_version, execution=execution)
    if (document_version is None) == (execution is None):
        message = "Evaluate exactly one of a document version or an execution."
        raise ValidationError({"document_version": message, "execution": message})
    target = document_version or execution
    assert target is not None  # exactly one of them, checked above
    evaluation = EvaluationRun(
        tenant_id=tenant_id,
        project_id=target.project_id,
        document_version=document_version,
        execution=execution,
        evaluator=evaluator,
        metrics={} if metrics is None else metrics,
        score=score,
    )
    with tenant_context(tenant_id):
        clean(evaluation)
        evaluation.save(force_insert=True)
    return evaluation


# Decisions


def decision_options_errors(options: object, selected: str) -> dict[str, str]:
    """Errors of a decision's options and selection, by field (empty when they are fine)."""
    if not isinstance(options, list) or not options:
        return {"options": 'The options are a non-empty list of {"name", "notes"} objects.'}
    names = []
    for index, option in enumerate(options):
        name = option.get("name") if isinstance(option, dict) else None
        if not isinstance(name, str) or not name.strip():
            return {"options": f"Option {index + 1} has no name (a non-empty string)."}
        notes = option.get("notes", "")
        if not isinstance(notes, str):
            return {"options": f"The notes of option {name!r} are text."}
        names.append(name)
    if len(set(names)) != len(names):
        return {"options": "Two options have the same name."}
    if selected not in names:
        return {"selected": f"The selected option is one of the options: {', '.join(names)}."}
    return {}


def decision_record(
    *,
    tenant: TenantRef,
    project: Project,
    category: str,
    question: str,
    options: list[dict],
    selected: str,
    reasoning: str = "",
    execution: AgentExecution | None = None,
    decided_by: User | None = None,
    decided_at: datetime | None = None,
) -> Decision:
    """Record a decision of a project: the question, the options considered (each a dict
    with a `name` and its `notes`), the name of the selected one and the reasoning.

    Decided by a user (`decided_by`) or by an agent (its `execution`), or both: one is
    required. `decided_at` defaults to now (the database's clock).
    """
    tenant_id = require_tenant(tenant, project=project, execution=execution)
    errors = decision_options_errors(options, selected)
    if execution is not None and execution.project_id != project.pk:
        errors["execution"] = "The execution belongs to another project."
    if decided_by is None and execution is None:
        errors["decided_by"] = "A decision is made by a user (decided_by) or an agent (execution)."
    if decided_at is not None and timezone.is_naive(decided_at):
        errors["decided_at"] = "An aware datetime (with a time zone)."
    decision = Decision(
        tenant_id=tenant_id,
        project=project,
        execution=execution,
        category=category,
        question=question,
        options=options,
        selected=selected,
        reasoning=reasoning,
        decided_by=decided_by,
    )
    if decided_at is not None:
        decision.decided_at = decided_at
    with tenant_context(tenant_id):
        clean(decision, errors=errors, exclude=() if decided_at else ("decided_at",))
        decision.save(force_insert=True)
    logger.info(
        "decision recorded",
        extra={"decision_id": str(decision.pk), "category": category, "selected": selected},
    )
    return decision
