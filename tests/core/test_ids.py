"""UUIDv7 primary keys: well formed and time-ordered, from Python and from the database."""

from __future__ import annotations

import time
import types
import uuid

import pytest
from django.db import connection

import core.ids
from core.ids import uuid7, uuid7_time_ms
from tenancy.models import Tenant, User


def assert_uuid7(value: uuid.UUID) -> None:
    assert value.version == 7
    assert value.variant == uuid.RFC_4122  # variant bits 10


def test_uuid7_has_version_7_and_variant_10():
    for value in (uuid7() for _ in range(100)):
        assert_uuid7(value)
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10


def test_uuid7_encodes_the_current_time():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    # The counter may borrow a millisecond or two when called very fast.
    assert before <= uuid7_time_ms(value) <= after + 2


def test_uuid7_in_a_tight_loop_is_strictly_increasing():
    values = [uuid7() for _ in range(20_000)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


@pytest.fixture
def frozen_clock(monkeypatch):
    """core.ids sees a clock that only moves when the test moves it."""
    clock = types.SimpleNamespace(ms=1_700_000_000_000)
    monkeypatch.setattr(core.ids, "time", types.SimpleNamespace(time_ns=lambda: clock.ms * 10**6))
    monkeypatch.setattr(core.ids, "_last_ms", 0)
    monkeypatch.setattr(core.ids, "_counter", 0)
    return clock


def test_uuid7_stays_ordered_when_one_millisecond_overflows_the_counter(frozen_clock):
    values = [uuid7() for _ in range(10_000)]  # more than the 12-bit counter holds
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert uuid7_time_ms(values[0]) == frozen_clock.ms
    assert uuid7_time_ms(values[-1]) > frozen_clock.ms  # borrowed later milliseconds


def test_uuid7_stays_ordered_when_the_clock_goes_back(frozen_clock):
    first = uuid7()
    frozen_clock.ms -= 5_000
    second = uuid7()
    frozen_clock.ms += 10_000
    third = uuid7()
    assert first < second < third


def test_orm_inserts_get_uuid7_keys(db):
    tenant = Tenant.objects.create(name="T", slug="t")
    user = User.objects.create_user(email="u@example.com", password="pw-123456789")
    assert_uuid7(tenant.pk)
    assert_uuid7(user.pk)
    assert Tenant.objects.get(pk=tenant.pk) == tenant


def test_raw_sql_inserts_without_id_get_uuid7_keys_from_the_database(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants (name, slug, settings, is_active) "
            "VALUES ('T', 't', '{}', true) RETURNING id"
        )
        assert_uuid7(cursor.fetchone()[0])
        cursor.execute(
            "INSERT INTO users (email, name, password, profile_data, is_active, is_staff, "
            "is_superuser) VALUES ('u@example.com', '', '!', '{}', true, false, false) "
            "RETURNING id"
        )
        assert_uuid7(cursor.fetchone()[0])


def test_rows_created_one_by_one_through_the_orm_sort_by_id_in_creation_order(db):
    created = [Tenant.objects.create(name=f"T{i}", slug=f"t{i}").slug for i in range(100)]
    assert list(Tenant.objects.order_by("id").values_list("slug", flat=True)) == created


def test_rows_bulk_created_sort_by_id_in_creation_order(db):
    tenants = Tenant.objects.bulk_create(Tenant(name=f"T{i}", slug=f"t{i}") for i in range(500))
    created = [tenant.slug for tenant in tenants]
    assert list(Tenant.objects.order_by("id").values_list("slug", flat=True)) == created


def test_rows_inserted_by_raw_sql_sort_by_id_in_insertion_order(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants (name, slug, settings, is_active) "
            "SELECT 'T', 't' || i, '{}', true FROM generate_series(1, 1000) AS i"
        )
        for i in range(1001, 1011):  # and in separate statements
            cursor.execute(
                "INSERT INTO tenants (name, slug, settings, is_active) "
                "VALUES ('T', %s, '{}', true)",
                [f"t{i}"],
            )
    slugs = list(Tenant.objects.order_by("id").values_list("slug", flat=True))
    assert slugs == [f"t{i}" for i in range(1, 1011)]
