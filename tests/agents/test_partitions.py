"""agent_executions partitioned by month of its UUIDv7 id, and its retention (core.db.partitions).

transaction=True throughout: partitions are DDL made by the owner, and the conversion
is a migration run against the real tables.
"""

import io
import uuid
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection
from django.utils import timezone
from health_check.exceptions import ServiceUnavailable

from agents.models import AgentExecution, EvaluationRun, ExecutionIdempotencyKey
from agents.selectors import execution_history
from agents.services import (
    change_proposal_propose,
    decision_record,
    execution_history_retain,
    execution_partitions_ensure,
    message_add,
)
from core.db import partitions
from core.db.connections import owner_connection
from core.ids import uuid7_at, uuid7_floor
from core.ops.health import PartitionsAhead
from documents.models import Project
from documents.services import document_version_create
from exports.models import Export
from tenancy.context import system_context, tenant_context

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "agent_executions"
NOW = datetime(2026, 12, 10, tzinfo=UTC)
# Three months of history, each execution's id made at that time.
MONTHS = [datetime(2026, 9, 15, tzinfo=UTC), datetime(2026, 10, 15, tzinfo=UTC), NOW]


@pytest.fixture(autouse=True)
def only_the_partitions_it_found():
    """Partitions are DDL, which the flush between tests does not undo: each test
    leaves the months as it found them (the schema tests compare schemas)."""
    with connection.cursor() as cursor:
        before = partitions.partitions(cursor, TABLE)
    yield
    with system_context("test partitions"), connection.cursor() as cursor:
        for month, name in partitions.partitions(cursor, TABLE).items():
            if month not in before:
                lower, upper = partitions.month_bounds(month)
                # Its rows first, with what depends on them, as the foreign keys say.
                cursor.execute(
                    f"DELETE FROM {TABLE} WHERE id >= %s AND id < %s", [str(lower), str(upper)]
                )
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        for month in before:
            partitions.create_month_partition(cursor, TABLE, month)


@pytest.fixture
def project(tenant_a):
    with tenant_context(tenant_a):
        return Project.objects.create(tenant=tenant_a, name="History")


@pytest.fixture
def history_months():
    with system_context("test partitions"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, TABLE, MONTHS[0], NOW)


def make_execution(tenant, project, moment, **fields) -> AgentExecution:
    with tenant_context(tenant):
        return AgentExecution.objects.create(
            id=uuid7_at(moment),
            tenant=tenant,
            project=project,
            agent_type="writer",
            correlation_id=uuid.uuid4(),
            **fields,
        )


def evaluate(tenant, project, execution) -> EvaluationRun:
    with tenant_context(tenant):
        return EvaluationRun.objects.create(
            tenant=tenant, project=project, execution=execution, score=50
        )


def partition_months() -> list[str]:
    with connection.cursor() as cursor:
        return [f"{m:%Y-%m}" for m in sorted(partitions.partitions(cursor, TABLE))]


def test_the_migration_converts_a_table_with_rows_and_keeps_every_row_and_key(tenant_a, project):
    call_command("migrate", "agents", "0009", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [TABLE])
            assert cursor.fetchone() == ("r",)
        runs = [make_execution(tenant_a, project, moment) for moment in MONTHS]
        # A run whose step started after the month turned, and a claimed key.
        step = make_execution(tenant_a, project, MONTHS[1], parent=runs[0])
        keyed = make_execution(tenant_a, project, MONTHS[0], idempotency_key="job-1")
        evaluations = [evaluate(tenant_a, project, run) for run in runs]
    finally:
        call_command("migrate", "agents", verbosity=0)

    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [TABLE])
        assert cursor.fetchone() == ("p",)
    assert {"2026-09", "2026-10", "2026-12"} <= set(partition_months())
    with tenant_context(tenant_a):
        ids = set(AgentExecution.objects.values_list("id", flat=True))
        assert ids == {run.pk for run in runs} | {step.pk, keyed.pk}
        assert AgentExecution.objects.get(pk=step.pk).parent_id == runs[0].pk
        assert set(EvaluationRun.objects.values_list("execution_id", flat=True)) == {
            e.execution_id for e in evaluations
        }
        assert ExecutionIdempotencyKey.objects.get(idempotency_key="job-1").execution_id == keyed.pk
        # The keys still hold on the partitioned table: cascade, and the idempotency key.
        AgentExecution.objects.filter(pk=runs[0].pk).delete()
        assert not AgentExecution.objects.filter(pk=step.pk).exists()
        assert not EvaluationRun.objects.filter(execution_id=runs[0].pk).exists()
    with pytest.raises(IntegrityError, match="agent_executions_tenant_idempotency_uniq"):
        make_execution(tenant_a, project, NOW, idempotency_key="job-1")


