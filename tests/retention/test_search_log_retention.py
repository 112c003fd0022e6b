"""Retention of the search log (search_queries): whole months where every tenant's policy
lets them go, batches otherwise.

transaction=True: the job is a system job and the partition drop is DDL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.db import partitions
from core.hashing import sha256_hex
from core.ids import uuid7_at
from documents.models import SearchQuery
from retention.models import RetentionRun
from retention.services import retention_enforce, retention_policy_set
from tenancy.context import system_context, tenant_context
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "search_queries"
NOW = timezone.now()


@pytest.fixture(autouse=True)
def defaults(settings):
    """Defaults far from the rows' ages, so each test states the days it relies on."""
    settings.RETENTION_DEFAULT_DAYS = {
        category: 3650
        for category in (
            "executions",
            "messages",
            "evaluation_runs",
            "exports",
            "audit_events",
            "search_queries",
        )
    }


@pytest.fixture(autouse=True)
def only_the_partitions_it_found(file_storages):
    """Partitions are DDL, which the flush between tests does not undo: the months a test
    makes go again, and the months it drops come back."""
    with connection.cursor() as cursor:
        before = partitions.partitions(cursor, TABLE)
    yield
    with system_context("test partitions"), connection.cursor() as cursor:
        for month, name in partitions.partitions(cursor, TABLE).items():
            if month not in before:
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        for month in before:
            partitions.create_month_partition(cursor, TABLE, month)


def logged_at(tenant, moment: datetime, query: str) -> None:
    """A logged search made at `moment` (its month's partition made first)."""
    # As a system job: the log's rows are read and written by their own user (none
    # here) or the tenant's owners and admins; retention reads them with the bypass.
    with system_context("test partitions"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, TABLE, moment, NOW)
        SearchQuery.objects.create(
            id=uuid7_at(moment),
            tenant=tenant,
            mode="fulltext",
            query=query,
            query_sha256=sha256_hex(query),
            k=10,
            latency_ms=1.5,
        )


def queries(tenant) -> set[str]:
    with system_context("test: read the search log"):
        return set(SearchQuery.objects.filter(tenant=tenant).values_list("query", flat=True))


def owner(tenant, name: str):
    return make_member(tenant, f"{name}@example.com")


def test_each_tenant_keeps_its_searches_for_its_own_days(tenant_a, tenant_b):
    retention_policy_set(tenant=tenant_a, by=owner(tenant_a, "ann"), search_queries_days=30)
    for tenant in (tenant_a, tenant_b):
        logged_at(tenant, NOW - timedelta(days=60), "old")
        logged_at(tenant, NOW - timedelta(days=1), "recent")

    summary = retention_enforce()

    assert queries(tenant_a) == {"recent"}
    # Tenant B keeps its old search (the default, 3650 days): its month stays, and A's old
    # row went in a batch.
    assert queries(tenant_b) == {"old", "recent"}
    assert summary.removed[tenant_a.pk][TABLE] == 1
    assert summary.removed[tenant_b.pk].get(TABLE, 0) == 0
    assert not any(name.startswith(TABLE) for name in summary.partitions_dropped)
    with tenant_context(tenant_a):
        assert RetentionRun.objects.get().removed[TABLE] == 1
    assert retention_enforce().removed[tenant_a.pk].get(TABLE, 0) == 0, "idempotent"


def test_months_every_tenant_lets_go_are_dropped_whole(tenant_a, tenant_b):
    for tenant, name in ((tenant_a, "ann"), (tenant_b, "ben")):
        retention_policy_set(tenant=tenant, by=owner(tenant, name), search_queries_days=30)
        logged_at(tenant, NOW - timedelta(days=100), "very old")
        logged_at(tenant, NOW - timedelta(days=40), "old")
        logged_at(tenant, NOW - timedelta(days=2), "recent")
    old_month = partitions.month_start(NOW - timedelta(days=100))
    old_partition = partitions.partition_name(TABLE, old_month)

    dry = retention_enforce(dry_run=True)
    assert queries(tenant_a) == queries(tenant_b) == {"very old", "old", "recent"}
    summary = retention_enforce()

    assert old_partition in dry.partitions_dropped
    assert old_partition in summary.partitions_dropped
    with connection.cursor() as cursor:
        assert old_month not in partitions.partitions(cursor, TABLE)
    assert queries(tenant_a) == queries(tenant_b) == {"recent"}
    for tenant in (tenant_a, tenant_b):
        assert summary.removed[tenant.pk][TABLE] == 2
        assert dry.removed[tenant.pk][TABLE] == 2, "a dry run reports what the run removes"


def test_a_dry_run_removes_nothing(tenant_a):
    retention_policy_set(tenant=tenant_a, by=owner(tenant_a, "ann"), search_queries_days=30)
    logged_at(tenant_a, NOW - timedelta(days=45), "old")
    summary = retention_enforce(dry_run=True)
    assert summary.removed[tenant_a.pk][TABLE] == 1
    assert queries(tenant_a) == {"old"}
    assert "not enforced yet" not in "\n".join(summary.report())
