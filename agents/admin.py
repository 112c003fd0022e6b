"""Admin for agent executions, sources, conversations and evaluations (rights: tenancy.admin_roles).

The lifecycle (status, timestamps, attempts) belongs to agents.services and its
triggers: the admin creates executions through execution_create and moves them only
through the cancel and retry actions. A pending execution's input_data and model may be
corrected; once it has left pending it is a record, read-only. An execution's page shows
its run as a step tree (agents.selectors.run_tree) and the chunks it retrieved. Sources
are a record written by execution_record_sources, read-only here; messages are added
through message_add (which allocates their position) and evaluations through
evaluation_record. Versions and executions of soft-deleted projects are not offered as
choices (nor are such projects: documents.admin.projects.ProjectAdmin.limit_choices).

Change proposals are made through change_proposal_propose and moved only by the
approve, reject and apply actions; a pending proposal's review note may be written on
its page, which shows the diff from its base version (documents' own diff and styles).
Decisions are added through decision_record, decided by the user who adds them, and are
a record afterwards. Execution errors are a record written by execution_fail, listed by
node and recovered.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from agents.models import (
    AgentExecution,
    ChangeProposal,
    ConversationMessage,
    Decision,
    EvaluationRun,
    ExecutionError,
    ExecutionIdempotencyKey,
    ExecutionSource,
)
from agents.selectors import ExecutionNode, change_proposal_diff, run_tree
from agents.services import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    change_proposal_reject,
    decision_options_errors,
    decision_record,
    evaluation_record,
    execution_cancel,
    execution_create,
    execution_retry,
    message_add,
)
from core.admin import (
    TIMESTAMP_FIELDS,
    LargeTableAdminMixin,
    RecentValuesListFilter,
    UUIDValueListFilter,
    change_link,
    preview_head,
    preview_text,
)
from core.admin_sections import RelatedRows
from documents.admin import add_project_sections, diff_html, version_label
from documents.models import Chunk, DocumentVersion
from tenancy.admin_base import (
    HistoryRecordMixin,
    RecordAdminMixin,
    TenantOwnedAdmin,
    TenantOwnedAdminForm,
)
from tenancy.admin_roles import TenantListFilter

# What may still change while an execution is pending; afterwards it is a record.
EDITABLE_WHILE_PENDING = ("input_data", "model")
# Columns of a related execution that a changelist showing it never reads.
EXECUTION_HEAVY_COLUMNS = ("input_data", "output_data", "error_message")


def duration_text(duration: timedelta | None) -> str:
    """`1.234 s` under a minute, `0:02:05` above; `—` until the execution has finished."""
    if duration is None:
        return "—"
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.3f} s"
    return str(timedelta(seconds=round(seconds)))


def deferred_execution_columns(relation: str) -> tuple[str, ...]:
    return tuple(f"{relation}__{column}" for column in EXECUTION_HEAVY_COLUMNS)


class AgentExecutionAdminForm(TenantOwnedAdminForm):
    def clean(self):
        cleaned_data = super().clean()
        parent, project = cleaned_data.get("parent"), cleaned_data.get("project")
        if parent is not None and project is not None and parent.project_id != project.pk:
            self.add_error("parent", "A step belongs to its parent's project.")
        return cleaned_data


class AgentTypeFilter(RecentValuesListFilter):
    title = "agent type"
    parameter_name = "agent_type"


class CorrelationIdFilter(UUIDValueListFilter):
    """A run's steps: `?correlation_id=<uuid>`, linked from each execution's page."""

    title = "run (correlation id)"
    parameter_name = "correlation_id"


def run_changelist_url(execution: AgentExecution) -> str:
    changelist = reverse("admin:agents_agentexecution_changelist")
    return f"{changelist}?{urlencode({'correlation_id': str(execution.correlation_id)})}"


def status_badge(execution: AgentExecution) -> SafeString:
    """The status, coloured by core/static/core/admin.css."""
    return format_html(
        '<span class="status-badge status-{}">{}</span>',
        execution.status,
        execution.get_status_display(),
    )


def run_correlation_link(execution: AgentExecution) -> SafeString:
    """The run's correlation id, short, linking to all its steps (the full id on hover).

    Its last characters: a UUIDv7 starts with its timestamp, the same for a whole batch.
    """
    correlation_id = str(execution.correlation_id)
    return format_html(
        '<a href="{}" title="{}"><code>…{}</code></a>',
        run_changelist_url(execution),
        correlation_id,
        correlation_id[-8:],
    )


def started_text(execution: AgentExecution) -> str:
    """Down to the second, on one line (the admin's date format takes two)."""
    return execution.started_at.strftime("%Y-%m-%d %H:%M:%S") if execution.started_at else "—"


@admin.register(AgentExecution)
class AgentExecutionAdmin(HistoryRecordMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    form = AgentExecutionAdminForm
    # At a glance: what ran, how it ended, when, for how long, and in which run (the model
    # and the timestamps in full are on the execution's page).
    list_display = (
        "agent_type",
        "status_label",
        "started",
        "run_duration",
        "correlation",
        "attempt",
        "project",
        "total_tokens",
        "cost_usd",
        "tenant",
    )
    list_filter = (
        "status",
        AgentTypeFilter,
        CorrelationIdFilter,
        TenantListFilter,
        ("started_at", admin.DateFieldListFilter),
    )
    # Not the idempotency key: since partitioning it has no index on this table, and one
    # unindexed arm makes the whole OR a scan of every partition. Its own admin
    # (execution_idempotency_keys, indexed by tenant and key) finds it and links here.
    search_fields = ("agent_type__trigram_icontains", "model__trigram_icontains")
    # A run, a project or a parent step is found by pasting its UUID.
    uuid_search_fields = ("id", "correlation_id", "project_id", "parent_id")
    autocomplete_fields = ("tenant", "project", "parent", "produced_version")
    list_select_related = ("project", "tenant")
    list_defer = EXECUTION_HEAVY_COLUMNS
    readonly_fields = (*TIMESTAMP_FIELDS, "run_duration")
    # A step joins its parent's run; otherwise execution_create starts a new run.
    add_fields = (
        "tenant",
        "project",
        "agent_type",
        "model",
        "input_data",
        "parent",
        "idempotency_key",
    )
    # On the change page every column is read-only but, while pending, EDITABLE_WHILE_PENDING
    # (get_readonly_fields). Styles: templates/admin/agents/agentexecution/change_form.html.
    change_sections = (
        ("Run", ("all_steps_link", "step_tree")),
        ("Retrieved sources", ("sources_table",)),
    )
    actions = ("cancel", "retry")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: AgentExecution) -> SafeString:
        return status_badge(obj)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: AgentExecution) -> str:
        return started_text(obj)

    @admin.display(description="run", ordering="correlation_id")
    def correlation(self, obj: AgentExecution) -> SafeString:
        return run_correlation_link(obj)

    @admin.display(description="tokens")
    def total_tokens(self, obj: AgentExecution) -> int:
        return obj.prompt_tokens + obj.completion_tokens

    @admin.display(description="duration")
    def run_duration(self, obj: AgentExecution) -> str:
        return duration_text(obj.duration)

    # Rights -------------------------------------------------------------------------

    def limit_choices(self, queryset):
        return queryset.filter(project__deleted_at__isnull=True)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status != AgentExecution.Status.PENDING:
            return False  # a started or finished execution is a record
        return super().has_change_permission(request, obj)

    def deletable_alone(self, obj: AgentExecution) -> bool:
        # Once started an execution is history: its sources, errors, messages, the
        # version it wrote and its evaluations point at it. A pending one is a queued job
        # that may be withdrawn (with its steps, if they may go too).
        return obj.status == AgentExecution.Status.PENDING

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if obj is None:
            return readonly
        editable = EDITABLE_WHILE_PENDING if obj.status == AgentExecution.Status.PENDING else ()
        fixed = [f.name for f in self.model._meta.concrete_fields if f.name not in editable]
        return (*fixed, *(name for name in readonly if name not in fixed))

    # The change page ------------------------------------------------------------------

    def _run(self, obj: AgentExecution) -> list[ExecutionNode]:
        # The tree and the sources table both need it: read the run once per page.
        if not hasattr(obj, "_admin_run"):
            obj._admin_run = run_tree(tenant=obj.tenant_id, correlation_id=obj.correlation_id)
        return obj._admin_run

    @admin.display(description="all steps of this run")
    def all_steps_link(self, obj: AgentExecution) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>', run_changelist_url(obj), f"All steps of run {obj.correlation_id}"
        )

    @admin.display(description="step tree")
    def step_tree(self, obj: AgentExecution) -> SafeString:
        return self._tree_html(self._run(obj), obj)

    def _tree_html(self, nodes: list[ExecutionNode], current: AgentExecution) -> SafeString:
        return format_html(
            '<ul class="run-tree">{}</ul>',
            format_html_join(
                "",
                '<li><span class="{}">{}</span>{}</li>',
                (
                    (
                        "run-step run-current" if node.execution.pk == current.pk else "run-step",
                        self._step_html(node.execution, current),
                        self._tree_html(node.children, current) if node.children else "",
                    )
                    for node in nodes
                ),
            ),
        )

    @staticmethod
    def _step_html(execution: AgentExecution, current: AgentExecution) -> SafeString:
        return format_html(
            '{} <span class="run-step-status run-status-{}">{}</span> attempt {} · {}{}',
            change_link(AgentExecution, execution.pk, execution.agent_type),
            execution.status,
            execution.get_status_display(),
            execution.attempt,
            duration_text(execution.duration),
            " (this execution)" if execution.pk == current.pk else "",
        )

    @admin.display(description="sources")
    def sources_table(self, obj: AgentExecution) -> SafeString:
        nodes = (node for root in self._run(obj) for node in root.walk())
        node = next((node for node in nodes if node.execution.pk == obj.pk), None)
        sources = node.sources if node else []
        if not sources:
            return format_html("<p>{}</p>", "This execution retrieved no sources.")
        headings = ("rank", "score", "chunk", "chunk sha256", "document", "ordinal", "content")
        return format_html(
            '<table class="execution-sources"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
            format_html_join("", "<th>{}</th>", ((heading,) for heading in headings)),
            format_html_join(
                "",
                '<tr><td>{}</td><td>{}</td><td>{}</td><td><code title="{}">{}…</code></td>'
                '<td>{}</td><td>{}</td><td class="source-content">{}</td></tr>',
                (
                    (
                        # The rank links to the source's own (read-only) record.
                        change_link(ExecutionSource, source.pk, str(source.rank)),
                        f"{source.score:.4f}",
                        change_link(Chunk, source.chunk_id, "chunk")
                        if source.chunk_id
                        else "deleted",
                        source.chunk_sha256,
                        source.chunk_sha256[:16],
                        source.document_title or "—",
                        "—" if source.ordinal is None else source.ordinal,
                        preview_text(source.content),
                    )
                    for source in sources
                ),
            ),
        )

    # Writes -------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only while still pending: a worker may have started it since the page was read.
        updated = AgentExecution.objects.filter(
            pk=obj.pk, status=AgentExecution.Status.PENDING
        ).update(**{name: getattr(obj, name) for name in EDITABLE_WHILE_PENDING})
        if not updated:
            raise PermissionDenied("The execution is no longer pending; it cannot be changed.")

    def create_object(self, request, obj, form):
        return execution_create(
            tenant=obj.tenant_id,
            project=obj.project,
            agent_type=obj.agent_type,
            input_data=obj.input_data,
            parent=obj.parent,
            idempotency_key=obj.idempotency_key,
            model=obj.model,
        )

    @admin.action(permissions=["change"], description="Cancel selected executions")
    def cancel(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda execution: execution_cancel(tenant=execution.tenant_id, execution=execution),
            "Cancelled executions",
        )

    @admin.action(permissions=["change"], description="Retry selected executions")
    def retry(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda execution: execution_retry(tenant=execution.tenant_id, execution=execution),
            "New attempts",
        )


