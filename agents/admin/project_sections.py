"""The agents' sections of a project's page: its runs, those built on changed sources and
which chunks changed, conversation, evaluations, change proposals and decisions
(documents.admin.add_project_sections)."""

from __future__ import annotations

from agents.admin.conversations import evaluation_target
from agents.admin.executions import (
    EXECUTION_HEAVY_COLUMNS,
    duration_text,
    execution_sources_badge,
    run_correlation_link,
    started_text,
    status_badge,
)
from agents.models import (
    AgentExecution,
    ChangeProposal,
    ConversationMessage,
    Decision,
    EvaluationRun,
    StaleSource,
)
from core.admin import preview_text
from core.admin_sections import RelatedRows
from documents.admin import add_project_sections, version_label

add_project_sections(
    RelatedRows(
        title="Agent runs",
        model=AgentExecution,
        field="project",
        columns=(
            ("agent", lambda execution: execution.agent_type),
            ("status", status_badge),
            ("started", started_text),
            ("duration", lambda execution: duration_text(execution.duration)),
            ("run", run_correlation_link),
            ("model", lambda execution: execution.model or "—"),
        ),
        # A run is its root step; "see all" lists the roots too.
        filters={"parent__isnull": True},
        prepare=lambda executions: executions.defer(*EXECUTION_HEAVY_COLUMNS),
    ),
    RelatedRows(
        title="Executions built on changed sources",
        model=AgentExecution,
        field="project",
        columns=(
            ("agent", lambda execution: execution.agent_type),
            ("sources", execution_sources_badge),
            ("status", status_badge),
            ("started", started_text),
            ("run", run_correlation_link),
        ),
        # AgentExecutionAdmin.get_queryset annotates it; the "see all" link is its filter.
        filters={"sources_changed": True},
        prepare=lambda executions: executions.defer(*EXECUTION_HEAVY_COLUMNS),
        only_when_rows=True,
    ),
    RelatedRows(
        title="Changed sources",
        model=StaleSource,
        field="execution__project",
        columns=(
            ("change", lambda flag: flag.get_reason_display()),
            ("execution", lambda flag: flag.execution.agent_type),
            ("chunk", lambda flag: f"{flag.ordinal} of {flag.document_id}"),
            ("read sha256", lambda flag: flag.read_sha256[:12]),
            ("now sha256", lambda flag: (flag.new_sha256 or "gone")[:12]),
            ("when", lambda flag: flag.created_at),
        ),
        prepare=lambda flags: flags.select_related("execution").defer(
            *(f"execution__{column}" for column in EXECUTION_HEAVY_COLUMNS)
        ),
        only_when_rows=True,
    ),
    RelatedRows(
        title="Conversation",
        model=ConversationMessage,
        field="project",
        columns=(
            ("position", lambda message: message.position),
            ("role", lambda message: message.get_role_display()),
            ("content", lambda message: preview_text(message.content_head)),
            ("written", lambda message: message.created_at),
        ),
        order_by=("-position",),
        prepare=lambda messages: messages.defer("content", "metadata"),
    ),
    RelatedRows(
        title="Evaluations",
        model=EvaluationRun,
        field="project",
        columns=(
            ("score", lambda evaluation: f"{evaluation.score:g}"),
            ("evaluates", evaluation_target),
            ("evaluator", lambda evaluation: evaluation.evaluator or "—"),
            ("recorded", lambda evaluation: evaluation.created_at),
        ),
        prepare=lambda evaluations: evaluations.select_related(
            "document_version", "execution"
        ).defer("metrics", "document_version__content", "document_version__metadata"),
    ),
    RelatedRows(
        title="Change proposals",
        model=ChangeProposal,
        field="project",
        columns=(
            ("proposal", lambda proposal: proposal.get_document_type_display()),
            ("status", lambda proposal: proposal.get_status_display()),
            ("base version", lambda proposal: version_label(proposal.base_version)),
            ("proposed", lambda proposal: proposal.created_at),
        ),
        prepare=lambda proposals: proposals.select_related("base_version").defer(
            "content", "impact", "base_version__content", "base_version__metadata"
        ),
    ),
    RelatedRows(
        title="Decisions",
        model=Decision,
        field="project",
        columns=(
            ("category", lambda decision: decision.category),
            ("question", lambda decision: preview_text(decision.question)),
            ("selected", lambda decision: decision.selected),
            ("decided", lambda decision: decision.decided_at),
        ),
        prepare=lambda decisions: decisions.defer("options", "reasoning"),
    ),
)
