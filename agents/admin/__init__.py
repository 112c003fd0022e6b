"""Admin for agent executions and their records, conversations, evaluations and reviews.

Rights: tenancy.admin_roles. New rows go through agents.services, and lifecycles move only
through its actions. Versions and executions of soft-deleted projects are not offered as
choices (nor are such projects: documents.admin.projects.ProjectAdmin.limit_choices). One
module per concern; importing this package registers them all:

- executions: agent executions (a run's step tree, its sources, cancel and retry), and how
  an execution is shown wherever it is listed;
- records: what an execution leaves behind, read-only: idempotency keys, sources, errors,
  and the flags of sources that changed since;
- conversations: a project's conversation messages and evaluation runs;
- review: change proposals (approve, reject, apply) and decisions;
- usage: the usage page (the rollup per tenant, model and day, with its chart) and the
  tenants' quotas;
- project_sections: the agents' sections of a project's page;
- page_panels: the agents' panels on a version's page (the run that wrote it, what it
  read) and on a knowledge document's page (the outputs built on it).
"""

# These register no admin: they add the agents' sections and panels to documents' pages.
from agents.admin import page_panels, project_sections  # noqa: F401
from agents.admin.conversations import ConversationMessageAdmin, EvaluationRunAdmin
from agents.admin.executions import AgentExecutionAdmin, AgentTypeFilter, duration_text
from agents.admin.records import (
    ExecutionErrorAdmin,
    ExecutionIdempotencyKeyAdmin,
    ExecutionSourceAdmin,
    StaleSourceAdmin,
)
from agents.admin.review import ChangeProposalAdmin, DecisionAdmin
from agents.admin.usage import ExecutionUsageDailyAdmin, TenantQuotaAdmin

__all__ = [
    "AgentExecutionAdmin",
    "AgentTypeFilter",
    "ChangeProposalAdmin",
    "ConversationMessageAdmin",
    "DecisionAdmin",
    "EvaluationRunAdmin",
    "ExecutionErrorAdmin",
    "ExecutionIdempotencyKeyAdmin",
    "ExecutionSourceAdmin",
    "ExecutionUsageDailyAdmin",
    "StaleSourceAdmin",
    "TenantQuotaAdmin",
    "duration_text",
]
