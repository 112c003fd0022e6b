"""What tenant_context sends: one statement where it begins the transaction, and where
nested, one to read-and-set and one to restore (issue 10). Its isolation rules are
tested in test_rls.py and test_middleware.py."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tenancy.context import current_tenant_ids, tenant_context, tenant_scope


def statements(queries) -> list[str]:
    return [query["sql"] for query in queries]


@pytest.mark.django_db(transaction=True)
def test_entering_where_the_transaction_begins_is_one_statement(tenant_a):
    with CaptureQueriesContext(connection) as queries:
        with tenant_context(tenant_a):
            pass
    begin, set_tenant, commit = statements(queries)
    assert (begin, commit) == ("BEGIN", "COMMIT")
    # Nothing read: a new transaction has no scope yet; nothing restored after it.
    assert set_tenant.startswith("SELECT set_config('app.tenant_ids'")
    assert "current_setting" not in set_tenant
    assert str(tenant_a.pk) in set_tenant


@pytest.mark.django_db(transaction=True)
def test_a_connection_learns_in_its_first_context_statement_that_it_is_not_on_citus(tenant_a):
    # A new connection (the pool's too, if one is configured).
    connection.close()
    connection.close_pool()
    with CaptureQueriesContext(connection) as queries:
        with tenant_context(tenant_a):
            pass
        with tenant_context(tenant_a):
            pass
    first, second = (sql for sql in statements(queries) if "set_config" in sql)
    # Asked inside the first statement, not in one of its own; remembered afterwards.
    assert "pg_extension" in first and "pg_extension" not in second
    assert len(statements(queries)) == 6  # BEGIN, the set, COMMIT: twice
    assert connection.citus is False


@pytest.mark.django_db(transaction=True)
def test_the_settings_end_with_the_transaction_it_began(tenant_a):
    with tenant_context(tenant_a):
        assert current_tenant_ids() == [tenant_a.pk]
    with pytest.raises(RuntimeError), tenant_context(tenant_a):
        raise RuntimeError("the block fails: its transaction rolls back")
    with transaction.atomic():
        assert current_tenant_ids() == []


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_settings_are_restored(tenant_a, tenant_b):
    with transaction.atomic():
        with tenant_context(tenant_a):
            with tenant_context(tenant_b):
                assert current_tenant_ids() == [tenant_b.pk]
            assert current_tenant_ids() == [tenant_a.pk]
        # The caller's transaction goes on: no tenant of the block stays behind.
        assert current_tenant_ids() == []


@pytest.mark.django_db(transaction=True)
def test_in_a_transaction_opened_by_hand_the_settings_are_restored(tenant_a):
    transaction.set_autocommit(False)
    try:
        with tenant_context(tenant_a):
            assert current_tenant_ids() == [tenant_a.pk]
        assert current_tenant_ids() == []
    finally:
        transaction.rollback()
        transaction.set_autocommit(True)


def test_nested_it_reads_and_sets_in_one_statement_and_restores_in_one(tenant_a, tenant_b):
    with tenant_context(tenant_a, tenant_b):
        with CaptureQueriesContext(connection) as queries:
            with tenant_context(tenant_b):
                pass
        assert current_tenant_ids() == sorted([tenant_a.pk, tenant_b.pk])
    savepoint, read_and_set, restore, release = statements(queries)
    assert savepoint.startswith("SAVEPOINT") and release.startswith("RELEASE SAVEPOINT")
    assert read_and_set.startswith("SELECT current_setting(")
    assert "set_config('app.tenant_ids'" in read_and_set
    assert restore.startswith("SELECT set_config(") and "current_setting" not in restore


def test_a_failed_nested_context_leaves_the_outer_scope_as_it_was(tenant_a, tenant_b):
    with tenant_scope([tenant_a, tenant_b], locked=True):
        with pytest.raises(ValueError), tenant_context(tenant_b):
            raise ValueError("rolled back to the savepoint, which restores the settings")
        assert current_tenant_ids() == sorted([tenant_a.pk, tenant_b.pk])
        # Still locked: the scope of before came back whole.
        with pytest.raises(PermissionDenied), tenant_scope([tenant_a, tenant_b, "0" * 32]):
            pass
