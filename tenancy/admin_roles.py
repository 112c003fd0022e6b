"""Who may do what in the admin: the user's membership role in each tenant of the request.

Tenant isolation in the admin (docs/security.md) has two layers. The request runs in a
transaction that `tenancy.middleware.TenantContextMiddleware` scopes to the user's tenants
(`request.tenant_ids`), so row-level security already hides other tenants' rows. On top of
that the admins (tenancy.admin_base.TenantOwnedAdmin) decide, per tenant, from the role:

- a superuser sees and may do everything;
- any member (viewer and up) may view the tenant's rows;
- `edit_roles` (editor and up by default) may add, change and delete them;
- a staff user with no membership sees empty changelists and no row.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from tenancy.models import MembershipRole, Tenant

ALL_ROLES = frozenset(MembershipRole.values)
# Who may write content rows (projects, versions, documents, chunks, executions, exports).
CONTENT_EDITOR_ROLES = frozenset(
    {MembershipRole.OWNER.value, MembershipRole.ADMIN.value, MembershipRole.EDITOR.value}
)
# Who may manage a tenant and its memberships.
TENANT_MANAGER_ROLES = frozenset({MembershipRole.OWNER.value, MembershipRole.ADMIN.value})


def tenant_roles(request: HttpRequest) -> dict[uuid.UUID, str]:
    """The user's role in each tenant of the request's scope (cached on the request).

    Only tenants in `request.tenant_ids` count: the middleware leaves out inactive
    tenants, and so does the admin.
    """
    cached = getattr(request, "_admin_tenant_roles", None)
    if cached is not None:
        return cached
    user = request.user
    scope = list(getattr(request, "tenant_ids", None) or [])
    roles: dict[uuid.UUID, str] = {}
    if user.is_authenticated and user.is_active and scope:
        roles = dict(user.memberships.filter(tenant_id__in=scope).values_list("tenant_id", "role"))
    request._admin_tenant_roles = roles  # type: ignore[attr-defined]  # a per-request cache
    return roles


def tenants_with_role(request: HttpRequest, roles: Collection[str]) -> list[uuid.UUID]:
    """Ids of the tenants in which the user holds one of `roles`."""
    return [tenant_id for tenant_id, role in tenant_roles(request).items() if role in roles]


def has_tenant_role(request: HttpRequest, tenant_id, roles: Collection[str]) -> bool:
    """Whether the user may act in `tenant_id` with one of `roles`; superusers always may."""
    if is_superuser(request):
        return True
    return tenant_id is not None and tenant_roles(request).get(tenant_id) in roles


def is_superuser(request: HttpRequest) -> bool:
    user = request.user
    return user.is_active and user.is_superuser


def on_own_pages(request: HttpRequest, opts) -> bool:
    """Whether the request is one of the model's own admin pages (not another's delete page).

    A delete elsewhere (a project's) asks each admin about the rows it cascades to; this
    tells such a cascade from a delete of the row itself. Without a resolved URL, assume
    the row's own pages: the stricter answer.
    """
    match = getattr(request, "resolver_match", None)
    own = f"{opts.app_label}_{opts.model_name}_"
    return match is None or (match.url_name or "").startswith(own)


def is_autocomplete(request: HttpRequest) -> bool:
    """Whether the request is the admin's autocomplete view (asking on behalf of a field)."""
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name == "autocomplete"


def member_users(tenant_ids: Iterable[uuid.UUID]) -> QuerySet:
    """Users holding a membership in any of the tenants."""
    user_model = get_user_model()
    members = user_model.objects.filter(memberships__tenant_id__in=list(tenant_ids))
    return user_model.objects.filter(pk__in=members.values("pk"))


def has_tenant_field(model: type[Model]) -> bool:
    return any(field.name == "tenant" and field.is_relation for field in model._meta.fields)


class TenantListFilter(admin.SimpleListFilter):
    """Filter by tenant, offering only the tenants the user works in.

    Django's RelatedFieldListFilter would list every tenant's name, and
    RelatedOnlyFieldListFilter scans the whole table for distinct tenant ids.
    """

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        tenants = Tenant.objects.order_by("name")
        if not is_superuser(request):
            tenants = tenants.filter(pk__in=tenant_roles(request).keys())
        return [(str(tenant.pk), str(tenant)) for tenant in tenants]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(tenant_id=uuid.UUID(value))
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error
