"""Admin for the audit trail (docs/security.md, "Audit trail"): read-only logs, and the
"History" link of every change page, which opens the row's audit events.

The tenant's log is shown to its owners and admins (superusers see every tenant's and
the global log). Both lists are big tables: no COUNT(*) over them, newest first through
the primary key (core.admin.LargeTableAdminMixin), filters that add a WHERE clause only.
"""

from __future__ import annotations

from django.contrib import admin

from core.admin import LargeTableAdminMixin, RecentValuesListFilter, UUIDValueListFilter
from tenancy.admin_base import ReadOnlyAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES, is_superuser
from tenancy.models import AuditChainAnchor, AuditEvent, GlobalAuditEvent


class ActorFilter(RecentValuesListFilter):
    title = "actor"
    parameter_name = "actor"


class TableFilter(RecentValuesListFilter):
    title = "table"
    parameter_name = "table_name"


class RowFilter(UUIDValueListFilter):
    title = "row"
    parameter_name = "row_id"


class UserFilter(UUIDValueListFilter):
    title = "user"
    parameter_name = "actor_user_id"


AUDIT_LIST_DISPLAY = (
    "created_at",
    "action",
    "table_name",
    "row_id",
    "actor",
    "actor_user_id",
    "request_id",
)
AUDIT_LIST_FILTER = (
    ActorFilter,
    UserFilter,
    TableFilter,
    "action",
    ("created_at", admin.DateFieldListFilter),
    RowFilter,
)

# An event's values, when they were redacted, and what its place in the chain covers.
AUDIT_EVENT_FIELDS = ("changes", "redacted_at", "changes_sha256", "prev_hash", "hash")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    """A tenant's audit log, for its owners and admins."""

    view_roles = TENANT_MANAGER_ROLES
    list_display = ("created_at", "tenant", *AUDIT_LIST_DISPLAY[1:])
    list_filter = AUDIT_LIST_FILTER
    list_select_related = ("tenant",)
    # The tenant's chain position is the event's identity in audit_verify's report.
    readonly_fields = ("tenant", "seq", *AUDIT_LIST_DISPLAY, *AUDIT_EVENT_FIELDS)
    fields = readonly_fields
    autocomplete_fields = ()
    uuid_search_fields = ("id", "row_id", "actor_user_id")

    def has_module_permission(self, request):
        return self.has_view_permission(request)


@admin.register(GlobalAuditEvent)
class GlobalAuditEventAdmin(ReadOnlyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """The events of users, tenants and shared templates: superusers only."""

    list_display = AUDIT_LIST_DISPLAY
    list_filter = AUDIT_LIST_FILTER
    readonly_fields = ("seq", *AUDIT_LIST_DISPLAY, *AUDIT_EVENT_FIELDS)
    fields = readonly_fields

    def has_view_permission(self, request, obj=None):
        return is_superuser(request)

    def has_module_permission(self, request):
        return is_superuser(request)


@admin.register(AuditChainAnchor)
class AuditChainAnchorAdmin(ReadOnlyAdminMixin, TenantOwnedAdmin):
    """Where each tenant's chain starts after retention cut it; written by retention only."""

    view_roles = TENANT_MANAGER_ROLES
    list_display = ("tenant", "seq", "hash", "cut_at")
    list_select_related = ("tenant",)
    readonly_fields = list_display
    fields = readonly_fields
    autocomplete_fields = ()

    def has_module_permission(self, request):
        return self.has_view_permission(request)
