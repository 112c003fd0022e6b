"""The schema is ready for a Citus cluster distributing by tenant_id (docs/operations.md).

Read from the catalog, so a table added tomorrow is judged too: every tenant table has
a unique (tenant_id, id) and only tenant-first unique keys, every foreign key between
tenant tables pairs tenant_id with tenant_id and never changes it (no SET NULL, SET
DEFAULT or ON UPDATE CASCADE), every other table is declared global, and no trigger
reads beyond its row's tenant.
"""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.ops.distribution import (
    CASCADE,
    COORDINATOR_TABLES,
    REFERENCE_TABLES,
    SET_DEFAULT,
    SET_NULL,
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


def test_a_set_null_key_holding_tenant_id_is_found(tables):
    # What Citus refuses: "SET NULL or SET DEFAULT is not supported in ON DELETE operation
    # when distribution key is included in the foreign key constraint".
    tables["chunks"].foreign_keys.append(
        ForeignKey(
            "probe_document_fk",
            ["tenant_id", "document_id"],
            "documents",
            ["tenant_id", "id"],
            on_delete=SET_NULL,
        )
    )
    tables["chunks"].foreign_keys.append(
        ForeignKey("probe_tenant_fk", ["tenant_id"], "tenants", ["id"], on_delete=SET_DEFAULT)
    )
    assert distribution_problems(tables) == [
        "chunks: foreign key probe_document_fk holds tenant_id and is ON DELETE SET NULL "
        "(AddTenantForeignKey does SET NULL by a trigger)",
        "chunks: foreign key probe_tenant_fk holds tenant_id and is ON DELETE SET DEFAULT "
        "(AddTenantForeignKey does SET NULL by a trigger)",
    ]


def test_an_on_update_cascade_key_holding_tenant_id_is_found(tables):
    tables["chunks"].foreign_keys.append(
        ForeignKey(
            "probe_document_fk",
            ["tenant_id", "document_id"],
            "documents",
            ["tenant_id", "id"],
            on_update=CASCADE,
        )
    )
    assert distribution_problems(tables) == [
        "chunks: foreign key probe_document_fk holds tenant_id and is ON UPDATE CASCADE"
    ]


def test_the_set_null_keys_are_no_action_keys_with_a_trigger(tables):
    # AddTenantForeignKey(on_delete="SET NULL"): the key changes nothing, its trigger
    # on the referenced table clears the column (checked by the tests of each table).
    keys = {fk.name: fk for fk in tables["execution_sources"].foreign_keys}
    assert keys["execution_sources_chunk_tenant_fk"].on_delete == "a"
    assert "execution_sources_chunk_tenant_fk_set_null" in tables["chunks"].trigger_functions


def test_a_foreign_key_to_a_coordinator_table_is_found(tables):
    tables["chunks"].foreign_keys.append(
        ForeignKey("probe_session_fk", ["session_key"], "django_session", ["session_key"])
    )
    tables["users"].foreign_keys.append(
        ForeignKey("probe_attempt_fk", ["id"], "axes_accessattempt", ["id"], on_delete=CASCADE)
    )
    # A reference table's NO ACTION key to it is accepted (Citus then manages the
    # coordinator table as a local table of its own).
    tables["tenants"].foreign_keys.append(
        ForeignKey("probe_log_fk", ["id"], "axes_accesslog", ["id"])
    )
    assert distribution_problems(tables) == [
        "chunks: foreign key probe_session_fk to the coordinator table django_session",
        "users: reference table with foreign key probe_attempt_fk to the coordinator table "
        "axes_accessattempt ON DELETE CASCADE ON UPDATE NO ACTION: only NO ACTION or RESTRICT",
    ]


def test_the_triggers_that_read_other_tables_are_read_and_pass(tables):
    functions = {name for table in tables.values() for name in table.trigger_functions}
    for reader in (
        "project_live",
        "error_recovered_on_insert",
        "errors_recovered",
        "idempotency_key_claim",
        "proposal_base_version",
        "proposal_status_transition",
    ):
        assert any(name.startswith(f"pgtrigger_{reader}_") for name in functions), reader
    assert distribution_problems(tables) == []


def test_a_trigger_reading_a_tenant_table_by_id_alone_is_found(tables):
    tables["execution_errors"].trigger_functions["probe_by_id"] = (
        "BEGIN PERFORM 1 FROM agent_executions WHERE id = NEW.execution_id; "
        "UPDATE chunks c SET content = '' FROM documents d "
        "WHERE c.document_id = d.id AND d.tenant_id = NEW.tenant_id; RETURN NEW; END"
    )
    assert distribution_problems(tables) == [
        "execution_errors: trigger function probe_by_id reads agent_executions "
        "without tenant_id = NEW/OLD.tenant_id",
        "execution_errors: trigger function probe_by_id reads chunks "
        "without tenant_id = NEW/OLD.tenant_id",
    ]


def test_a_trigger_pinned_to_its_rows_tenant_passes(tables):
    tables["execution_errors"].trigger_functions["probe_pinned"] = (
        "DECLARE failed agent_executions; BEGIN "
        'SELECT * INTO failed FROM "agent_executions" WHERE tenant_id = NEW.tenant_id; '
        "PERFORM 1 FROM agent_executions f JOIN agent_executions s "
        "ON s.tenant_id = f.tenant_id WHERE f.tenant_id = NEW.tenant_id; "
        "INSERT INTO decisions (tenant_id, id) VALUES (NEW.tenant_id, NEW.id); "
        "PERFORM 1 FROM tenants WHERE id = NEW.tenant_id; "
        "RAISE EXCEPTION 'nothing from projects here'; RETURN NEW; END"
    )
    assert distribution_problems(tables) == []


def test_a_trigger_reading_a_coordinator_table_is_found(tables):
    tables["users"].trigger_functions["probe_session"] = (
        "BEGIN DELETE FROM django_session WHERE session_key = OLD.email; RETURN OLD; END"
    )
    assert distribution_problems(tables) == [
        "users: trigger function probe_session reads the coordinator table django_session"
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
