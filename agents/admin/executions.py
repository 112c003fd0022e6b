"""Admin for agent executions, and how an execution is shown wherever it is listed.

The lifecycle (status, timestamps, attempts) belongs to agents.services and its
triggers: the admin creates executions through execution_create and moves them only
through the cancel and retry actions. A pending execution's input_data and model may be
corrected; once it has left pending it is a record, read-only. An execution's page shows
its run as a step tree (agents.selectors.run_tree), the chunks it retrieved and, once
one of them changed (re-ingested, re-embedded, removed, erased), the "sources changed"
badge and which chunks changed how (agents.models.StaleSource).

The helpers before the admin (status badge, start, duration, run link, the execution
columns a changelist defers) show an execution wherever it is listed: the package's other
modules import them from here.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef
from django.db.models.functions import Left
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from agents.admin.usage import warn_about_quotas
from agents.models import AgentExecution, ExecutionSource, StaleSource, TenantQuota
from agents.selectors import ExecutionNode, run_tree
from agents.services import (
    execution_cancel,
    execution_create,
    execution_retry,
    execution_update,
)
from core.admin import (
    TIMESTAMP_FIELDS,
    AnnotationFlagFilter,
    LargeTableAdminMixin,
    RecentValuesListFilter,
    UUIDValueListFilter,
    change_link,
    preview_text,
    sources_changed_badge,
)
from documents.models import Chunk
from tenancy.admin_base import HistoryRecordMixin, TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import TenantListFilter

# What may still change while an execution is pending; afterwards it is a record.
EDITABLE_WHILE_PENDING = ("input_data", "model")
# The error column's message preview: short, the list also shows what ran and when.
ERROR_PREVIEW_LENGTH = 40
ERROR_HEAD = Left("error_message", ERROR_PREVIEW_LENGTH + 1)
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


def run_story_url(correlation_id: uuid.UUID | str) -> str:
    """The run's story: every step, failure, source, output and cost on one page."""
    return reverse("admin:agents_agentexecution_run", args=[str(correlation_id)])


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
    """The run's correlation id, short, linking to its story (the full id on hover).

    Its last characters: a UUIDv7 starts with its timestamp, the same for a whole batch.
    Every list that shows a run (executions, a project's runs, errors) links it here.
    """
    correlation_id = str(execution.correlation_id)
    return format_html(
        '<a href="{}" title="The story of run {}"><code>…{}</code></a>',
        run_story_url(correlation_id),
        correlation_id,
        correlation_id[-8:],
    )


def error_link(execution: AgentExecution) -> SafeString | str:
    """A failed execution's error type and the head of its message, linking to the step
    in its run's story (traceback, recovery); "—" for one that did not fail.

    Reads `error_head` (ERROR_HEAD), so the list never reads the whole message.
    """
    if not execution.error_type:
        return "—"
    head = getattr(execution, "error_head", None) or ""
    message = " ".join(head[:ERROR_PREVIEW_LENGTH].split())
    if len(head) > ERROR_PREVIEW_LENGTH:
        message += "…"
    return format_html(
        '<a href="{}#step-{}" title="{}"><strong>{}</strong></a> <span title="{}">{}</span>',
        run_story_url(execution.correlation_id),
        execution.pk,
        "The failure in its run's story",
        execution.error_type,
        message,
        message,
    )


def sources_changed() -> Exists:
    """Whether an execution read a chunk that changed since (one index probe a row)."""
    return Exists(
        StaleSource.objects.filter(tenant_id=OuterRef("tenant_id"), execution_id=OuterRef("pk"))
    )


class SourcesChangedFilter(AnnotationFlagFilter):
    title = "built on changed sources"
    parameter_name = "sources_changed"


def execution_sources_badge(execution: AgentExecution) -> SafeString | str:
    """The badge of an execution from a queryset annotated with sources_changed()."""
    return sources_changed_badge(
        getattr(execution, "sources_changed", False),
        "A chunk this execution read was re-ingested, re-embedded, removed or erased since.",
    )


def started_text(execution: AgentExecution) -> str:
    """Down to the second, on one line (the admin's date format takes two)."""
    return execution.started_at.strftime("%Y-%m-%d %H:%M:%S") if execution.started_at else "—"


def changed_sources_html(flags) -> SafeString:
    """A table of stale-source flags: which chunk, how it changed, the hashes, when."""
    flags = list(flags)
    if not flags:
        return format_html("<p>{}</p>", "No chunk this execution read has changed since.")
    headings = ("chunk", "document", "ordinal", "change", "read sha256", "now sha256", "when")
    return format_html(
        '{}<table class="execution-sources"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        sources_changed_badge(True),
        format_html_join("", "<th>{}</th>", ((heading,) for heading in headings)),
        format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>"
            '<td><code title="{}">{}…</code></td><td>{}</td><td>{}</td></tr>',
            (
                (
                    change_link(StaleSource, flag.pk, str(flag.chunk_id)[-8:]),
                    flag.document_id or "—",
                    "—" if flag.ordinal is None else flag.ordinal,
                    flag.get_reason_display(),
                    flag.read_sha256,
                    flag.read_sha256[:16],
                    format_html("<code>{}…</code>", flag.new_sha256[:16])
                    if flag.new_sha256
                    else "gone",
                    flag.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                )
                for flag in flags
            ),
        ),
    )


