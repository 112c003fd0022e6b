"""Admin for export jobs (rights: core.admin).

An export is added through exports.services.export_create, which builds its file; the
row then describes that file, and only its expiry may be changed.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import ValidationError

from core.admin import TIMESTAMP_FIELDS, TenantListFilter, TenantOwnedAdmin, TenantOwnedAdminForm
from exports.models import Export
from exports.services import export_create


class ExportAdminForm(TenantOwnedAdminForm):
    def clean_project(self):
        project = self.cleaned_data["project"]
        if project.deleted_at is not None:
            raise ValidationError("A deleted project cannot be exported.")
        return project


@admin.register(Export)
class ExportAdmin(TenantOwnedAdmin):
    form = ExportAdminForm
    list_display = (
        "project",
        "format",
        "status",
        "size_bytes",
        "download_count",
        "expires_at",
        "completed_at",
        "tenant",
        "created_at",
    )
    list_filter = ("status", "format", TenantListFilter)
    search_fields = ("project__name", "storage_key")
    uuid_search_fields = ("id", "project_id")
    autocomplete_fields = ("tenant", "project", "created_by")
    list_select_related = ("project", "tenant")
    list_defer = ("manifest", "error_message")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    add_fields = ("tenant", "project", "format", "created_by")
    change_readonly_fields = tuple(
        field.name
        for field in Export._meta.concrete_fields
        if field.name not in (*TIMESTAMP_FIELDS, "expires_at")
    )

    def create_object(self, request, obj, form):
        # Builds the file now: the export comes back completed, or failed saying why.
        return export_create(
            tenant=obj.tenant_id, project=obj.project, format=obj.format, by=obj.created_by
        )
