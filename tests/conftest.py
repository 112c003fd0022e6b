"""Shared fixtures: the alice/bob/charlie cast of the isolation tests, tenants, file
storages, PgBouncer; and the `system_program` marker on the tests that start one.

Tests connect as the runtime role, so row-level security applies: rows of a tenant
are created inside `tenant_context(tenant)`. Helpers that are not fixtures live in
named modules (tests/factories.py, tests/storages.py, tests/locks.py): no test module
imports this one.
"""

import os
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from model_bakery import baker

from tenancy.context import tenant_context
from tenancy.models import Tenant, User
from tests import citus_cluster as citus
from tests.factories import PASSWORD, make_member, tenant_id_on_worker
from tests.pgbouncer import PgBouncer, routed_through, running_pgbouncer
from tests.storages import FileStorages, point_storages

# Markers given by fixture: a test using one of these, even through another fixture, is
# marked. Modules and tests that are slow or start a program themselves say so in their
# own `pytestmark` or decorator. Slow is over about 5 s (pytest --durations=0
# --durations-min=5), left out of the fast loop `pytest -m "not slow"`.
SYSTEM_PROGRAM_FIXTURES = frozenset({"pgbouncer", "chromium", "citus_cluster"})
SLOW_FIXTURES = frozenset(
    {
        "one_percent",  # tests/documents/test_search.py: 1000 chunks
        "citus_cluster",  # three servers; the first run also builds Citus
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SYSTEM_PROGRAM_FIXTURES:
            item.add_marker(pytest.mark.system_program)
        if fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


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


# tests/core/test_citus.py runs the isolation tests in a pytest of their own against a
# database it has created on every node of a Citus cluster, migrated and distributed:
# that pytest uses DATABASE_URL's database as it is instead of making a test database
# (which would exist on the coordinator alone, without Citus). Each test still rolls
# back its transaction.
if os.environ.get("TESTS_ON_DATABASE_AS_IS") == "1":

    @pytest.fixture(scope="session")
    def django_db_setup() -> None:
        pass


@pytest.fixture
def tenant_a(db) -> Tenant:
    return baker.make(Tenant, id=tenant_id_on_worker(0), name="Tenant A", slug="tenant-a")


@pytest.fixture
def tenant_b(db) -> Tenant:
    """On a Citus cluster, on another worker than tenant A (tests/factories.py)."""
    return baker.make(Tenant, id=tenant_id_on_worker(1), name="Tenant B", slug="tenant-b")


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
def file_storages(settings, tmp_path) -> FileStorages:
    """Uploads and export files (and the health check's probe) in the test's own folder."""
    folders = FileStorages(media=tmp_path / "media", exports=tmp_path / "exports")
    point_storages(settings, default=folders.media, exports=folders.exports)
    return folders


@pytest.fixture
def owner_is_runtime_role(settings):
    """As where DATABASE_OWNER_URL is unset: the "owner" credentials are the runtime role's.

    The system_bypass policies admit only the real owner, so system jobs then see no
    tenant row at all.
    """
    settings.DATABASE_OWNER = {
        key: connection.settings_dict[key] for key in ("USER", "PASSWORD", "HOST", "PORT")
    }


@pytest.fixture
def no_model_index_left(transactional_db) -> Iterator[None]:
    """Embedding models' indexes are built CONCURRENTLY, outside the test's transaction,
    so the flush after a transactional test leaves them, and the schema tests that run
    later would find them: dropped after the test, found by name in the catalog (a test
    may configure models of its own)."""
    yield
    from psycopg import sql

    from core.db.connections import owner_autocommit_connection

    with owner_autocommit_connection() as owner:
        names = owner.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'chunk_embeddings' "
            "AND indexname LIKE 'chunk\\_embeddings\\_hnsw\\_%'"
        ).fetchall()
        for (name,) in names:
            owner.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
            )


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


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[citus.CitusCluster]:
    """A real Citus cluster, a coordinator and two workers (tests/citus_cluster.py).

    Skips naming the Debian packages where Citus cannot be built (fails under .ci/run).
    """
    with citus.citus_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def citus_database(citus_cluster, django_db_blocker) -> Iterator[str]:
    """A fresh database on every node of the cluster, migrated by the owner on the
    coordinator and distributed (`citus_distribute`); its name. Tests reach it through
    `on_citus`."""
    name = f"agentic_citus_{uuid.uuid4().hex[:8]}"
    try:
        citus_cluster.create_database(name)
        with django_db_blocker.unblock(), citus.django_on(citus_cluster, name):
            call_command("migrate", verbosity=0)
            call_command("citus_distribute", verbosity=0)
        yield name
    finally:
        citus_cluster.drop_database(name)


@pytest.fixture
def on_citus(citus_cluster, citus_database, django_db_blocker) -> Iterator[str]:
    """Django's default connection on the distributed database for the test, as the
    runtime role (system_context as the owner). Its rows stay: the database is the
    session's, so a test makes its own tenants."""
    with django_db_blocker.unblock(), citus.django_on(citus_cluster, citus_database):
        yield citus_database
