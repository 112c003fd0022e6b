"""Admin for a project's conversation messages and the evaluations of its versions and runs.

Messages are added through message_add (which allocates their position) and evaluations
through evaluation_record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.utils.safestring import SafeString

from agents.admin.executions import deferred_execution_columns
from agents.models import AgentExecution, ConversationMessage, EvaluationRun
from agents.services import evaluation_record, message_add
from core.admin import (
    LargeTableAdminMixin,
    RecentValuesListFilter,
    change_link,
    preview_head,
    preview_text,
)
from documents.admin import version_label
from documents.models import DocumentVersion
from tenancy.admin_base import HistoryRecordMixin, TenantOwnedAdmin
from tenancy.admin_roles import TenantListFilter

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    from core.admin import ContentHead


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
    def content_preview(self, obj: WithAnnotations[ConversationMessage, ContentHead]) -> str:
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
    version = evaluation.document_version  # None without a query when it has none
    if version is not None:
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
