"""The schema is ready for a Citus cluster distributing by tenant_id (docs/operations.md).

Read from the catalog, so a table added tomorrow is judged too: every tenant table has
a unique (tenant_id, id) and only tenant-first unique keys, every foreign key between
tenant tables pairs tenant_id with tenant_id, and every other table is declared global.
"""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.ops.distribution import (
    COORDINATOR_TABLES,
    REFERENCE_TABLES,
    ForeignKey,
    Table,
    distribution_order,
    distribution_problems,
    read_tables,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def tables():
    with connection.cursor() as cursor:
        return read_tables(cursor)


def test_every_tenant_table_can_be_distributed_by_tenant_id(tables):
    assert distribution_problems(tables) == []


def test_the_global_tables_are_the_declared_reference_and_coordinator_tables(tables):
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    print("tenant tables:", ", ".join(distribution_order(tables)))
    print("reference tables:", ", ".join(sorted(REFERENCE_TABLES)))
    print("coordinator tables:", ", ".join(sorted(COORDINATOR_TABLES)))
    assert set(tables) - tenant == set(REFERENCE_TABLES) | set(COORDINATOR_TABLES)
    assert {"projects", "agent_executions", "chunks", "memberships"} <= tenant


# The checker itself, on the real catalog with one thing added (the runtime role may
# not run DDL, and the rules are what is under test here).


def test_a_unique_key_without_tenant_id_is_found(tables):
    tables["documents"].unique_keys["probe_title_uniq"] = ["title"]
    assert distribution_problems(tables) == [
        "documents: unique probe_title_uniq (title) lacks tenant_id"
    ]


def test_a_foreign_key_without_tenant_id_is_found(tables):
    tables["chunks"].foreign_keys.append(
        ForeignKey("probe_document_fk", ["document_id"], "documents", ["id"])
    )
    assert distribution_problems(tables) == [
        "chunks: foreign key probe_document_fk (document_id) -> documents "
        "does not pair tenant_id with tenant_id"
    ]


def test_a_global_table_referencing_a_tenant_table_is_found(tables):
    tables["users"].foreign_keys.append(
        ForeignKey("probe_project_fk", ["tenant_id", "project_id"], "projects", ["tenant_id", "id"])
    )
    assert distribution_problems(tables) == [
        "users: global table with foreign key probe_project_fk to projects"
    ]


def test_an_undeclared_table_without_tenant_id_is_found(tables):
    tables["probe_settings"] = Table("probe_settings", None, primary_key=["id"])
    assert distribution_problems(tables) == [
        "probe_settings: no NOT NULL tenant_id and not in GLOBAL_TABLES"
    ]


def test_citus_plan_references_then_distributes_in_foreign_key_order(capsys):
    call_command("citus_plan")
    lines = capsys.readouterr().out.splitlines()
    print("\n".join(lines))
    assert lines[0].startswith("SELECT create_reference_table(")
    assert "SELECT create_reference_table('tenants');" in lines
    assert "SELECT create_reference_table('project_templates');" in lines
    distributed = [line for line in lines if "create_distributed_table" in line]
    names = [line.split("'")[1] for line in distributed]
    assert (
        names.index("projects") < names.index("agent_executions") < names.index("execution_sources")
    )
    assert names.index("documents") < names.index("chunks")
    assert all(f"colocate_with => '{names[0]}'" in line for line in distributed[1:])
    assert (
        "ALTER TABLE chunks DROP CONSTRAINT chunks_pkey, "
        "ADD CONSTRAINT chunks_pkey PRIMARY KEY (tenant_id, id);"
    ) in lines


# The command switches to the owner role, which needs a connection outside a transaction.
@pytest.mark.django_db(transaction=True)
def test_distributing_without_citus_is_refused_and_changes_nothing(tables):
    with pytest.raises(CommandError, match="no citus extension.*Nothing was changed"):
        call_command("citus_distribute")
    with connection.cursor() as cursor:
        assert read_tables(cursor) == tables
