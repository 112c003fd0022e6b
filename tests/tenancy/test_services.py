from functools import partial

import pytest

from tenancy.context import tenant_context
from tenancy.models import Membership, User
from tenancy.services import membership_set, tenant_create, user_create
from tests.locks import run_together


def test_login_lookup_is_case_insensitive_and_uses_the_lower_email_index(db):
    user = user_create(email="Ada@Example.com", password="x" * 12, name="Ada")
    assert User.objects.get_by_natural_key("ADA@example.COM") == user
    # The WHERE clause is the index's expression, so users_email_ci_uniq can serve it.
    sql = str(User.objects.with_email("ada@example.com").query)
    assert 'LOWER("users"."email") = ada@example.com' in sql
    assert "UPPER" not in sql


def test_membership_set_creates_then_changes_the_role(alice, tenant_a):
    bob = user_create(email="bob2@example.com", password="x" * 12)
    membership_set(tenant=tenant_a, user=bob, role="viewer")
    membership_set(tenant=tenant_a, user=bob, role="editor")
    with tenant_context(tenant_a):
        assert list(Membership.objects.filter(user=bob).values_list("role", flat=True)) == [
            "editor"
        ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_membership_set_makes_one_row():
    owner = user_create(email="owner@example.com", password="x" * 12)
    tenant = tenant_create(name="T", slug="t", owner=owner)
    user = user_create(email="new@example.com", password="x" * 12)
    roles = ["viewer" if n % 2 else "editor" for n in range(8)]
    errors = run_together(
        [partial(membership_set, tenant=tenant, user=user, role=role) for role in roles]
    )
    assert errors == []
    with tenant_context(tenant):
        assert Membership.objects.filter(user=user).count() == 1