@admin.register(ExecutionIdempotencyKey)
class ExecutionIdempotencyKeyAdmin(RecordAdminMixin, TenantOwnedAdmin):
    """Written by agent_executions' trigger only: read here, to find a key's execution."""

    list_display = ("idempotency_key", "execution", "tenant", "created_at")
    list_filter = (TenantListFilter,)
    search_fields = ("=idempotency_key",)
    uuid_search_fields = ("id", "execution_id")
    raw_id_fields = ("execution",)
    list_select_related = ("execution", "tenant")
    list_defer = deferred_execution_columns("execution")


@admin.register(ExecutionSource)
class ExecutionSourceAdmin(RecordAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    list_display = (
        "rank",
        "execution",
        "short_score",
        "chunk_link",
        "document_title",
        "ordinal",
        "short_sha256",
        "content_preview",
        "tenant",
    )
    list_filter = (TenantListFilter, ("created_at", admin.DateFieldListFilter))
    # Which executions read this exact text? Paste its hash (or a UUID below).
    search_fields = ("chunk_sha256__exact",)
    uuid_search_fields = ("id", "execution_id", "chunk_id", "document_id")
    raw_id_fields = ("execution", "chunk")
    list_select_related = ("execution", "tenant")
    list_defer = ("content", *deferred_execution_columns("execution"))

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(content_head=preview_head("content"))

    @admin.display(description="score", ordering="score")
    def short_score(self, obj: ExecutionSource) -> str:
        return f"{obj.score:.4f}"

    @admin.display(description="chunk")
    def chunk_link(self, obj: ExecutionSource) -> str:
        return change_link(Chunk, obj.chunk_id, "chunk") if obj.chunk_id else "deleted"

    @admin.display(description="sha256")
    def short_sha256(self, obj: ExecutionSource) -> str:
        return obj.chunk_sha256[:12]

    @admin.display(description="content")
    def content_preview(self, obj: ExecutionSource) -> str:
        return preview_text(obj.content_head)


@admin.register(ConversationMessage)
class ConversationMessageAdmin(HistoryRecordMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    """A conversation is what the agents read back: a message goes only with its project."""

    list_display = (
        "project",
        "position",
        "role",
        "content_preview",
        "execution",
        "created_at",
        "tenant",
    )
    # The message opens from its position; project and execution open theirs.
    list_display_links = ("position",)
    list_filter = ("role", TenantListFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("project__name__trigram_icontains",)
    uuid_search_fields = ("id", "project_id", "execution_id")
    autocomplete_fields = ("tenant", "project", "execution")
    list_select_related = ("project", "execution", "tenant")
    list_defer = (
        "content",
        "metadata",
        "project__metadata",
        *deferred_execution_columns("execution"),
    )
    # A conversation in order, through conversation_messages_position_uniq (tenant first).
    ordering = ("tenant_id", "project_id", "position")
    # message_add allocates the position under the conversation's lock.
    add_fields = ("tenant", "project", "execution", "role", "content", "metadata")
    change_readonly_fields = ("tenant", "project", "execution", "position", "role", "content")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(content_head=preview_head("content"))

    @admin.display(description="content")
    def content_preview(self, obj: ConversationMessage) -> str:
        return preview_text(obj.content_head)

    def create_object(self, request, obj, form):
        return message_add(
            tenant=obj.tenant_id,
            project=obj.project,
            role=obj.role,
            content=obj.content,
            execution=obj.execution,
            metadata=obj.metadata,
        )


def evaluation_target(evaluation: EvaluationRun) -> SafeString:
    """A link to the evaluated version or execution."""
    if evaluation.document_version_id:
        version = evaluation.document_version
        return change_link(DocumentVersion, version.pk, version_label(version))
    return change_link(AgentExecution, evaluation.execution_id, str(evaluation.execution))


class EvaluatorFilter(RecentValuesListFilter):
    title = "evaluator"
    parameter_name = "evaluator"


@admin.register(EvaluationRun)
class EvaluationRunAdmin(TenantOwnedAdmin):
    list_display = ("score", "target", "evaluator", "project", "created_at", "tenant")
    list_filter = (EvaluatorFilter, TenantListFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("evaluator", "project__name")
    uuid_search_fields = ("id", "project_id", "document_version_id", "execution_id")
    autocomplete_fields = ("tenant", "project", "document_version", "execution")
    list_select_related = ("project", "tenant", "document_version", "execution")
    list_defer = (
        "metrics",
        "project__metadata",
        "document_version__content",
        "document_version__metadata",
        *deferred_execution_columns("execution"),
    )
    ordering = ("-id",)
    # evaluation_record takes the project from the evaluated version or execution.
    add_fields = ("tenant", "document_version", "execution", "score", "evaluator", "metrics")
    change_readonly_fields = ("tenant", "project", "document_version", "execution")

    @admin.display(description="evaluates")
    def target(self, obj: EvaluationRun) -> str:
        return evaluation_target(obj)

    # An evaluation is a measurement nothing points at: a wrong one may be deleted.

    def create_object(self, request, obj, form):
        return evaluation_record(
            tenant=obj.tenant_id,
            score=obj.score,
            document_version=obj.document_version,
            execution=obj.execution,
            metrics=obj.metrics,
            evaluator=obj.evaluator,
        )


# --- Change proposals --------------------------------------------------------------------

# What the reviewer may write while a proposal is pending; the rest is what was proposed.
EDITABLE_WHILE_REVIEWING = ("review_note",)


@admin.register(ChangeProposal)
class ChangeProposalAdmin(HistoryRecordMixin, TenantOwnedAdmin):
    # The execution and the review's time are on the proposal's page.
    list_display = (
        "document_type",
        "project",
        "base",
        "status",
        "sections",
        "reviewed_by",
        "created_at",
        "tenant",
    )
    list_filter = (
        "status",
        "document_type",
        TenantListFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("project__name", "review_note")
    uuid_search_fields = ("id", "project_id", "base_version_id", "execution_id")
    autocomplete_fields = ("tenant", "base_version", "execution")
    list_select_related = ("project", "tenant", "base_version", "execution", "reviewed_by")
    list_defer = (
        "content",
        "impact",
        "failure_reason",
        "project__metadata",
        "base_version__content",
        "base_version__metadata",
        *deferred_execution_columns("execution"),
    )
    ordering = ("-id",)
    # The project and document type are the base version's; sections left empty are
    # those the change touches (change_proposal_propose).
    add_fields = ("tenant", "base_version", "execution", "content", "impact", "affected_sections")
    # Styles of the diff: templates/admin/agents/changeproposal/change_form.html.
    change_sections = (
        ("Changes proposed", ("base_link", "proposal_diff")),
        ("Outcome", ("applied_link",)),
    )
    actions = ("approve", "reject", "apply")

    @admin.display(description="base version")
    def base(self, obj: ChangeProposal) -> SafeString:
        return change_link(DocumentVersion, obj.base_version_id, version_label(obj.base_version))

    @admin.display(description="affected sections")
    def sections(self, obj: ChangeProposal) -> str:
        return preview_text(", ".join(obj.affected_sections)) or "—"

    @admin.display(description="base version")
    def base_link(self, obj: ChangeProposal) -> SafeString:
        return change_link(DocumentVersion, obj.base_version_id, version_label(obj.base_version))

    @admin.display(description="diff from the base version")
    def proposal_diff(self, obj: ChangeProposal) -> SafeString:
        diff = change_proposal_diff(tenant=obj.tenant_id, proposal=obj)
        return diff_html(diff)

    @admin.display(description="applied as")
    def applied_link(self, obj: ChangeProposal) -> SafeString | str:
        if obj.applied_version_id is None:
            return "Not applied."
        return change_link(
            DocumentVersion, obj.applied_version_id, version_label(obj.applied_version)
        )

    # Rights -------------------------------------------------------------------------

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status != ChangeProposal.Status.PENDING:
            return False  # reviewed: a record
        return super().has_change_permission(request, obj)

    def deletable_alone(self, obj: ChangeProposal) -> bool:
        # A reviewed proposal records who decided what (and the version it wrote); a
        # pending one may be withdrawn.
        return obj.status == ChangeProposal.Status.PENDING

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if obj is None:
            return readonly
        editable = EDITABLE_WHILE_REVIEWING if obj.status == ChangeProposal.Status.PENDING else ()
        fixed = [f.name for f in self.model._meta.concrete_fields if f.name not in editable]
        return (*fixed, *(name for name in readonly if name not in fixed))

    # Writes -------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only while pending: another reviewer may have decided since the page was read.
        updated = ChangeProposal.objects.filter(
            pk=obj.pk, status=ChangeProposal.Status.PENDING
        ).update(review_note=obj.review_note)
        if not updated:
            raise PermissionDenied("The proposal has been reviewed; it cannot be changed.")

    def create_object(self, request, obj, form):
        return change_proposal_propose(
            tenant=obj.tenant_id,
            base_version=obj.base_version,
            content=obj.content,
            execution=obj.execution,
            impact=obj.impact,
            affected_sections=obj.affected_sections or None,
        )

    @admin.action(permissions=["change"], description="Approve selected proposals")
    def approve(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_approve(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Approved proposals",
        )

    @admin.action(permissions=["change"], description="Reject selected proposals")
    def reject(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_reject(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Rejected proposals",
        )

    @admin.action(
        permissions=["change"], description="Apply selected proposals (write the next version)"
    )
    def apply(self, request, queryset):
        # A stale proposal is refused and marked failed; the refusal is reported and the
        # mark is committed with the request.
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_apply(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Applied proposals",
        )


# --- Decisions ---------------------------------------------------------------------------


class CategoryFilter(RecentValuesListFilter):
    title = "category"
    parameter_name = "category"


class DecisionAdminForm(TenantOwnedAdminForm):
    def clean(self):
        cleaned_data = super().clean()
        if "options" in cleaned_data and "selected" in cleaned_data:
            # Named by field, before the model's CHECK would refuse the pair as a whole.
            errors = decision_options_errors(cleaned_data["options"], cleaned_data["selected"])
            for name, message in errors.items():
                self.add_error(name, message)
        return cleaned_data


@admin.register(Decision)
class DecisionAdmin(HistoryRecordMixin, TenantOwnedAdmin):
    """A decision is an audit of who chose what and why: it goes only with its project."""

    form = DecisionAdminForm
    list_display = (
        "category",
        "question_preview",
        "selected",
        "project",
        "decided_by_whom",
        "decided_at",
        "tenant",
    )
    list_filter = (CategoryFilter, TenantListFilter, ("decided_at", admin.DateFieldListFilter))
    search_fields = ("category", "selected", "project__name")
    uuid_search_fields = ("id", "project_id", "execution_id")
    autocomplete_fields = ("tenant", "project", "execution")
    list_select_related = ("project", "tenant", "execution", "decided_by")
    list_defer = (
        "options",
        "reasoning",
        "project__metadata",
        *deferred_execution_columns("execution"),
    )
    ordering = ("-id",)
    readonly_fields = (*TIMESTAMP_FIELDS, "decided_by")
    # decision_record checks the options and the selection; the user adding it decides.
    add_fields = (
        "tenant",
        "project",
        "execution",
        "category",
        "question",
        "options",
        "selected",
        "reasoning",
    )
    change_sections = (("Options considered", ("options_table",)),)

    @admin.display(description="question")
    def question_preview(self, obj: Decision) -> str:
        return preview_text(obj.question)

    @admin.display(description="decided by")
    def decided_by_whom(self, obj: Decision) -> str:
        return obj.decider

    @admin.display(description="options")
    def options_table(self, obj: Decision) -> SafeString:
        return format_html(
            '<table class="decision-options"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            "option",
            "notes",
            "selected",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        option.get("name", ""),
                        option.get("notes", ""),
                        "✔" if option.get("name") == obj.selected else "",
                    )
                    for option in obj.options
                    if isinstance(option, dict)
                ),
            ),
        )

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False  # a decision is a record
        return super().has_change_permission(request, obj)

    def create_object(self, request, obj, form):
        return decision_record(
            tenant=obj.tenant_id,
            project=obj.project,
            category=obj.category,
            question=obj.question,
            options=obj.options,
            selected=obj.selected,
            reasoning=obj.reasoning,
            execution=obj.execution,
            decided_by=request.user,
        )


# --- Execution errors --------------------------------------------------------------------


class NodeFilter(RecentValuesListFilter):
    title = "node"
    parameter_name = "node"


class ErrorTypeFilter(RecentValuesListFilter):
    title = "error type"
    parameter_name = "error_type"


@admin.register(ExecutionError)
class ExecutionErrorAdmin(RecordAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    # The recovery strategy is on the error's page; the list shows whether it recovered.
    list_display = (
        "node",
        "error_type",
        "execution",
        "attempt",
        "recovered",
        "message_preview",
        "created_at",
        "tenant",
    )
    list_filter = (
        NodeFilter,
        "recovered",
        ErrorTypeFilter,
        TenantListFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("node__exact", "error_type__exact")
    uuid_search_fields = ("id", "execution_id")
    raw_id_fields = ("execution",)
    list_select_related = ("execution", "tenant")
    list_defer = ("message", "traceback", *deferred_execution_columns("execution"))
    # The traceback is shown as it was printed, in its own section.
    exclude = ("traceback",)
    change_sections = (("Traceback", ("traceback_text",)), ("Run", ("run_link",)))

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_head=preview_head("message"))

    @admin.display(description="message")
    def message_preview(self, obj: ExecutionError) -> str:
        return preview_text(obj.message_head)

    @admin.display(description="traceback")
    def traceback_text(self, obj: ExecutionError) -> SafeString:
        if not obj.traceback:
            return format_html("<p>{}</p>", "No traceback was recorded.")
        return format_html('<pre class="error-traceback">{}</pre>', obj.traceback)

    @admin.display(description="attempts of this run")
    def run_link(self, obj: ExecutionError) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>',
            run_changelist_url(obj.execution),
            f"All steps and attempts of run {obj.execution.correlation_id}",
        )


# --- A project's page --------------------------------------------------------------------

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