def test_every_partition_has_forced_row_level_security_and_the_parents_policies(
    tenant_a, tenant_b, project, history_months
):
    run = make_execution(tenant_a, project, MONTHS[0])
    name = partitions.partition_name(TABLE, partitions.month_start(MONTHS[0]))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relrowsecurity, relforcerowsecurity, "
            "(SELECT array_agg(polname ORDER BY polname) FROM pg_policy WHERE polrelid = c.oid) "
            "FROM pg_class c WHERE relname = %s",
            [name],
        )
        assert cursor.fetchone() == (True, True, ["system_bypass", "tenant_isolation"])
    # Read directly, the partition shows its rows to their tenant only.
    for tenant, seen in ((tenant_a, [(run.pk,)]), (tenant_b, [])):
        with tenant_context(tenant), connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {name}")
            assert cursor.fetchall() == seen


def test_a_history_query_by_tenant_and_time_scans_only_its_months(
    tenant_a, project, history_months
):
    for moment in MONTHS:
        make_execution(tenant_a, project, moment)
    october = datetime(2026, 10, 1, tzinfo=UTC)
    with tenant_context(tenant_a):
        history = execution_history(
            tenant=tenant_a, start=october, end=datetime(2026, 11, 1, tzinfo=UTC)
        )
        plan = history.explain()
        assert [e.id for e in history] == [
            e.id
            for e in AgentExecution.objects.filter(id__gte=uuid7_floor(october))
            if e.id < uuid7_floor(datetime(2026, 11, 1, tzinfo=UTC))
        ]
    print(plan)
    scanned = {name for name in partition_names() if name in plan}
    assert scanned == {"agent_executions_p2026_10"}


def partition_names() -> list[str]:
    with connection.cursor() as cursor:
        return sorted(partitions.partitions(cursor, TABLE).values())


def test_a_history_query_needs_an_end_after_its_start(tenant_a):
    with pytest.raises(ValidationError) as excinfo:
        execution_history(tenant=tenant_a, start=NOW, end=NOW)
    assert "end" in excinfo.value.message_dict


def test_partitions_ahead_are_created_once():
    # Years after today: no other test (nor migrate, which creates the months ahead of
    # the real date) has made these months, whatever ran before.
    later = datetime(2031, 1, 10, tzinfo=UTC)
    created = execution_partitions_ensure(ahead=3, now=later)
    assert {"agent_executions_p2031_02", "agent_executions_p2031_03"} <= set(created)
    assert {"search_queries_p2031_02", "audit_events_p2031_02"} <= set(created)
    assert execution_partitions_ensure(ahead=3, now=later) == []
    assert {"2031-01", "2031-02", "2031-03", "2031-04"} <= set(partition_months())


def test_a_dry_run_names_the_partitions_it_would_create_and_creates_none():
    created = execution_partitions_ensure(ahead=6, now=NOW, dry_run=True)
    assert "agent_executions_p2027_06" in created
    assert "2027-06" not in partition_months()


def test_the_command_with_dry_run_reports_the_retention_and_removes_nothing(
    tenant_a, project, history_months
):
    make_execution(tenant_a, project, MONTHS[0])
    out = io.StringIO()

    call_command("partitions", "--retain-months", "1", "--dry-run", stdout=out)

    assert f"would remove: {TABLE} 1" in out.getvalue()
    assert "Dry run: nothing was changed" in out.getvalue()
    assert "2026-09" in partition_months()
    with tenant_context(tenant_a):
        assert AgentExecution.objects.count() == 1


@pytest.mark.parametrize("ahead", [-1, 121, True])
def test_partitions_ahead_refuses_a_bad_count(ahead):
    with pytest.raises(ValidationError) as excinfo:
        execution_partitions_ensure(ahead=ahead)
    assert "ahead" in excinfo.value.message_dict


def test_retention_removes_whole_old_months_and_what_depends_on_them(
    tenant_a, project, history_months
):
    september, october, december = (make_execution(tenant_a, project, m) for m in MONTHS)
    late_step = make_execution(tenant_a, project, MONTHS[1], parent=september)
    evaluate(tenant_a, project, september)
    kept_evaluation = evaluate(tenant_a, project, december)

    removed = execution_history_retain(months=3, now=NOW)  # keeps October to December

    assert removed[TABLE] == 2  # the September run and its October step
    assert removed["evaluation_runs"] == 1
    assert "2026-09" not in partition_months()
    with tenant_context(tenant_a):
        assert set(AgentExecution.objects.values_list("id", flat=True)) == {
            october.pk,
            december.pk,
        }
        assert not AgentExecution.objects.filter(pk=late_step.pk).exists()
        assert list(EvaluationRun.objects.values_list("id", flat=True)) == [kept_evaluation.pk]


