"""Admin for projects: the hub page of their versions, runs, conversation and exports.

Projects are soft-deleted, and only a superuser deletes one for good, with its versions.
Nothing new may point at a soft-deleted project.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from core.admin import (
    TIMESTAMP_FIELDS,
    preview_text,
)
from core.admin_sections import RelatedRows, related_sections
from documents.admin.access import RestrictActions, who_has_access
from documents.admin.versions import version_label, version_sources_badge
from documents.models import Document, DocumentVersion, Project, ProjectAccess
from documents.services import (
    project_create,
    project_restore,
    project_restrict,
    project_soft_delete,
    project_unrestrict,
)
from tenancy.admin_roles import TenantListFilter, is_superuser


class ProjectStateFilter(admin.SimpleListFilter):
    """Live or soft-deleted projects (the admin shows both)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", "Live"), ("deleted", "Deleted")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


# A project's page lists what points at it (core.admin_sections). Documents' own rows
# come first; agents and exports add theirs through add_project_sections, and the
# exports app its action through add_project_action: documents imports neither.
PROJECT_SECTIONS: list[RelatedRows[Any]] = [
    RelatedRows(
        title="Latest documents",
        model=DocumentVersion,
        field="project",
        columns=(
            ("document", version_label),
            ("content", lambda version: preview_text(version.content_head)),
            ("sha256", lambda version: version.content_sha256[:12]),
            ("readability", lambda version: version.readability_score),
            ("grammar", lambda version: version.grammar_score),
            ("written", lambda version: version.created_at),
        ),
        # The latest version of each document type (versions_latest_idx order).
        order_by=("document_type", "-version"),
        prepare=lambda versions: versions.distinct("document_type"),
        add_label="New version",
    ),
    RelatedRows(
        title="Version history",
        model=DocumentVersion,
        field="project",
        columns=(
            ("version", version_label),
            ("content", lambda version: preview_text(version.content_head)),
            ("sha256", lambda version: version.content_sha256[:12]),
            ("written", lambda version: version.created_at),
        ),
    ),
    RelatedRows(
        title="Versions built on changed sources",
        model=DocumentVersion,
        field="project",
        columns=(
            ("version", version_label),
            ("sources", version_sources_badge),
            ("since", lambda version: version.sources_changed_at),
            ("written", lambda version: version.created_at),
        ),
        # Set by agents' stale-source triggers (the runs and chunks: the agents' sections).
        filters={"sources_changed_at__isnull": False},
        prepare=lambda versions: versions.defer("content", "metadata"),
        only_when_rows=True,
    ),
    who_has_access(ProjectAccess, "project"),
    RelatedRows(
        title="Knowledge documents",
        model=Document,
        field="project",
        columns=(
            ("title", lambda document: document.title),
            ("status", lambda document: document.get_status_display()),
            ("size", lambda document: filesizeformat(document.size_bytes)),
            ("uploaded", lambda document: document.created_at),
        ),
    ),
]


def add_project_sections(*sections: RelatedRows[Any]) -> None:
    """Add sections to every project's page (for the apps whose rows point at projects)."""
    PROJECT_SECTIONS.extend(sections)


def add_project_action(action) -> None:
    """Offer a bulk action on the project changelist (an `admin.action` function)."""
    ProjectAdmin.actions.append(action)


@admin.register(Project)
class ProjectAdmin(RestrictActions):
    # Operators must see soft-deleted projects too, to restore or purge them.
    manager_name = "all_objects"
    list_display = (
        "name",
        "tenant",
        "status",
        "current_step",
        "language",
        "is_live",
        "restricted",
        "created_by",
        "updated_at",
    )
    list_filter = (ProjectStateFilter, "status", "current_step", "restricted", TenantListFilter)
    search_fields = ("name__trigram_icontains",)
    autocomplete_fields = ("tenant",)
    list_select_related = ("tenant", "created_by")
    # Restricting is an action of owners and admins (project_restrict), not a form field.
    readonly_fields = (*TIMESTAMP_FIELDS, "deleted_at", "restricted")
    date_hierarchy = "created_at"
    ordering = ("-updated_at",)
    # A list: other apps add theirs (add_project_action).
    actions = ["soft_delete", "restore", "restrict", "unrestrict"]
    restrict_service = staticmethod(project_restrict)
    unrestrict_service = staticmethod(project_unrestrict)

    @admin.display(boolean=True, description="live", ordering="deleted_at")
    def is_live(self, obj: Project) -> bool:
        return obj.deleted_at is None

    def limit_choices(self, queryset):
        # The changelist shows deleted projects (to restore them); nothing new joins one.
        return queryset.filter(deleted_at__isnull=True)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["related_sections"] = related_sections(
                request, self.admin_site, obj, PROJECT_SECTIONS
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_delete_permission(self, request, obj=None):
        # Others soft-delete (the action); deleting for good takes the versions with it.
        return is_superuser(request)

    def create_object(self, request, obj, form):
        return project_create(
            tenant=obj.tenant_id,
            name=obj.name,
            by=request.user,
            status=obj.status,
            current_step=obj.current_step,
            language=obj.language,
            metadata=obj.metadata,
        )

    @admin.action(permissions=["change"], description="Soft-delete selected projects")
    def soft_delete(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset.filter(deleted_at__isnull=True),
            lambda project: project_soft_delete(tenant=project.tenant_id, project=project),
            "Soft-deleted projects",
        )

    @admin.action(permissions=["change"], description="Restore selected projects")
    def restore(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset.filter(deleted_at__isnull=False),
            lambda project: project_restore(tenant=project.tenant_id, project=project),
            "Restored projects",
        )
