"""Admin for agent executions (rights: core.admin).

The lifecycle (status, timestamps, attempts) belongs to agents.services and its
triggers: the admin creates executions through execution_create and moves them only
through the cancel and retry actions.
"""

from __future__ import annotations

from django.contrib import admin

from agents.models import AgentExecution
from agents.services import execution_cancel, execution_create, execution_retry
from core.admin import (
    LargeTableAdminMixin,
    TenantListFilter,
    TenantOwnedAdmin,
    TenantOwnedAdminForm,
)


class AgentExecutionAdminForm(TenantOwnedAdminForm):
    def clean(self):
        cleaned_data = super().clean()
        parent, project = cleaned_data.get("parent"), cleaned_data.get("project")
        if parent is not None and project is not None and parent.project_id != project.pk:
            self.add_error("parent", "A step belongs to its parent's project.")
        return cleaned_data


@admin.register(AgentExecution)
class AgentExecutionAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
    form = AgentExecutionAdminForm
    list_display = (
        "agent_type",
        "project",
        "status",
        "attempt",
        "retry_count",
        "model",
        "total_tokens",
        "cost_usd",
        "started_at",
        "completed_at",
        "tenant",
    )
    list_filter = ("status", TenantListFilter, ("started_at", admin.DateFieldListFilter))
    search_fields = ("agent_type", "model", "=idempotency_key")
    # A run, a project or a parent step is found by pasting its UUID.
    uuid_search_fields = ("id", "correlation_id", "project_id", "parent_id")
    autocomplete_fields = ("tenant", "project", "parent", "produced_version")
    list_select_related = ("project", "tenant")
    list_defer = ("input_data", "output_data", "error_message")
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
    change_readonly_fields = (
        "tenant",
        "project",
        "correlation_id",
        "parent",
        "attempt",
        "retry_count",
        "status",
        "idempotency_key",
        "produced_version",
        "started_at",
        "completed_at",
    )
    actions = ("cancel", "retry")

    @admin.display(description="tokens")
    def total_tokens(self, obj: AgentExecution) -> int:
        return obj.prompt_tokens + obj.completion_tokens

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
