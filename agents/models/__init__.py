"""Agent executions: runs, their steps, retries and provenance; one module per concern.

Callers import from here (`from agents.models import AgentExecution`).

- executions: executions (one attempt of one step), their lifecycle and idempotency keys,
  and the SQL for "the same step" of a run;
- sources: the chunks an execution retrieved, with a snapshot of each (provenance);
- conversations: a project's conversation messages;
- evaluations: scores of document versions and executions;
- review: change proposals and the lifecycle of their review;
- decisions: choices made for a project, by a user or an agent;
- errors: execution errors, recovered once a later attempt of the step succeeds;
- stale: the chunks an execution read that changed since (flagged by the database);
- usage: the usage rollup per tenant, day and model (kept by the database), and quotas.
"""

# isort: off
# In the order the models were defined in when they were one file: Django registers them in
# import order, and that order is apps.get_models()'s and the deletion collector's (the order
# of each model's related objects), so the split changes neither.
from agents.models.executions import (
    ALLOWED_TRANSITIONS,
    AgentExecution,
    ExecutionIdempotencyKey,
    ExecutionStatus,
)
from agents.models.sources import ExecutionSource
from agents.models.conversations import ConversationMessage, MessageRole
from agents.models.evaluations import EvaluationRun
from agents.models.review import (
    PROPOSAL_TRANSITIONS,
    ChangeProposal,
    ProposalStatus,
)
from agents.models.decisions import Decision
from agents.models.errors import ExecutionError
from agents.models.stale import StaleReason, StaleSource
from agents.models.usage import ExecutionUsageDaily, TenantQuota

# isort: on

__all__ = [
    "ALLOWED_TRANSITIONS",
    "PROPOSAL_TRANSITIONS",
    "AgentExecution",
    "ChangeProposal",
    "ConversationMessage",
    "Decision",
    "EvaluationRun",
    "ExecutionError",
    "ExecutionIdempotencyKey",
    "ExecutionSource",
    "ExecutionStatus",
    "ExecutionUsageDaily",
    "MessageRole",
    "ProposalStatus",
    "StaleReason",
    "StaleSource",
    "TenantQuota",
]
