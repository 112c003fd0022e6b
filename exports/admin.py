"""Admin for export jobs (rights: tenancy.admin_roles).

An export is added through exports.services.export_create, which builds its file; the
row then describes that file, and only its expiry may be changed. A completed export
links to /admin/exports/export/<id>/download/, served by exports.services.export_download,
which counts the download and alone decides whether it has expired (on the database's
clock): the admin does not repeat that rule, so an expired link says so when followed.

A project's page lists its latest exports and offers a new one; the project changelist
gets an "export" action. Both are added from here (documents.admin.add_project_sections,
add_project_action), as documents does not import exports.
"""

from __future__ import annotations

from typing import cast

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin import (
    TIMESTAMP_FIELDS,
    AnnotationFlagFilter,
    admin_change_url,
    sources_changed_badge,
)
from core.admin_sections import RelatedRows
from documents.admin import add_project_action, add_project_sections
from documents.models import DocumentVersion, Project
from exports.models import Export
from exports.selectors import holds_changed_version
from exports.services import export_create, export_download
from tenancy.admin_base import HistoryRecordMixin, TenantOwnedAdmin
from tenancy.admin_roles import TenantListFilter
from tenancy.models import User

# The manifest's own keys, shown as rows above its documents (exports.builders.build_manifest).
MANIFEST_DOCUMENTS = "documents"


class SourcesChangedFilter(AnnotationFlagFilter):
    title = "built on changed sources"
    parameter_name = "sources_changed"


def export_sources_badge(export: Export) -> SafeString | str:
    """The badge of an export from a queryset annotated with holds_changed_version()."""
    return sources_changed_badge(
        getattr(export, "sources_changed", False),
        "A version in this file was written by a run whose sources changed since.",
    )


@admin.register(Export)
class ExportAdmin(HistoryRecordMixin, TenantOwnedAdmin):
    list_display = (
        "project",
        "format",
        "status",
        "sources_badge",
        "expires_at",
        "size",
        "downloads",
        "download_link",
        "created_at",
        "tenant",
    )
    list_filter = ("status", "format", SourcesChangedFilter, TenantListFilter)
    search_fields = ("project__name", "storage_key")
    uuid_search_fields = ("id", "project_id")
    autocomplete_fields = ("tenant", "project")
    # The export opens from its format; the project column opens the project.
    list_display_links = ("format",)
    list_select_related = ("project", "tenant")
    list_defer = ("manifest", "error_message")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    # The project choices are live projects only (ProjectAdmin.limit_choices).
    add_fields = ("tenant", "project", "format")
    change_readonly_fields = tuple(
        field.name
        for field in Export._meta.concrete_fields
        if field.name not in (*TIMESTAMP_FIELDS, "expires_at", "manifest")
    )
    # The manifest is shown as a table, not as its JSON.
    exclude = ("manifest",)
    change_sections = (
        ("File", ("size", "download_link", "sources_badge")),
        ("Manifest", ("manifest_table",)),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(sources_changed=holds_changed_version())

    @admin.display(description="sources", ordering="sources_changed")
    def sources_badge(self, obj: Export) -> SafeString | str:
        return export_sources_badge(obj)

    def deletable_alone(self, obj: Export) -> bool:
        # A completed or expired export records what was handed out (its manifest,
        # checksum and downloads), and its file goes through the purge; an export that
        # failed, or never got going, holds nothing and may be deleted.
        return obj.status in (Export.Status.FAILED, Export.Status.PENDING)

    @admin.display(description="manifest")
    def manifest_table(self, obj: Export) -> SafeString:
        manifest = obj.manifest or {}
        documents = manifest.get(MANIFEST_DOCUMENTS) or []
        return render_to_string(
            "admin/exports/export/manifest.html",
            {
                "fields": [
                    (key, value)
                    for key, value in sorted(manifest.items())
                    if key != MANIFEST_DOCUMENTS
                ],
                "documents": [
                    {**document, "url": self._version_url(document)}
                    for document in documents
                    if isinstance(document, dict)
                ],
            },
        )

    @staticmethod
    def _version_url(document: dict) -> str | None:
        version_id = document.get("version_id")
        return admin_change_url(DocumentVersion, version_id) if version_id else None

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: Export) -> str:
        return filesizeformat(obj.size_bytes)

    @admin.display(description="downloads", ordering="download_count")
    def downloads(self, obj: Export) -> int:
        return obj.download_count

    @admin.display(description="download")
    def download_link(self, obj: Export) -> str:
        # Only a completed export has a file; export_download tells whether it expired.
        if obj.status != Export.Status.COMPLETED:
            return "—"
        return format_html('<a href="{}">{}</a>', self.download_url(obj), "Download")

    def download_url(self, obj: Export) -> str:
        return reverse(
            f"{self.admin_site.name}:exports_export_download",
            args=[quote(obj.pk)],
            current_app=self.admin_site.name,
        )

    def get_urls(self):
        download = path(
            "<path:object_id>/download/",
            self.admin_site.admin_view(self.download_view),
            name="exports_export_download",
        )
        # Before the model's own URLs: their "<path:object_id>/" would catch it first.
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """Serve the export's file as an attachment and count the download.

        The count is written in the request's transaction (the tenant middleware's), so
        it commits with the response; a refused or missing file leaves it unchanged.
        """
        export = self.get_object(request, unquote(object_id))  # 404 if not visible
        if not self.has_view_permission(request, export):
            raise PermissionDenied
        try:
            handle, filename, content_type = export_download(tenant=export.tenant_id, export=export)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), level=messages.ERROR)
            return redirect(admin_change_url(Export, export.pk))
        except FileNotFoundError as error:
            raise Http404("The export's file is missing from storage.") from error
        return FileResponse(
            handle, as_attachment=True, filename=filename, content_type=content_type
        )

    def create_object(self, request, obj, form):
        # Builds the file now: the export comes back completed, or failed saying why.
        return export_create(
            tenant=obj.tenant_id, project=obj.project, format=obj.format, by=request.user
        )


