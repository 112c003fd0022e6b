"""Reads of users, tenants and memberships."""

from __future__ import annotations

import uuid

from tenancy.models import Membership, Tenant, User


def tenant_ids_for_user(user: User) -> list[uuid.UUID]:
    """The tenants a user works in: all of them for a superuser, else their memberships.

    Needs app.user_id set to the user (the memberships policy) unless a tenant or
    system context already admits the rows.
    """
    if user.is_superuser:
        return list(Tenant.objects.order_by("id").values_list("id", flat=True))
    return list(
        Membership.objects.filter(user=user, tenant__is_active=True)
        .order_by("tenant_id")
        .values_list("tenant_id", flat=True)
    )
