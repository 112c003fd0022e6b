"""Admin of switching embedding models: each tenant's models with their backfill's
progress, and the vectors stored beside the chunks. Read-only: the services and
commands change them (docs/operations.md, "Switching embedding models")."""

from __future__ import annotations

from django.contrib import admin

from core.admin import LargeTableAdminMixin
from documents.models import ChunkEmbedding, TenantEmbeddingModel
from tenancy.admin_base import RecordAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES, TenantListFilter


@admin.register(TenantEmbeddingModel)
class TenantEmbeddingModelAdmin(RecordAdminMixin, TenantOwnedAdmin):
    """Which model a tenant searches, which one it can roll back to, and how far each
    backfill has come."""

    list_display = (
        "model",
        "role",
        "status",
        "progress",
        "tenant",
        "started_at",
        "finished_at",
    )
    list_filter = (TenantListFilter, "role", "status")
    search_fields = ("model",)
    list_select_related = ("tenant",)

    @admin.display(description="chunks done")
    def progress(self, obj: TenantEmbeddingModel) -> str:
        return f"{obj.chunks_done} / {obj.chunks_total}"


@admin.register(ChunkEmbedding)
class ChunkEmbeddingAdmin(RecordAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    """A chunk's vector by another model, written by the backfill and by ingestion. For
    owners and admins: it is the tenant's index data, nothing a member reads."""

    view_roles = TENANT_MANAGER_ROLES
    list_display = ("chunk", "model", "dimension", "tenant", "created_at")
    list_filter = (TenantListFilter,)
    uuid_search_fields = ("id",)
    list_select_related = ("tenant", "chunk", "chunk__document")
    # The vector is never read for a page, nor sent to a browser.
    exclude = ("embedding",)

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding")
