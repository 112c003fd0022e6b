"""Writes of users, tenants and memberships."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from tenancy.context import tenant_context
from tenancy.models import Membership, MembershipRole, Tenant, User


def user_create(*, email: str, password: str | None, name: str = "", **fields: Any) -> User:
    return User.objects.create_user(email=email, password=password, name=name, **fields)


def tenant_create(
    *, name: str, slug: str, owner: User | None = None, settings: dict | None = None
) -> Tenant:
    """A new tenant; `owner`, if given, becomes its first member with the owner role."""
    with transaction.atomic():
        tenant = Tenant(name=name, slug=slug, settings=settings or {})
        tenant.full_clean()
        tenant.save()
        if owner is not None:
            membership_set(tenant=tenant, user=owner, role=MembershipRole.OWNER)
    return tenant


def membership_set(*, tenant: Tenant, user: User, role: str) -> Membership:
    """Give `user` the `role` in `tenant`, creating or updating the membership.

    Race-safe: concurrent calls for one (tenant, user) queue on the row lock, and a
    concurrent first insert is caught by memberships_tenant_user_uniq and retried as an
    update.
    """
    with tenant_context(tenant):
        membership = Membership(tenant=tenant, user=user, role=role)
        membership.full_clean(validate_unique=False, validate_constraints=False)
        existing = Membership.objects.select_for_update().filter(tenant=tenant, user=user)
        current = existing.first()
        if current is None:
            try:
                with transaction.atomic():
                    membership.save()
                return membership
            except IntegrityError:
                current = existing.get()  # created meanwhile by a concurrent call
        if current.role != role:
            current.role = role
            current.save(update_fields=["role"])
    return current
