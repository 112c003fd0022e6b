"""Shared fixtures: the alice/bob/charlie cast of the isolation tests, tenants, PgBouncer.

Tests connect as the runtime role, so row-level security applies: rows of a tenant
are created inside `tenant_context(tenant)`.
"""

import os

import pytest
from django.conf import settings
from django.db import connection
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from model_bakery import baker

from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User
from tests.pgbouncer import PgBouncer, routed_through, running_pgbouncer

PASSWORD = "correct-horse-battery-staple"

# Property tests (tests/core/test_properties.py): few examples, so the suite stays fast,
# and no example database written into the repository. HYPOTHESIS_PROFILE=thorough for
# a longer hunt. Each example runs against the real database, whose time varies: no deadline.
hypothesis_settings.register_profile(
    "project",
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "thorough", parent=hypothesis_settings.get_profile("project"), max_examples=500
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "project"))


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


@pytest.fixture(scope="session")
def pgbouncer(django_db_setup) -> PgBouncer:
    """A real PgBouncer in transaction mode in front of the test server (tests/pgbouncer.py).

    Skips naming the package where pgbouncer is not installed (fails under .ci/run).
    Started after the test database exists and stopped before it is dropped, which its
    server connections would otherwise prevent.
    """
    direct = settings.DATABASES["default"]
    with running_pgbouncer(
        host=direct["HOST"],
        port=direct["PORT"],
        users={settings.DATABASE_RUNTIME_ROLE: direct["PASSWORD"]},
    ) as bouncer:
        yield bouncer


@pytest.fixture
def through_pgbouncer(pgbouncer, transactional_db) -> PgBouncer:
    """Django's default connection, as the runtime role, goes through PgBouncer.

    transaction=True semantics: each transaction may run on another server connection,
    so a test's rows must be committed to be seen by the next one.
    """
    with routed_through(connection, pgbouncer):
        yield pgbouncer