@admin.register(AgentExecution)
class AgentExecutionAdmin(HistoryRecordMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    form = AgentExecutionAdminForm
    # At a glance: what ran, how it ended (and which attempt), why it failed, when, for how
    # long, and in which run (the model and the timestamps in full are on the execution's
    # page, the error's traceback in its run's story).
    list_display = (
        "agent_type",
        "status_label",
        "sources_badge",
        "error",
        "started",
        "run_duration",
        "correlation",
        "project",
        "usage",
        "tenant",
    )
    list_filter = (
        "status",
        SourcesChangedFilter,
        AgentTypeFilter,
        CorrelationIdFilter,
        TenantListFilter,
        ("started_at", admin.DateFieldListFilter),
    )
    # Not the idempotency key: since partitioning it has no index on this table, and one
    # unindexed arm makes the whole OR a scan of every partition. Its own admin
    # (execution_idempotency_keys, indexed by tenant and key) finds it and links here.
    # "TimeoutError" or words of a message find the failures (agents.0023's indexes).
    search_fields = (
        "agent_type__trigram_icontains",
        "model__trigram_icontains",
        "error_type__trigram_icontains",
        "error_message__trigram_icontains",
    )
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
        ("Run", ("story_link", "all_steps_link", "step_tree")),
        ("Retrieved sources", ("sources_table",)),
        ("Changed sources", ("changed_sources_table",)),
    )
    actions = ("cancel", "retry")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: AgentExecution) -> SafeString:
        # A retry's attempt beside its status: a column of its own no longer fits 1400 pixels.
        if obj.attempt == 1:
            return status_badge(obj)
        return format_html(
            '{} <span title="attempt {}">#{}</span>', status_badge(obj), obj.attempt, obj.attempt
        )

    @admin.display(description="sources", ordering="sources_changed")
    def sources_badge(self, obj: AgentExecution) -> SafeString | str:
        return execution_sources_badge(obj)

    @admin.display(description="error")
    def error(self, obj: AgentExecution) -> SafeString | str:
        return error_link(obj)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: AgentExecution) -> str:
        return started_text(obj)

    @admin.display(description="run", ordering="correlation_id")
    def correlation(self, obj: AgentExecution) -> SafeString:
        return run_correlation_link(obj)

    @admin.display(description="usage")
    def usage(self, obj: AgentExecution) -> SafeString:
        # Tokens over cost in one column: two of their own no longer fit 1400 pixels.
        return format_html(
            '<span title="{} prompt + {} completion tokens">{}</span><br>{} USD',
            obj.prompt_tokens,
            obj.completion_tokens,
            obj.prompt_tokens + obj.completion_tokens,
            f"{obj.cost_usd:.4f}",
        )

    @admin.display(description="duration")
    def run_duration(self, obj: AgentExecution) -> str:
        return duration_text(obj.duration)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(sources_changed=sources_changed(), error_head=ERROR_HEAD)
        )

    # The run's story --------------------------------------------------------------

    def get_urls(self):
        # The story's module builds on this one's displays, so it is imported here.
        from agents.admin.run_story import run_story_view

        story = path(
            "run/<str:correlation_id>/",
            self.admin_site.admin_view(
                lambda request, correlation_id: run_story_view(self, request, correlation_id)
            ),
            name="agents_agentexecution_run",
        )
        # Before the model's own URLs: their "<path:object_id>/" would catch it first.
        return [story, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        # The quota banner: a tenant shown here near or at its monthly quota.
        warn_about_quotas(
            request, self.restrict_to_tenants(request, TenantQuota.objects.all(), self.view_roles)
        )
        return super().changelist_view(request, extra_context)

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
        cache = obj.__dict__  # kept on the row, which mypy's view of the model has no slot for
        if "_admin_run" not in cache:
            cache["_admin_run"] = run_tree(tenant=obj.tenant_id, correlation_id=obj.correlation_id)
        return cache["_admin_run"]

    @admin.display(description="the run's story")
    def story_link(self, obj: AgentExecution) -> SafeString:
        return format_html(
            '<a href="{}#step-{}">{}</a>',
            run_story_url(obj.correlation_id),
            obj.pk,
            "Its steps on a timeline, failures with tracebacks, sources, outputs and costs",
        )

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

    @admin.display(description="changed since this execution read them")
    def changed_sources_table(self, obj: AgentExecution) -> SafeString:
        return changed_sources_html(
            StaleSource.objects.filter(tenant_id=obj.tenant_id, execution_id=obj.pk).order_by(
                "ordinal", "created_at"
            )
        )

    # Writes -------------------------------------------------------------------------

    def update_object(self, request, obj, form):
        # Refused if a worker has started it since the page was read.
        try:
            return execution_update(
                tenant=obj.tenant_id, execution=obj, input_data=obj.input_data, model=obj.model
            )
        except ValidationError as error:
            raise PermissionDenied(" ".join(error.messages)) from error

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
