"""Admin for what an execution leaves behind: its idempotency key, its sources, its errors,
and the flags of its sources that changed since.

All four are records, read-only here. Keys are written by agent_executions' trigger,
sources by execution_record_sources, errors by execution_fail (listed by node and
whether they recovered), stale-source flags by the triggers of agents.0021.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from agents.admin.executions import (
    deferred_execution_columns,
    run_changelist_url,
    run_story_url,
)
from agents.models import ExecutionError, ExecutionIdempotencyKey, ExecutionSource, StaleSource
from core.admin import (
    LargeTableAdminMixin,
    RecentValuesListFilter,
    change_link,
    preview_head,
    preview_text,
)
from documents.models import Chunk
from tenancy.admin_base import RecordAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TenantListFilter

if TYPE_CHECKING:
    from typing import TypedDict

    from django_stubs_ext import WithAnnotations

    from core.admin import ContentHead

    class MessageHead(TypedDict):
        message_head: str | None


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
    def content_preview(self, obj: WithAnnotations[ExecutionSource, ContentHead]) -> str:
        return preview_text(obj.content_head)


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
    def message_preview(self, obj: WithAnnotations[ExecutionError, MessageHead]) -> str:
        return preview_text(obj.message_head)

    @admin.display(description="traceback")
    def traceback_text(self, obj: ExecutionError) -> SafeString:
        if not obj.traceback:
            return format_html("<p>{}</p>", "No traceback was recorded.")
        return format_html('<pre class="error-traceback">{}</pre>', obj.traceback)

    @admin.display(description="attempts of this run")
    def run_link(self, obj: ExecutionError) -> SafeString:
        return format_html(
            '<a href="{}#step-{}">{}</a><br><a href="{}">{}</a>',
            run_story_url(obj.execution.correlation_id),
            obj.execution_id,
            "This failure in its run's story (how it recovered)",
            run_changelist_url(obj.execution),
            f"All steps and attempts of run {obj.execution.correlation_id}",
        )


@admin.register(StaleSource)
class StaleSourceAdmin(RecordAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    """Which chunk an execution read changed since, and how (the triggers write them)."""

    list_display = (
        "execution",
        "reason",
        "chunk_link",
        "ordinal",
        "short_read_sha256",
        "short_new_sha256",
        "created_at",
        "tenant",
    )
    list_filter = ("reason", TenantListFilter, ("created_at", admin.DateFieldListFilter))
    uuid_search_fields = ("id", "execution_id", "chunk_id", "document_id")
    raw_id_fields = ("execution",)
    list_select_related = ("execution", "tenant")
    list_defer = deferred_execution_columns("execution")

    def lookup_allowed(self, lookup, value, request=None):
        # A project page's "see all" link: the flags of the project's executions.
        return lookup == "execution__project__id__exact" or super().lookup_allowed(
            lookup, value, request
        )

    @admin.display(description="chunk")
    def chunk_link(self, obj: StaleSource) -> str:
        if obj.reason in (StaleSource.Reason.REMOVED, StaleSource.Reason.ERASED):
            return "gone"
        return change_link(Chunk, obj.chunk_id, "chunk")

    @admin.display(description="read sha256")
    def short_read_sha256(self, obj: StaleSource) -> str:
        return obj.read_sha256[:12]

    @admin.display(description="now sha256")
    def short_new_sha256(self, obj: StaleSource) -> str:
        return obj.new_sha256[:12] if obj.new_sha256 else "—"
