"""Writes of agent executions, their sources and errors, conversation messages,
evaluations, decisions and (from agents.proposals) change proposals.

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
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max
from django.db.models.functions import Greatest
from django.utils import timezone

from agents.models import (
    ALLOWED_TRANSITIONS,
    AgentExecution,
    ChangeProposal,
    ConversationMessage,
    Decision,
    EvaluationRun,
    ExecutionError,
    ExecutionIdempotencyKey,
    ExecutionSource,
)
from agents.proposals import change_proposal_apply as change_proposal_apply
from agents.proposals import change_proposal_approve as change_proposal_approve
from agents.proposals import change_proposal_propose as change_proposal_propose
from agents.proposals import change_proposal_reject as change_proposal_reject
from core import partitioning
from core.db import advisory_xact_lock
from core.expressions import ClockTimestamp
from core.hashing import sha256_hex
from core.ids import uuid7, uuid7_floor
from documents.models import Chunk, DocumentVersion, Project
from tenancy.context import require_tenant, system_context, tenant_context

logger = logging.getLogger(__name__)

Status = AgentExecution.Status
RETRYABLE_STATUSES = (Status.FAILED, Status.CANCELLED)
SCORE_MAX = 100


def _clean(
    instance,
    *,
    minimums: Mapping[str, float] | None = None,
    maximums: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    errors: Mapping[str, str] | None = None,
) -> None:
    """full_clean() plus range checks and the given errors, raised together per field.

    Ranges are checked on the cleaned (converted) values, so "-1" is caught like -1.
    Constraints and uniqueness are left to the database (validate_constraints=False): a
    Python pre-check of a unique key would race, and the CHECKs hold anyway. Runs inside
    the tenant's context: foreign key validation reads the related rows.
    """
    collected: dict[str, list[str]] = {
        field: [message] for field, message in (errors or {}).items()
    }
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        collected = error.update_error_dict(collected)
    for field, minimum in (minimums or {}).items():
        value = getattr(instance, field)
        if field not in collected and value is not None and value < minimum:
            collected[field] = [f"{field} must be at least {minimum}."]
    for field, maximum in (maximums or {}).items():
        value = getattr(instance, field)
        if field not in collected and value is not None and value > maximum:
            collected[field] = [f"{field} must be at most {maximum}."]
    if collected:
        raise ValidationError(collected)


# Executions


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
    _clean(execution)
    key = execution.idempotency_key
    if key is not None and (existing := _by_idempotency_key(execution.tenant_id, key)):
        return _same_request(existing, execution)
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
    tenant,
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


def _transition(
    *, tenant_id: uuid.UUID, execution: AgentExecution, to: str, changes: dict[str, Any]
) -> AgentExecution:
    """Move the execution to `to` if its current status allows it, in one UPDATE.

    Runs inside the tenant's context. `changes` are the other columns to write;
    expressions (the database clock) are evaluated by PostgreSQL. The caller's instance
    is refreshed from the row.
    """
    predecessors = sorted(old for old, new in ALLOWED_TRANSITIONS if new == to)
    updated = AgentExecution.objects.filter(
        tenant_id=tenant_id, pk=execution.pk, status__in=predecessors
    ).update(status=to, **changes)
    if not updated:
        current = (
            AgentExecution.objects.filter(tenant_id=tenant_id, pk=execution.pk)
            .values_list("status", flat=True)
            .first()
        )
        raise ValidationError(
            {
                "status": f"Cannot move the execution from {current or 'nowhere'} to {to}; "
                f"only from {' or '.join(predecessors)}."
            }
        )
    execution.refresh_from_db()
    logger.info("execution status changed", extra={"execution_id": str(execution.pk), "status": to})
    return execution


def _completed_now() -> Greatest:
    # Never before started_at, even if the server's clock steps back (the CHECK
    # agent_executions_completed_after_started would refuse it).
    return Greatest(ClockTimestamp(), F("started_at"))


def execution_start(*, tenant, execution: AgentExecution) -> AgentExecution:
    """pending -> running; started_at from the database clock."""
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        return _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.RUNNING,
            changes={"started_at": ClockTimestamp()},
        )


USAGE_MINIMUMS = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0}


def execution_finish(
    *,
    tenant,
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
        _clean(candidate, minimums=USAGE_MINIMUMS)
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
    tenant,
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
        _clean(candidate, errors=missing)
        # All checked before the first write (error_type and message as the execution's).
        _clean(error, exclude=("execution", "error_type", "message"))
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


def execution_cancel(*, tenant, execution: AgentExecution) -> AgentExecution:
    """pending or running -> cancelled."""
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        return _transition(
            tenant_id=tenant_id,
            execution=execution,
            to=Status.CANCELLED,
            changes={"completed_at": _completed_now()},
        )


def execution_retry(
    *, tenant, execution: AgentExecution, recovery_strategy: str | None = None
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
        _clean(error, exclude=("execution",))
        error.save(update_fields=["recovery_strategy"])


# Provenance

_MISSING = object()


def _get(result: Mapping | object, name: str, default: Any = _MISSING) -> Any:
    if isinstance(result, Mapping):
        return result.get(name, default)
    return getattr(result, name, default)


def _result_chunk_id(result: Mapping | object) -> Any:
    chunk = _get(result, "chunk", None)
    if chunk is not None:
        return getattr(chunk, "pk", chunk)
    return _get(result, "chunk_id", None)


def execution_record_sources(
    *, tenant, execution: AgentExecution, results: Iterable[Mapping | object]
) -> list[ExecutionSource]:
    """Record the chunks an execution retrieved: rank, score, hash and content snapshot.

    Each result is a dict or object with `chunk` (or `chunk_id`), `score`, and optionally
    `rank` (default: its 1-based position in `results`) and `chunk_sha256` (default: the
    SHA-256 of the chunk's content; if given it must match, so a chunk that changed since
    retrieval is refused). Chunks are read in the tenant's context: another tenant's chunk
    is not found.
    """
    tenant_id = require_tenant(tenant, execution=execution)
    results = list(results)
    chunk_ids = []
    for result in results:
        chunk = _get(result, "chunk", None)
        if isinstance(chunk, Chunk):
            require_tenant(tenant_id, chunk=chunk)
        chunk_id = _result_chunk_id(result)
        if chunk_id is None:
            raise ValidationError({"chunk": "Every result names its chunk."})
        chunk_ids.append(uuid.UUID(str(chunk_id)))
    if len(set(chunk_ids)) != len(chunk_ids):
        raise ValidationError({"chunk": "A chunk is listed more than once."})

    with tenant_context(tenant_id):
        chunks = Chunk.objects.filter(tenant_id=tenant_id, pk__in=chunk_ids).select_related(
            "document"
        )
        by_id = {chunk.pk: chunk for chunk in chunks}
        missing = [str(chunk_id) for chunk_id in chunk_ids if chunk_id not in by_id]
        if missing:
            raise ValidationError({"chunk": f"Chunks not found: {', '.join(missing)}."})
        recorded = set(
            ExecutionSource.objects.filter(
                tenant_id=tenant_id, execution=execution, chunk_id__in=chunk_ids
            ).values_list("chunk_id", flat=True)
        )
        if recorded:
            raise ValidationError(
                {"chunk": f"Already recorded for this execution: {', '.join(map(str, recorded))}."}
            )

        sources = []
        for position, (result, chunk_id) in enumerate(zip(results, chunk_ids, strict=True), 1):
            chunk = by_id[chunk_id]
            content_sha256 = sha256_hex(chunk.content)
            given_sha256 = _get(result, "chunk_sha256", None)
            if given_sha256 is not None and given_sha256 != content_sha256:
                raise ValidationError(
                    {"chunk_sha256": f"Chunk {chunk_id} changed since it was retrieved."}
                )
            rank = _get(result, "rank", None)
            source = ExecutionSource(
                tenant_id=tenant_id,
                execution=execution,
                chunk=chunk,
                rank=position if rank is None else rank,
                score=_get(result, "score", None),
                chunk_sha256=content_sha256,
                document_id=chunk.document_id,
                document_title=chunk.document.title,
                ordinal=chunk.ordinal,
                content=chunk.content,
            )
            # The execution and chunk were just read in this transaction.
            _clean(source, minimums={"rank": 1}, exclude=("tenant", "execution", "chunk"))
            sources.append(source)
        ExecutionSource.objects.bulk_create(sources)
    logger.info(
        "execution sources recorded",
        extra={"execution_id": str(execution.pk), "sources": len(sources)},
    )
    return sources


# Conversations


def message_add(
    *,
    tenant,
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
        _clean(message)
        message.save(force_insert=True)
    return message


# Evaluations


def evaluation_record(
    *,
    tenant,
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
        _clean(evaluation, minimums={"score": 0}, maximums={"score": SCORE_MAX})
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
    tenant,
    project: Project,
    category: str,
    question: str,
    options: list[dict],
    selected: str,
    reasoning: str = "",
    execution: AgentExecution | None = None,
    decided_by=None,
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
        _clean(decision, errors=errors, exclude=() if decided_at else ("decided_at",))
        decision.save(force_insert=True)
    logger.info(
        "decision recorded",
        extra={"decision_id": str(decision.pk), "category": category, "selected": selected},
    )
    return decision


# Run history partitions (core.partitioning): agent_executions is split by month.

EXECUTIONS_TABLE = AgentExecution._meta.db_table


def execution_partitions_ensure(*, ahead: int, now: datetime | None = None) -> list[str]:
    """Create agent_executions' partitions from this month to `ahead` months on; the new ones.

    Idempotent. As the owner (system_context): only the owner may create partitions.
    """
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 120:
        raise ValidationError({"ahead": "A whole number of months from 0 to 120."})
    current = partitioning.month_start(now or timezone.now())
    with system_context("create agent_executions partitions"):
        with connection.cursor() as cursor:
            return partitioning.ensure_months(
                cursor, EXECUTIONS_TABLE, current, partitioning.add_months(current, ahead)
            )


def execution_history_retain(*, months: int, now: datetime | None = None) -> dict[str, int]:
    """Remove the run history older than the last `months` months (this one included).

    Whole months: their partitions are detached and dropped, and everything that
    depends on their executions goes by its foreign key's rule (sources, errors,
    evaluations and idempotency keys deleted; messages, decisions and final proposals
    keep their row without the execution). Refused, changing nothing, while a change
    proposal under review (pending, approved) comes from one of those executions or an
    export is being built (pending, running) for a project that has some. One
    transaction: all of it or nothing. Returns the rows removed or cleared per table.
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValidationError({"retain_months": "A whole number of months, 1 or more."})
    cutoff = partitioning.add_months(partitioning.month_start(now or timezone.now()), 1 - months)
    upper = uuid7_floor(cutoff)
    with system_context("agent_executions retention"):
        # The lock first: no execution of those months may appear, nor be pointed at by
        # a new proposal, between the checks and the drop.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {EXECUTIONS_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        reviewing = ChangeProposal.objects.filter(
            execution_id__lt=upper,
            status__in=[ChangeProposal.Status.PENDING, ChangeProposal.Status.APPROVED],
        ).count()
        # The exports table by its contract name (DESIGN.md section 4): the exports app
        # builds on documents, not on agents, so neither imports the other.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM exports e WHERE e.status IN ('pending', 'running') "
                "AND EXISTS (SELECT 1 FROM agent_executions x WHERE x.tenant_id = e.tenant_id "
                "AND x.project_id = e.project_id AND x.id < %s)",
                [upper],
            )
            building = cursor.fetchone()[0]
        if reviewing or building:
            raise ValidationError(
                {
                    "retain_months": f"History before {cutoff:%Y-%m} is still needed: "
                    f"{reviewing} change proposals under review come from its executions "
                    f"and {building} exports are being built for projects with executions "
                    "in it. Nothing was removed."
                }
            )
        with connection.cursor() as cursor:
            removed = partitioning.drop_months_before(cursor, EXECUTIONS_TABLE, cutoff)
    logger.info("execution history retained", extra={"cutoff": cutoff.isoformat(), **removed})
    return removed
