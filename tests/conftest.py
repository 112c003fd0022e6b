"""Shared fixtures: the alice/bob/charlie cast of the isolation tests, and tenants.

Tests connect as the runtime role, so row-level security applies: rows of a tenant
are created inside `tenant_context(tenant)`.
"""

import pytest
from django.db import connection
from model_bakery import baker

from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def tenant_a(db) -> Tenant:
    return baker.make(Tenant, name="Tenant A", slug="tenant-a")


@pytest.fixture
def tenant_b(db) -> Tenant:
    return baker.make(Tenant, name="Tenant B", slug="tenant-b")


def make_member(tenant: Tenant, email: str, role: str = "owner", **fields) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD, name=email, **fields)
    with tenant_context(tenant):
        Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def alice(tenant_a) -> User:
    """A staff member who owns tenant A."""
    return make_member(tenant_a, "alice@example.com", is_staff=True)


@pytest.fixture
def bob(tenant_b) -> User:
    """A staff member who owns tenant B."""
    return make_member(tenant_b, "bob@example.com", is_staff=True)


@pytest.fixture
def charlie(db) -> User:
    """A staff user with no membership at all."""
    return User.objects.create_user(
        email="charlie@example.com", password=PASSWORD, name="Charlie", is_staff=True
    )


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser(email="root@example.com", password=PASSWORD, name="Root")


@pytest.fixture
def in_tenant_a(tenant_a):
    with tenant_context(tenant_a):
        yield tenant_a


@pytest.fixture
def owner_is_runtime_role(settings):
    """As where DATABASE_OWNER_URL is unset: the "owner" credentials are the runtime role's.

    The system_bypass policies admit only the real owner, so system jobs then see no
    tenant row at all.
    """
    settings.DATABASE_OWNER = {
        key: connection.settings_dict[key] for key in ("USER", "PASSWORD", "HOST", "PORT")
    }
