"""Admin of retention (docs/operations.md, "Retention"): each tenant's policy, and the runs.

A tenant's owners and admins see its policy (the days applied, the default where the
policy is empty) and its last run with what it removed; only owners change it, through
retention_policy_set, which refuses everyone else (admin_roles: managing a tenant is
owners' and admins', but how long its data lives is the owners' decision). The runs are
read-only: the job writes them.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from retention.models import CATEGORIES, RetentionPolicy, RetentionRun, days_field
from retention.services import (
    NOT_ENFORCED,
    default_days,
    retention_policy_set,
)
from tenancy.admin_base import ReadOnlyAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES
from tenancy.models import MembershipRole

POLICY_EDITORS = frozenset({MembershipRole.OWNER.value})


def removed_table(run: RetentionRun) -> SafeString:
    rows = [(name, count) for name, count in sorted(run.removed.items()) if count]
    if not rows:
        return format_html("{}", "nothing")
    return format_html(
        "<table><tbody>{}</tbody></table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", rows),
    )


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(TenantOwnedAdmin):
    """A tenant's retention days; owners change them, admins read them."""

    view_roles = TENANT_MANAGER_ROLES
    edit_roles = POLICY_EDITORS
    list_display = ("tenant", *(days_field(c) for c in CATEGORIES), "updated_at")
    list_select_related = ("tenant",)
    fields = ("tenant", *(days_field(c) for c in CATEGORIES))
    change_sections = (
        ("Applied", ("applied_days",)),
        ("Last run", ("last_run",)),
    )

    def has_delete_permission(self, request, obj=None):
        # Emptying every field returns a tenant to the defaults; the row stays.
        return False

    @admin.display(description="days applied")
    def applied_days(self, obj: RetentionPolicy) -> SafeString:
        defaults = default_days()
        rows = [
            (
                category,
                getattr(obj, days_field(category)) or defaults[category],
                "policy" if getattr(obj, days_field(category)) else "default",
                "not enforced yet" if category in NOT_ENFORCED else "",
            )
            for category in CATEGORIES
        ]
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{} days</td><td>{}</td><td>{}</td></tr>", rows
            ),
        )

    @admin.display(description="last run")
    def last_run(self, obj: RetentionPolicy) -> SafeString:
        run = (
            RetentionRun.objects.filter(tenant_id=obj.tenant_id, dry_run=False)
            .order_by("-started_at")
            .first()
        )
        if run is None:
            return format_html("{}", "No retention run yet.")
        return format_html(
            "{} to {}: removed {}",
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            f"{run.finished_at:%H:%M:%S}",
            removed_table(run),
        )

    def create_object(self, request, obj, form):
        return retention_policy_set(
            tenant=obj.tenant_id,
            by=request.user,
            **{days_field(c): getattr(obj, days_field(c)) for c in CATEGORIES},
        )

    def update_object(self, request, obj, form):
        return retention_policy_set(
            tenant=obj.tenant_id,
            by=request.user,
            **{name: getattr(obj, name) for name in form.changed_data if name != "tenant"},
        )


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdminMixin, TenantOwnedAdmin):
    """What each retention run removed in a tenant; written by the job only."""

    view_roles = TENANT_MANAGER_ROLES
    list_display = ("started_at", "tenant", "dry_run", "finished_at", "removed_summary")
    list_filter = ("dry_run",)
    list_select_related = ("tenant",)
    ordering = ("-started_at",)
    readonly_fields = (
        "tenant",
        "run_id",
        "started_at",
        "finished_at",
        "dry_run",
        "days",
        "removed_rows",
    )
    fields = readonly_fields

    @admin.display(description="removed")
    def removed_summary(self, obj: RetentionRun) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(obj.removed.items()) if n) or "nothing"

    @admin.display(description="removed")
    def removed_rows(self, obj: RetentionRun) -> SafeString:
        return removed_table(obj)
