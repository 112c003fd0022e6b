"""Users, tenants and memberships as the database enforces them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User


def constraint_name(error: IntegrityError) -> str | None:
    return error.__cause__.diag.constraint_name


def insert_user(email: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (email, name, password, profile_data, is_active, is_staff, "
            "is_superuser) VALUES (%s, '', '!', '{}', true, false, false)",
            [email],
        )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Alice@x.com", "alice@x.com"),
        ("alice@x.com", "ALICE@X.COM"),
        ("alice@x.com", "alice@x.com"),
    ],
)
def test_email_is_unique_case_insensitively_in_raw_sql(db, first, second):
    insert_user(first)
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        insert_user(second)
    assert constraint_name(excinfo.value) == "users_email_ci_uniq"


def test_email_is_unique_case_insensitively_through_the_orm(db):
    # bulk_create skips the manager's lower-casing and full_clean: the index decides.
    User.objects.bulk_create([User(email="Alice@x.com", password="!")])
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        User.objects.bulk_create([User(email="alice@x.com", password="!")])
    assert constraint_name(excinfo.value) == "users_email_ci_uniq"


def test_different_emails_are_accepted(db):
    insert_user("alice@x.com")
    insert_user("alice@y.com")
    assert User.objects.count() == 2


def test_create_user_stores_the_email_lower_cased_and_login_ignores_case(db):
    user = User.objects.create_user(email="Alice@Example.COM", password="pw-123456789")
    assert user.email == "alice@example.com"
    assert User.objects.get_by_natural_key("ALICE@example.com") == user


def test_tenant_slug_is_unique(tenant_a):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        Tenant.objects.bulk_create([Tenant(name="Again", slug=tenant_a.slug)])
    assert constraint_name(excinfo.value) == "tenants_slug_uniq"


def test_a_user_has_one_membership_per_tenant(alice, tenant_a, tenant_b):
    with tenant_context(tenant_a, tenant_b):
        Membership.objects.create(tenant=tenant_b, user=alice, role="viewer")
        with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
            Membership.objects.bulk_create([Membership(tenant=tenant_a, user=alice, role="admin")])
        assert constraint_name(excinfo.value) == "memberships_tenant_user_uniq"
        assert Membership.objects.filter(user=alice).count() == 2


def test_deleting_a_user_deletes_their_memberships(alice, tenant_a):
    with tenant_context(tenant_a):
        assert Membership.objects.filter(user=alice).exists()
        alice.delete()
        assert not Membership.objects.filter(user_id=alice.pk).exists()
