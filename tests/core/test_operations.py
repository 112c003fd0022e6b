"""The row-level security and tenant key operations of core.db.operations, on tables of
their own.

The migrations' use of them is proved by the schema fingerprint
(tests/core/test_schema_fingerprint.py); these tests pin what each operation does
forwards and backwards, on two scratch tables made and dropped by the test.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.state import ProjectState

from core.db.connections import owner_connection, owner_role_name
from core.db.operations import (
    AddReadPolicy,
    AddTenantForeignKey,
    EnableTenantRLS,
    MoveSetNullToTrigger,
)

pytestmark = pytest.mark.django_db(transaction=True)

PARENTS, CHILDREN = "ops_probe_parents", "ops_probe_children"


@pytest.fixture
def tables():
    """Two tables shaped like ours (tenant_id, a unique (tenant_id, id)), as the owner."""
    with owner_connection():
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {PARENTS} (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, "
                f"UNIQUE (tenant_id, id))"
            )
            cursor.execute(
                f"CREATE TABLE {CHILDREN} (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, "
                "parent_id uuid, user_id uuid)"
            )
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {CHILDREN}, {PARENTS}")


def forwards(operation) -> None:
    with connection.schema_editor() as editor:
        operation.database_forwards("core", editor, ProjectState(), ProjectState())


def backwards(operation) -> None:
    with connection.schema_editor() as editor:
        operation.database_backwards("core", editor, ProjectState(), ProjectState())


def security(table: str) -> tuple[bool, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
            [table],
        )
        return cursor.fetchone()


def policies(table: str) -> dict[str, tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT policyname, cmd, roles::text, qual, with_check FROM pg_policies "
            "WHERE tablename = %s",
            [table],
        )
        return {name: rest for name, *rest in cursor.fetchall()}


def tenant_key(name: str) -> tuple[str, bool] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conname = %s",
            [name],
        )
        return cursor.fetchone()


def test_enable_tenant_rls_forces_it_with_isolation_and_the_owners_bypass(tables):
    operation = EnableTenantRLS(CHILDREN)
    forwards(operation)
    assert security(CHILDREN) == (True, True)
    tenant_check = "(tenant_id = ANY (app_current_tenant_ids()))"
    assert policies(CHILDREN) == {
        "tenant_isolation": ["ALL", "{public}", tenant_check, tenant_check],
        "system_bypass": [
            "ALL",
            f"{{{owner_role_name()}}}",
            "app_rls_bypassed()",
            "app_rls_bypassed()",
        ],
    }

    backwards(operation)
    assert security(CHILDREN) == (False, False)
    assert policies(CHILDREN) == {}


def test_enable_tenant_rls_run_twice_converges_on_the_same_policies(tables):
    # A re-run after a failure part way (the policies are dropped before they are made).
    forwards(EnableTenantRLS(CHILDREN))
    first = policies(CHILDREN)
    forwards(EnableTenantRLS(CHILDREN))
    assert policies(CHILDREN) == first


def test_add_read_policy_admits_reads_only_and_backwards_drops_it(tables):
    operation = AddReadPolicy(CHILDREN, "own_rows", using="user_id = app_current_user_id()")
    forwards(operation)
    assert policies(CHILDREN) == {
        "own_rows": ["SELECT", "{public}", "(user_id = app_current_user_id())", None]
    }
    backwards(operation)
    assert policies(CHILDREN) == {}


def set_null_trigger(key: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgname = %s",
            [f"ON_DELETE_SET_NULL_{key}"],
        )
        row = cursor.fetchone()
        return row[0] if row else None


def delete_parent_of_a_child() -> tuple:
    """A parent with a child, the parent deleted: the child's (tenant_id, parent_id)."""
    tenant, parent, child = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {PARENTS} VALUES (%s, %s)", [parent, tenant])
        cursor.execute(f"INSERT INTO {CHILDREN} VALUES (%s, %s, %s)", [child, tenant, parent])
        cursor.execute(f"DELETE FROM {PARENTS} WHERE id = %s", [parent])
        cursor.execute(f"SELECT tenant_id, parent_id FROM {CHILDREN} WHERE id = %s", [child])
        row = cursor.fetchone()
    assert row[0] == tenant
    return row


def test_tenant_foreign_key_set_null_clears_the_reference_and_keeps_the_tenant(tables):
    # Not the key's own action (Citus refuses it on a key holding tenant_id): a NO ACTION
    # key and an AFTER DELETE trigger on the parent table, named to fire before the key's.
    operation = AddTenantForeignKey(
        CHILDREN, "ops_probe_parent_tenant_fk", column="parent_id", to=PARENTS, on_delete="SET NULL"
    )
    forwards(operation)
    assert tenant_key("ops_probe_parent_tenant_fk") == (
        f"FOREIGN KEY (tenant_id, parent_id) REFERENCES {PARENTS}(tenant_id, id)",
        True,
    )
    assert set_null_trigger("ops_probe_parent_tenant_fk") == (
        'CREATE TRIGGER "ON_DELETE_SET_NULL_ops_probe_parent_tenant_fk" AFTER DELETE ON '
        f"public.{PARENTS} FOR EACH ROW EXECUTE FUNCTION ops_probe_parent_tenant_fk_set_null()"
    )
    assert delete_parent_of_a_child()[1] is None

    backwards(operation)
    assert tenant_key("ops_probe_parent_tenant_fk") is None
    assert set_null_trigger("ops_probe_parent_tenant_fk") is None


