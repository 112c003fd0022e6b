"""Reads of users, tenants and memberships."""

from __future__ import annotations

import uuid

from tenancy.context import TenantAccess
from tenancy.models import FULL_ACCESS_ROLES, Membership, Tenant, User


def tenant_access_for_user(user: User) -> TenantAccess:
    """The tenants a user works in, and those where the user sees every restricted row:
    all of them for a superuser, else their memberships (and those as owner or admin).
    One query.

    Needs app.user_id set to the user (the memberships policy) unless a tenant or
    system context already admits the rows.
    """
    if user.is_superuser:
        ids = list(Tenant.objects.order_by("id").values_list("id", flat=True))
        return TenantAccess(ids, ids if user.is_active else [])
    rows = list(
        Membership.objects.filter(user=user, tenant__is_active=True)
        .order_by("tenant_id")
        .values_list("tenant_id", "role")
    )
    return TenantAccess(
        [tenant_id for tenant_id, _ in rows],
        [tenant_id for tenant_id, role in rows if role in FULL_ACCESS_ROLES],
    )


def tenant_ids_for_user(user: User) -> list[uuid.UUID]:
    """The tenants a user works in (tenant_access_for_user's first half)."""
    return tenant_access_for_user(user).tenant_ids