def test_retention_keeps_a_message_and_a_decision_whose_execution_goes(
    tenant_a, project, history_months
):
    """Their keys clear the column by a trigger (no key's own SET NULL: Citus refuses it),
    which dropping a whole partition never fires: retention clears it itself."""
    old = make_execution(tenant_a, project, MONTHS[0])
    message = message_add(
        tenant=tenant_a, project=project, execution=old, role="agent", content="done"
    )
    decision = decision_record(
        tenant=tenant_a,
        project=project,
        execution=old,
        category="scope",
        question="How far?",
        options=[{"name": "near", "notes": ""}],
        selected="near",
    )

    removed = execution_history_retain(months=3, now=NOW)

    assert removed["conversation_messages"] == 1 and removed["decisions"] == 1
    with tenant_context(tenant_a):
        message.refresh_from_db()
        decision.refresh_from_db()
    assert (message.execution_id, decision.execution_id) == (None, None)


def test_retention_refuses_while_a_proposal_under_review_needs_the_month(
    tenant_a, project, history_months
):
    old = make_execution(tenant_a, project, MONTHS[0])
    with tenant_context(tenant_a):
        base = document_version_create(
            tenant=tenant_a, project=project, document_type="about", content="x"
        )
        change_proposal_propose(tenant=tenant_a, base_version=base, content="y", execution=old)
    with pytest.raises(CommandError, match="1 change proposals under review"):
        call_command("partitions", "--retain-months", "1")
    assert "2026-09" in partition_months()
    with tenant_context(tenant_a):
        assert AgentExecution.objects.filter(pk=old.pk).exists()


def test_retention_refuses_while_an_export_is_built_for_a_project_with_old_runs(
    tenant_a, project, history_months
):
    make_execution(tenant_a, project, MONTHS[0])
    with tenant_context(tenant_a):
        Export.objects.create(tenant=tenant_a, project=project)
    with pytest.raises(ValidationError, match="1 exports are being built"):
        execution_history_retain(months=1, now=NOW)
    assert "2026-09" in partition_months()


@pytest.mark.parametrize("months", [0, -2, True])
def test_retention_refuses_a_bad_count(months):
    with pytest.raises(ValidationError) as excinfo:
        execution_history_retain(months=months)
    assert "retain_months" in excinfo.value.message_dict


def test_health_fails_while_next_months_partition_is_missing():
    upcoming = partitions.add_months(partitions.month_start(timezone.now()), 1)
    name = partitions.partition_name(TABLE, upcoming)
    with system_context("test partitions"), connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        cursor.execute(f"DROP TABLE {name}")
    try:
        with pytest.raises(ServiceUnavailable, match=f"missing partitions {name}"):
            PartitionsAhead().run()
    finally:
        assert execution_partitions_ensure(ahead=1) == [name]
    PartitionsAhead().run()


ERROR_SEARCH_INDEXES = ("agent_exec_error_type_trgm", "agent_exec_error_msg_trgm")


def index_state(parent_index: str) -> tuple[bool, set[str]]:
    """Whether the partitioned index is valid, and the partitions whose index it holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [parent_index]
        )
        (valid,) = cursor.fetchone()
        cursor.execute(
            "SELECT t.relname FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE i.inhparent = %s::regclass",
            [parent_index],
        )
        return valid, {name for (name,) in cursor.fetchall()}


def test_the_error_search_indexes_are_built_per_partition_and_attached(
    tenant_a, project, history_months
):
    """agents.0023 (AddIndexToPartitionsConcurrently): each partition's index is built
    concurrently and attached, so the parent's is valid; a run that stopped half-way
    goes on where it stopped; a month made later gets the index from the parent."""
    call_command("migrate", "agents", "0022", verbosity=0)
    try:
        for moment in MONTHS:
            make_execution(tenant_a, project, moment, error_type="TimeoutError")
        assert not any(index_state_exists(name) for name in ERROR_SEARCH_INDEXES)
        # A first run that stopped after one partition: declared and attached by hand.
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE INDEX agent_exec_error_type_trgm ON ONLY agent_executions "
                "USING gin (error_type gin_trgm_ops)"
            )
            cursor.execute(
                "CREATE INDEX agent_executions_p2026_09_agent_exec_error_type_trgm ON "
                "agent_executions_p2026_09 USING gin (error_type gin_trgm_ops)"
            )
            cursor.execute(
                "ALTER INDEX agent_exec_error_type_trgm ATTACH PARTITION "
                "agent_executions_p2026_09_agent_exec_error_type_trgm"
            )
        assert index_state("agent_exec_error_type_trgm")[0] is False
    finally:
        call_command("migrate", "agents", verbosity=0)
    every = set(partition_names())
    for name in ERROR_SEARCH_INDEXES:
        assert index_state(name) == (True, every)
    with system_context("test partitions"), connection.cursor() as cursor:
        partitions.create_month_partition(cursor, TABLE, datetime(2031, 5, 1, tzinfo=UTC))
    for name in ERROR_SEARCH_INDEXES:
        assert "agent_executions_p2031_05" in index_state(name)[1]


def index_state_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return cursor.fetchone()[0]