# --- A project's page and the project changelist ------------------------------------------


@admin.action(permissions=["change"], description="Export selected projects (zip, on the worker)")
def export_projects(modeladmin, request: HttpRequest, queryset) -> None:
    """Queue a zip export of each selected project the user may change (export_create
    with queue=True): the worker builds it, and its page shows it running, then
    completed or failed with the reason (a project without versions).
    """

    def export(project: Project) -> Export:
        # The admin's views let only a logged-in (staff) user in: never AnonymousUser.
        user = cast(User, request.user)
        return export_create(tenant=project.tenant_id, project=project, by=user, queue=True)

    modeladmin.apply_to_selection(request, queryset, export, "Exports queued")


def export_size(export: Export) -> str:
    return filesizeformat(export.size_bytes) if export.status == Export.Status.COMPLETED else "—"


add_project_action(export_projects)
add_project_sections(
    RelatedRows(
        title="Exports",
        model=Export,
        field="project",
        columns=(
            ("format", lambda export: export.get_format_display()),
            ("status", lambda export: export.get_status_display()),
            ("size", export_size),
            ("downloads", lambda export: export.download_count),
            ("expires", lambda export: export.expires_at),
            ("created", lambda export: export.created_at),
        ),
        prepare=lambda exports: exports.defer("manifest", "error_message"),
        add_label="New export",
    ),
    RelatedRows(
        title="Exports built on changed sources",
        model=Export,
        field="project",
        columns=(
            ("format", lambda export: export.get_format_display()),
            ("sources", export_sources_badge),
            ("status", lambda export: export.get_status_display()),
            ("created", lambda export: export.created_at),
        ),
        # ExportAdmin.get_queryset annotates it; the "see all" link is its filter.
        filters={"sources_changed": True},
        prepare=lambda exports: exports.defer("manifest", "error_message"),
        only_when_rows=True,
    ),
)
