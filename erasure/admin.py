"""Admin of erasure receipts (docs/security.md, "Erasure"): read-only, for the tenant's
owners and admins, newest first. The receipts of a person's account and of an erased
tenant belong to no tenant one can open: the commands print them, and the operator reads
them as the owner (docs/operations.md, "Erasure")."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from erasure.models import ErasureReceipt
from tenancy.admin_base import ReadOnlyAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES


@admin.register(ErasureReceipt)
class ErasureReceiptAdmin(ReadOnlyAdminMixin, TenantOwnedAdmin):
    view_roles = TENANT_MANAGER_ROLES
    list_display = ("completed_at", "tenant", "subject_type", "subject_id", "requested_by")
    list_filter = ("subject_type", ("completed_at", admin.DateFieldListFilter))
    list_select_related = ("tenant",)
    uuid_search_fields = ("id", "subject_id")
    search_fields = ("requested_by",)
    readonly_fields = (
        "tenant",
        "subject_type",
        "subject_id",
        "subject_sha256",
        "requested_by",
        "completed_at",
        "touched",
        "hashes",
    )
    fields = readonly_fields
    autocomplete_fields = ()

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    @admin.display(description="rows touched")
    def touched(self, obj: ErasureReceipt) -> SafeString:
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td></tr>", sorted(obj.rows_touched.items())
            ),
        )

    @admin.display(description="SHA-256 of what was removed")
    def hashes(self, obj: ErasureReceipt) -> SafeString:
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                ((table, " ".join(found)) for table, found in sorted(obj.removed_sha256.items())),
            ),
        )
