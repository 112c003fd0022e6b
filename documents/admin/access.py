"""Admin for access grants on restricted projects and documents (docs/security.md).

Owners and admins of a tenant add a grant (project_access_grant / document_access_grant)
and delete one (the revoke services); a grant is never edited. Members see their own
grants, owners and admins every grant of their tenants: row-level security decides, as
for every other list. Restricting and unrestricting are actions on the project and
document changelists (documents.admin.projects, documents.admin.knowledge).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin

from core.admin import TIMESTAMP_FIELDS
from core.admin_sections import RelatedRows
from documents.models import DocumentAccess, ProjectAccess
from documents.services import (
    document_access_grant,
    document_access_revoke,
    project_access_grant,
    project_access_revoke,
)
from tenancy.admin_base import TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES, TenantListFilter


def who_has_access(grants: type[ProjectAccess | DocumentAccess], field: str) -> RelatedRows:
    """The "Who has access" section of a restricted row's page: its grants."""
    return RelatedRows(
        title="Who has access",
        model=grants,
        field=field,
        columns=(
            ("user", lambda grant: grant.user),
            ("granted by", lambda grant: grant.created_by),
            ("since", lambda grant: grant.created_at),
        ),
        prepare=lambda rows: rows.select_related("user", "created_by"),
        add_label="Grant access",
    )


class RestrictActions(TenantOwnedAdmin):
    """An admin of restrictable rows (projects, documents) with the Restrict and Unrestrict
    actions: the services applied to the part of a selection in tenants the user owns
    or administers."""

    # project_restrict / document_restrict and their undoing, called with the row as the
    # keyword of the model's name (project=, document=).
    restrict_service: Callable[..., object]
    unrestrict_service: Callable[..., object]

    def _set_restricted(self, request, queryset, restricted: bool) -> None:
        service = self.restrict_service if restricted else self.unrestrict_service
        name = str(self.opts.model_name)
        self.apply_to_selection(
            request,
            self.restrict_to_tenants(
                request, queryset.filter(restricted=not restricted), TENANT_MANAGER_ROLES
            ),
            lambda row: service(tenant=row.tenant_id, **{name: row}, by=request.user),
            f"{'Restricted' if restricted else 'Unrestricted'} {self.opts.verbose_name_plural}",
        )

    @admin.action(permissions=["change"], description="Restrict selected %(verbose_name_plural)s")
    def restrict(self, request, queryset):
        self._set_restricted(request, queryset, True)

    @admin.action(permissions=["change"], description="Unrestrict selected %(verbose_name_plural)s")
    def unrestrict(self, request, queryset):
        self._set_restricted(request, queryset, False)


class _AccessAdmin(TenantOwnedAdmin):
    edit_roles = TENANT_MANAGER_ROLES
    list_filter = (TenantListFilter,)
    readonly_fields = (*TIMESTAMP_FIELDS, "created_by")
    date_hierarchy = "created_at"
    ordering = ("-id",)

    def has_change_permission(self, request, obj=None):
        # A grant is given or taken back, never edited; the page still shows it.
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoking is for owners and admins (edit_roles), as granting.
        return super().has_change_permission(request, obj)

    def delete_model(self, request, obj):
        self.revoke(request, obj)

    def delete_queryset(self, request, queryset):
        for grant in queryset:
            self.revoke(request, grant)

    def revoke(self, request, grant) -> None:
        raise NotImplementedError


@admin.register(ProjectAccess)
class ProjectAccessAdmin(_AccessAdmin):
    list_display = ("user", "project", "tenant", "created_by", "created_at")
    list_select_related = ("tenant", "project", "user", "created_by")
    search_fields = ("project__name__trigram_icontains", "user__email")
    autocomplete_fields = ("tenant", "project", "user")
    add_fields = ("tenant", "project", "user")

    def create_object(self, request, obj, form):
        return project_access_grant(
            tenant=obj.tenant_id, project=obj.project, user=obj.user, by=request.user
        )

    def revoke(self, request, grant) -> None:
        project_access_revoke(
            tenant=grant.tenant_id, project=grant.project, user=grant.user, by=request.user
        )


@admin.register(DocumentAccess)
class DocumentAccessAdmin(_AccessAdmin):
    list_display = ("user", "document", "tenant", "created_by", "created_at")
    list_select_related = ("tenant", "document", "user", "created_by")
    search_fields = ("document__title__trigram_icontains", "user__email")
    autocomplete_fields = ("tenant", "document", "user")
    add_fields = ("tenant", "document", "user")

    def create_object(self, request, obj, form):
        return document_access_grant(
            tenant=obj.tenant_id, document=obj.document, user=obj.user, by=request.user
        )

    def revoke(self, request, grant) -> None:
        document_access_revoke(
            tenant=grant.tenant_id, document=grant.document, user=grant.user, by=request.user
        )
