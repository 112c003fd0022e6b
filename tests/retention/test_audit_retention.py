"""Retention of audit events (retention.services, docs/operations.md "Retention of audit
events"): each tenant's chain cut at its policy, at an anchor audit_verify starts from;
whole months dropped where every tenant's events in them are below their anchors.

transaction=True throughout: the job is a system job, the partition drop is DDL.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from core.db import partitions
from core.ids import uuid7_at
from documents.models import Project
from retention.services import retention_enforce, retention_policy_set
from tenancy.audit import audit_seal, audit_verify
from tenancy.context import system_context, tenant_context
from tenancy.models import AuditChainAnchor, AuditEvent
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "audit_events"
NOW = timezone.now()
OLD = NOW - timedelta(days=60)
# Months before the cutoff of a 30-day policy, whatever the day of the month.
OLDER = NOW - timedelta(days=100)


@pytest.fixture(autouse=True)
def only_the_partitions_it_found():
    """Partitions are DDL, which the flush between tests does not undo: the months a test
    makes go again (with their events), the months it drops come back."""
    with connection.cursor() as cursor:
        before = partitions.partitions(cursor, EVENTS)
    yield
    with system_context("test partitions"), connection.cursor() as cursor:
        for month, name in partitions.partitions(cursor, EVENTS).items():
            if month not in before:
                cursor.execute(f"ALTER TABLE {EVENTS} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        for month in before:
            partitions.create_month_partition(cursor, EVENTS, month)


@pytest.fixture(autouse=True)
def defaults(settings):
    settings.RETENTION_DEFAULT_DAYS = {
        **settings.RETENTION_DEFAULT_DAYS,
        "executions": 3650,
        "messages": 3650,
        "evaluation_runs": 3650,
        "exports": 3650,
        "audit_events": 3650,
    }


def old_events(tenant, moment: datetime, count: int) -> list[uuid.UUID]:
    """Events as the trigger would have written them at `moment` (unsealed), in a month
    of their own: the trigger itself only writes events of today."""
    with system_context("test: old events"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, EVENTS, moment, NOW)
        ids = []
        for n in range(count):
            changes = f'{{"new": {{"name": "old {n}"}}}}'
            made = moment + timedelta(milliseconds=n)
            ids.append(uuid7_at(made))
            cursor.execute(
                f"INSERT INTO {EVENTS} (id, tenant_id, table_name, row_id, action, actor, "
                "request_id, changes, changes_sha256, created_at) VALUES (%s, %s, 'projects', "
                "%s, 'insert', 'service', '', %s::jsonb, "
                "encode(sha256(convert_to(%s::jsonb::text, 'UTF8')), 'hex'), %s)",
                [ids[-1], tenant.pk, uuid.uuid4(), changes, changes, made],
            )
    return ids


def present(tenant, ids: list[uuid.UUID]) -> int:
    with system_context("test: read"):
        return AuditEvent.objects.filter(tenant=tenant, pk__in=ids).count()


def sealed(tenant) -> list[AuditEvent]:
    with system_context("test: read"):
        return list(AuditEvent.objects.filter(tenant=tenant, seq__isnull=False).order_by("seq"))


def anchor_of(tenant) -> AuditChainAnchor | None:
    with system_context("test: read"):
        return AuditChainAnchor.objects.filter(tenant=tenant).first()


@pytest.fixture
def owner_a(tenant_a):
    return make_member(tenant_a, "owner-a@example.com", "owner", is_staff=True)


@pytest.fixture
def owner_b(tenant_b):
    return make_member(tenant_b, "owner-b@example.com", "owner", is_staff=True)


def test_a_tenants_old_events_are_cut_at_an_anchor_and_the_chain_verifies_from_it(
    tenant_a, tenant_b, owner_a
):
    retention_policy_set(tenant=tenant_a, by=owner_a, audit_events_days=30)
    old_a, old_b = old_events(tenant_a, OLD, 3), old_events(tenant_b, OLD, 2)
    audit_seal()
    # The old ones were sealed first (they are the oldest): seq 1 to 3.
    third = sealed(tenant_a)[2]
    assert (third.pk, third.seq) == (old_a[2], 3)

    summary = retention_enforce()

    assert summary.removed[tenant_a.pk][EVENTS] == 3
    assert summary.removed[tenant_b.pk].get(EVENTS, 0) == 0
    # Tenant b keeps its events of that month: the month stays, cut by the batches.
    assert not [name for name in summary.partitions_dropped if name.startswith(EVENTS)]
    assert present(tenant_a, old_a) == 0 and present(tenant_b, old_b) == 2
    anchor = anchor_of(tenant_a)
    assert (anchor.seq, anchor.hash) == (3, third.hash)
    assert anchor_of(tenant_b) is None
    verification = audit_verify()
    assert verification.ok
    assert any(
        line.startswith(f"ok      tenant {tenant_a.slug}: ") and "from seq 4," in line
        for line in verification.report()
    )
    # The chain goes on from there, and a second run removes nothing more.
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="after the cut")
    assert audit_verify().ok
    assert retention_enforce().removed[tenant_a.pk].get(EVENTS, 0) == 0
    assert anchor_of(tenant_a).seq == 3


def test_whole_months_go_where_every_tenants_events_are_below_their_anchors(
    tenant_a, tenant_b, owner_a, owner_b
):
    for tenant, owner in ((tenant_a, owner_a), (tenant_b, owner_b)):
        retention_policy_set(tenant=tenant, by=owner, audit_events_days=30)
    old_a, old_b = old_events(tenant_a, OLDER, 3), old_events(tenant_b, OLDER, 2)
    audit_seal()
    month = partitions.partition_name(EVENTS, partitions.month_start(OLDER))

    dry = retention_enforce(dry_run=True)
    assert present(tenant_a, old_a) == 3 and anchor_of(tenant_a) is None
    real = retention_enforce()

    assert month in real.partitions_dropped
    assert (real.partitions_dropped, real.removed) == (dry.partitions_dropped, dry.removed)
    assert real.removed[tenant_a.pk][EVENTS] == 3 and real.removed[tenant_b.pk][EVENTS] == 2
    with connection.cursor() as cursor:
        assert month not in partitions.partitions(cursor, EVENTS).values()
    assert present(tenant_a, old_a) == present(tenant_b, old_b) == 0
    assert (anchor_of(tenant_a).seq, anchor_of(tenant_b).seq) == (3, 2)
    assert audit_verify().ok


def test_an_old_event_sealed_after_a_younger_one_waits_for_the_prefix(tenant_a, owner_a):
    """Committed late, an old event is sealed after younger ones: cutting it alone would
    leave a gap in the chain, so it stays until the prefix reaches it."""
    retention_policy_set(tenant=tenant_a, by=owner_a, audit_events_days=30)
    audit_seal()
    (late,) = old_events(tenant_a, OLD, 1)
    audit_seal()
    assert sealed(tenant_a)[-1].pk == late

    summary = retention_enforce()

    assert summary.removed[tenant_a.pk].get(EVENTS, 0) == 0
    assert present(tenant_a, [late]) == 1 and anchor_of(tenant_a) is None
    assert audit_verify().ok


def test_a_chain_cut_to_its_head_goes_on_from_its_anchor(tenant_a, settings):
    settings.RETENTION_DEFAULT_DAYS = {**settings.RETENTION_DEFAULT_DAYS, "audit_events": 30}
    old_events(tenant_a, OLD, 2)
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="recent")
    audit_seal()
    assert len(sealed(tenant_a)) == 3

    # Seen from 31 days on, every event is past the policy: the cut is the head.
    later = retention_enforce(now=NOW + timedelta(days=31))

    assert later.removed[tenant_a.pk][EVENTS] == 3
    assert anchor_of(tenant_a).seq == 3
    # The chain goes on after the anchor: the anchor's own write (audited) and the run's
    # record, sealed from seq 4.
    audit_seal()
    chain = sealed(tenant_a)
    assert [(event.seq, event.table_name) for event in chain] == [
        (4, "audit_chain_anchors"),
        (5, "retention_runs"),
    ]
    assert chain[0].prev_hash == anchor_of(tenant_a).hash
    assert audit_verify().ok


def test_the_owner_deletes_only_sealed_events_at_or_below_the_anchor(tenant_a):
    old_events(tenant_a, OLD, 3)
    audit_seal()
    old_events(tenant_a, OLD, 1)  # unsealed

    def delete(condition: str) -> int:
        with system_context("test: delete"), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {EVENTS} WHERE tenant_id = %s AND {condition}", [tenant_a.pk]
            )
            return cursor.rowcount

    with pytest.raises(DatabaseError, match="append-only"):
        delete("seq = 1")  # no anchor yet
    chain = sealed(tenant_a)
    with system_context("test: anchor"):
        AuditChainAnchor.objects.create(tenant=tenant_a, seq=2, hash=chain[1].hash, cut_at=NOW)
    for refused in ("seq = 3", "seq IS NULL"):
        with pytest.raises(DatabaseError, match="append-only"):
            delete(refused)
    assert delete("seq <= 2") == 2
    with pytest.raises(DatabaseError, match="append-only"):
        with system_context("test: global"), connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_events_global")
    assert audit_verify(seal=False).ok