def test_the_set_null_trigger_clears_only_the_deleted_rows_tenant(tables):
    # A row of another tenant naming the same id (no key is checked on it here: the key
    # is added NOT VALID after it) keeps its reference.
    parent, tenant, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {PARENTS} VALUES (%s, %s)", [parent, tenant])
        cursor.execute(f"INSERT INTO {CHILDREN} VALUES (%s, %s, %s)", [uuid.uuid4(), other, parent])
    forwards(
        AddTenantForeignKey(
            CHILDREN,
            "ops_probe_parent_tenant_fk",
            column="parent_id",
            to=PARENTS,
            on_delete="SET NULL",
            not_valid=True,
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {PARENTS} WHERE id = %s", [parent])
        cursor.execute(f"SELECT parent_id FROM {CHILDREN} WHERE tenant_id = %s", [other])
        assert cursor.fetchone() == (parent,)


def test_move_set_null_to_trigger_converts_a_native_key_and_back(tables):
    native = (
        f"FOREIGN KEY (tenant_id, parent_id) REFERENCES {PARENTS}(tenant_id, id) "
        "ON DELETE SET NULL (parent_id)"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {CHILDREN} ADD CONSTRAINT ops_probe_parent_tenant_fk {native}")
    operation = MoveSetNullToTrigger(
        CHILDREN, "ops_probe_parent_tenant_fk", column="parent_id", to=PARENTS
    )
    forwards(operation)
    assert tenant_key("ops_probe_parent_tenant_fk") == (
        f"FOREIGN KEY (tenant_id, parent_id) REFERENCES {PARENTS}(tenant_id, id) NOT VALID",
        False,
    )
    assert set_null_trigger("ops_probe_parent_tenant_fk") is not None
    assert delete_parent_of_a_child()[1] is None
    forwards(operation)  # a re-run (or a database built with the trigger) converges
    assert delete_parent_of_a_child()[1] is None

    backwards(operation)
    assert tenant_key("ops_probe_parent_tenant_fk") == (f"{native} NOT VALID", False)
    assert set_null_trigger("ops_probe_parent_tenant_fk") is None
    assert delete_parent_of_a_child()[1] is None


def test_tenant_foreign_key_refuses_a_parent_of_another_tenant(tables):
    forwards(
        AddTenantForeignKey(CHILDREN, "ops_probe_parent_tenant_fk", column="parent_id", to=PARENTS)
    )
    parent = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {PARENTS} VALUES (%s, %s)", [parent, uuid.uuid4()])
        with pytest.raises(IntegrityError, match="ops_probe_parent_tenant_fk"):
            cursor.execute(
                f"INSERT INTO {CHILDREN} VALUES (%s, %s, %s)", [uuid.uuid4(), uuid.uuid4(), parent]
            )


def test_tenant_foreign_key_not_valid_is_left_for_a_later_validation(tables):
    forwards(
        AddTenantForeignKey(
            CHILDREN,
            "ops_probe_parent_tenant_fk",
            column="parent_id",
            to=PARENTS,
            on_delete="CASCADE",
            not_valid=True,
        )
    )
    assert tenant_key("ops_probe_parent_tenant_fk") == (
        f"FOREIGN KEY (tenant_id, parent_id) REFERENCES {PARENTS}(tenant_id, id) "
        "ON DELETE CASCADE NOT VALID",
        False,
    )


@pytest.mark.django_db(transaction=False)
def test_tenant_foreign_key_refuses_an_unknown_on_delete_action():
    with pytest.raises(ValueError, match=r"on_delete of children_fk: 'RESTRICT' is not one of"):
        AddTenantForeignKey(
            "children", "children_fk", column="p", to="parents", on_delete="RESTRICT"
        )


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    "operation",
    [
        EnableTenantRLS("children"),
        AddReadPolicy("children", "own_rows", using="true"),
        AddTenantForeignKey("children", "children_fk", column="p", to="parents"),
        MoveSetNullToTrigger("children", "children_fk", column="p", to="parents"),
    ],
    ids=lambda operation: type(operation).__name__,
)
def test_operations_leave_the_migration_state_alone_and_describe_themselves(operation):
    state = ProjectState()
    operation.state_forwards("core", state)
    assert state.models == {}
    assert operation.reversible
    assert "children" in operation.describe()
