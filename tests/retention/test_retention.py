"""Retention per tenant (retention.services, `manage.py retention`).

transaction=True throughout: the job is a system job (system_context switches to the
owner role, outside any transaction), and the partition drop is DDL.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from agents.models import (
    AgentExecution,
    ConversationMessage,
    EvaluationRun,
    ExecutionError,
    ExecutionIdempotencyKey,
    ExecutionSource,
)
from agents.services import (
    change_proposal_propose,
    evaluation_record,
    execution_record_sources,
    message_add,
)
from core.db import partitions
from core.ids import uuid7_at
from documents.models import Chunk, DocumentVersion, Project
from exports import services as exports
from exports.models import Export
from retention.models import RetentionPolicy, RetentionRun
from retention.services import (
    retention_enforce,
    retention_policy_for,
    retention_policy_set,
)
from tenancy.context import system_context, tenant_context
from tests.admin_helpers import REFUSED, admin_url, logged_in
from tests.factories import make_member, make_tenant_rows

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTIONS = "agent_executions"
NOW = timezone.now()
OLD = NOW - timedelta(days=60)
RECENT = NOW - timedelta(days=1)
EVERYTHING = ("executions_days", "messages_days", "evaluation_runs_days", "exports_days")


@pytest.fixture(autouse=True)
def only_the_partitions_it_found(file_storages):
    """Partitions are DDL, which the flush between tests does not undo: the months a test
    makes go again (the schema tests compare schemas), and the months it drops come back."""
    with connection.cursor() as cursor:
        before = partitions.partitions(cursor, EXECUTIONS)
    yield
    with system_context("test partitions"), connection.cursor() as cursor:
        for month, name in partitions.partitions(cursor, EXECUTIONS).items():
            if month not in before:
                lower, upper = partitions.month_bounds(month)
                # Its rows first, with what depends on them, as the foreign keys say.
                cursor.execute(
                    f"DELETE FROM {EXECUTIONS} WHERE id >= %s AND id < %s",
                    [str(lower), str(upper)],
                )
                cursor.execute(f"ALTER TABLE {EXECUTIONS} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        for month in before:
            partitions.create_month_partition(cursor, EXECUTIONS, month)


@pytest.fixture(autouse=True)
def defaults(settings):
    """Defaults far from the rows' ages, so each test states the days it relies on."""
    settings.RETENTION_DEFAULT_DAYS = {
        "executions": 3650,
        "messages": 3650,
        "evaluation_runs": 3650,
        "exports": 3650,
        "audit_events": 3650,
        "search_queries": 3650,
    }


def months_from(moment: datetime) -> None:
    with system_context("test partitions"), connection.cursor() as cursor:
        partitions.ensure_months(cursor, EXECUTIONS, moment, NOW)


def backdate(table: str, tenant, pk, moment: datetime) -> uuid.UUID:
    """Give a row the id it would have had if made at `moment` (nothing points at it)."""
    new = uuid7_at(moment)
    with tenant_context(tenant), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET id = %s WHERE tenant_id = %s AND id = %s", [new, tenant.pk, pk]
        )
        assert cursor.rowcount == 1
    return new


def history(tenant, moment: datetime, label: str) -> dict[str, object]:
    """One of each kind of row the policy covers, made at `moment`: an execution with an
    error, a source, an evaluation and an idempotency key; a message; an evaluation of a
    version; an export with its file."""
    rows = make_tenant_rows(tenant, label=label)
    project = rows[Project]
    with tenant_context(tenant):
        # The factory's export is pending, as if being built: a build holds the months of
        # its project's executions (agents.services.history).
        Export.objects.filter(tenant=tenant, pk=rows[Export].pk).update(status="failed")
        execution = AgentExecution.objects.create(
            id=uuid7_at(moment),
            tenant=tenant,
            project=project,
            agent_type="writer",
            correlation_id=uuid.uuid4(),
            idempotency_key=f"key {label}",
        )
        ExecutionError.objects.create(
            tenant=tenant,
            execution=execution,
            node="writer",
            error_type="E",
            message="m",
            attempt=1,
        )
        EvaluationRun.objects.create(tenant=tenant, project=project, execution=execution, score=5)
    execution_record_sources(
        tenant=tenant, execution=execution, results=[{"chunk": rows[Chunk], "score": 0.5}]
    )
    message = message_add(tenant=tenant, project=project, role="user", content=f"hi {label}")
    evaluation = evaluation_record(
        tenant=tenant, score=70, document_version=rows[DocumentVersion], evaluator="r"
    )
    export = exports.export_create(tenant=tenant, project=project)
    return {
        "execution": execution.pk,
        "message": backdate("conversation_messages", tenant, message.pk, moment),
        "evaluation": backdate("evaluation_runs", tenant, evaluation.pk, moment),
        "export": backdate("exports", tenant, export.pk, moment),
        "export_key": export.storage_key,
    }


def present(tenant, made: dict[str, object], storage_root) -> dict[str, bool]:
    with tenant_context(tenant):
        execution = made["execution"]
        return {
            "execution": AgentExecution.objects.filter(pk=execution).exists(),
            "error": ExecutionError.objects.filter(execution_id=execution).exists(),
            "source": ExecutionSource.objects.filter(execution_id=execution).exists(),
            "key": ExecutionIdempotencyKey.objects.filter(execution_id=execution).exists(),
            "message": ConversationMessage.objects.filter(pk=made["message"]).exists(),
            "evaluation": EvaluationRun.objects.filter(pk=made["evaluation"]).exists(),
            "export": Export.objects.filter(pk=made["export"]).exists(),
            "file": (storage_root / str(made["export_key"])).exists(),
        }


def all_true(found: dict[str, bool]) -> bool:
    return all(found.values())


def none_true(found: dict[str, bool]) -> bool:
    return not any(found.values())


@pytest.fixture
def owner_a(tenant_a):
    return make_member(tenant_a, "owner-a@example.com", "owner", is_staff=True)


@pytest.fixture
def owner_b(tenant_b):
    return make_member(tenant_b, "owner-b@example.com", "owner", is_staff=True)


# Policies -----------------------------------------------------------------------------


def test_each_tenant_keeps_its_own_days(tenant_a, tenant_b, owner_a, owner_b, file_storages):
    months_from(OLD)
    retention_policy_set(tenant=tenant_a, by=owner_a, **dict.fromkeys(EVERYTHING, 30))
    retention_policy_set(tenant=tenant_b, by=owner_b, **dict.fromkeys(EVERYTHING, 365))
    old_a, new_a = history(tenant_a, OLD, "a-old"), history(tenant_a, RECENT, "a-new")
    old_b = history(tenant_b, OLD, "b-old")

    summary = retention_enforce()

    root = file_storages.exports
    assert none_true(present(tenant_a, old_a, root))
    assert all_true(present(tenant_a, new_a, root))
    assert all_true(present(tenant_b, old_b, root))
    removed_a = summary.removed[tenant_a.pk]
    assert removed_a["agent_executions"] == 1
    assert removed_a["execution_errors"] == removed_a["execution_sources"] == 1
    assert removed_a["execution_idempotency_keys"] == 1
    # The execution's own evaluation, and the version's evaluation.
    assert removed_a["evaluation_runs"] == 2
    assert removed_a["conversation_messages"] == removed_a["exports"] == removed_a["files"] == 1
    assert sum(summary.removed[tenant_b.pk].values()) == 0


def test_the_defaults_apply_to_a_tenant_without_a_policy(tenant_a, settings, file_storages):
    months_from(OLD)
    settings.RETENTION_DEFAULT_DAYS = {**settings.RETENTION_DEFAULT_DAYS, "messages": 30}
    old, new = history(tenant_a, OLD, "old"), history(tenant_a, RECENT, "new")
    assert retention_policy_for(tenant_a)["messages"] == 30

    retention_enforce()

    found = present(tenant_a, old, file_storages.exports)
    assert not found.pop("message")
    assert all_true(found), "only messages are past the defaults"
    assert all_true(present(tenant_a, new, file_storages.exports))


def test_a_dry_run_removes_nothing_and_reports_what_the_run_then_removes(
    tenant_a, tenant_b, owner_a, file_storages
):
    months_from(OLD)
    retention_policy_set(tenant=tenant_a, by=owner_a, **dict.fromkeys(EVERYTHING, 30))
    made = [history(tenant_a, OLD, f"old-{n}") for n in range(2)]
    # A message of an old execution goes with the messages, not twice.
    with tenant_context(tenant_a):
        message_add(
            tenant=tenant_a,
            project=Project.objects.filter(tenant=tenant_a).first(),
            role="agent",
            content="from the run",
            execution=AgentExecution.objects.get(pk=made[0]["execution"]),
        )

    dry = retention_enforce(dry_run=True)
    assert all(all_true(present(tenant_a, m, file_storages.exports)) for m in made)
    real = retention_enforce()
    again = retention_enforce()

    assert dry.removed == real.removed
    assert real.removed[tenant_a.pk]["agent_executions"] == 2
    assert sum(again.removed[tenant_a.pk].values()) == 0, "a second run removes nothing"
    assert all(none_true(present(tenant_a, m, file_storages.exports)) for m in made)
    with tenant_context(tenant_a):
        runs = list(
            RetentionRun.objects.filter(run_id__in=[dry.run_id, real.run_id, again.run_id])
            .order_by("started_at")
            .values_list("dry_run", "removed")
        )
    assert [dry_run for dry_run, _ in runs] == [True, False, False]
    assert runs[0][1] == runs[1][1] == {k: v for k, v in real.removed[tenant_a.pk].items()}


def test_an_execution_a_proposal_under_review_comes_from_is_kept(tenant_a, owner_a):
    months_from(OLD)
    retention_policy_set(tenant=tenant_a, by=owner_a, executions_days=30)
    rows = make_tenant_rows(tenant_a, by=owner_a)
    with tenant_context(tenant_a):
        execution = AgentExecution.objects.create(
            id=uuid7_at(OLD),
            tenant=tenant_a,
            project=rows[Project],
            agent_type="writer",
            correlation_id=uuid.uuid4(),
        )
    change_proposal_propose(
        tenant=tenant_a,
        base_version=rows[DocumentVersion],
        content="About it, revised by an old run",
        execution=execution,
    )

    summary = retention_enforce()

    assert summary.removed[tenant_a.pk].get("agent_executions", 0) == 0
    with tenant_context(tenant_a):
        assert AgentExecution.objects.filter(pk=execution.pk).exists()


# Whole months ---------------------------------------------------------------------------

LONG_AGO = partitions.add_months(partitions.month_start(NOW), -4) + timedelta(days=10)


def test_a_month_is_dropped_only_when_every_tenants_policy_lets_it_go(
    tenant_a, tenant_b, owner_a, owner_b
):
    months_from(LONG_AGO)
    month = partitions.partition_name(EXECUTIONS, partitions.month_start(LONG_AGO))
    retention_policy_set(tenant=tenant_a, by=owner_a, executions_days=30)
    retention_policy_set(tenant=tenant_b, by=owner_b, executions_days=365)
    made_a, made_b = history(tenant_a, LONG_AGO, "a"), history(tenant_b, LONG_AGO, "b")

    first = retention_enforce()

    assert first.partitions_dropped == ()
    with connection.cursor() as cursor:
        assert month in partitions.partitions(cursor, EXECUTIONS).values()
    with tenant_context(tenant_a, tenant_b):
        assert not AgentExecution.objects.filter(pk=made_a["execution"]).exists()
        assert AgentExecution.objects.filter(pk=made_b["execution"]).exists()

    retention_policy_set(tenant=tenant_b, by=owner_b, executions_days=30)
    dry = retention_enforce(dry_run=True)
    second = retention_enforce()

    assert second.deferred == ()
    assert (
        month in second.partitions_dropped and dry.partitions_dropped == second.partitions_dropped
    )
    assert dry.removed == second.removed
    assert second.removed[tenant_b.pk]["agent_executions"] == 1
    assert second.removed[tenant_b.pk]["execution_errors"] == 1
    with connection.cursor() as cursor:
        assert month not in partitions.partitions(cursor, EXECUTIONS).values()
    with tenant_context(tenant_b):
        assert not AgentExecution.objects.filter(pk=made_b["execution"]).exists()
        assert not ExecutionError.objects.filter(execution_id=made_b["execution"]).exists()


# Locks ------------------------------------------------------------------------------------


def test_a_writer_is_never_queued_behind_a_run_longer_than_the_lock_timeout(
    tenant_a, owner_a, settings
):
    """A second connection writes the tenant's conversation and runs while a run removes
    3,000 of its old messages and executions with the default settings; the longest of
    its writes is measured and must stay under RETENTION_LOCK_TIMEOUT (1 s). What a
    writer of the same tenant can wait for is the rest of one batch (every audited write
    of a tenant takes its audit chain's lock until it commits), which the batches' size
    keeps near RETENTION_BATCH_MAX_SECONDS."""
    months_from(OLD)
    retention_policy_set(tenant=tenant_a, by=owner_a, messages_days=30, executions_days=30)
    rows = make_tenant_rows(tenant_a)
    project = rows[Project]
    message_ids = [uuid7_at(OLD + timedelta(milliseconds=n)) for n in range(2000)]
    execution_ids = [uuid7_at(OLD + timedelta(milliseconds=n)) for n in range(1000)]
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversation_messages (id, tenant_id, project_id, position, role, "
            "content, metadata) SELECT m.id, %s, %s, 1000 + m.n, 'user', 'old', '{}' "
            "FROM unnest(%s::uuid[]) WITH ORDINALITY AS m (id, n)",
            [tenant_a.pk, project.pk, message_ids],
        )
        cursor.execute(
            "INSERT INTO agent_executions (id, tenant_id, project_id, agent_type, "
            "correlation_id, attempt, status, input_data, output_data, error_type, "
            "error_message, retry_count, model, prompt_tokens, completion_tokens, cost_usd) "
            "SELECT x.id, %s, %s, 'writer', gen_random_uuid(), 1, 'running', '{}', '{}', '', "
            "'', 0, '', 0, 0, 0 FROM unnest(%s::uuid[]) AS x (id)",
            [tenant_a.pk, project.pk, execution_ids],
        )
    waits: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()
    # Its own psycopg connection as the runtime role: the job switches Django's
    # connections to the owner process-wide (core.db.connections.owner_connection).
    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key in ("dbname", "user", "password", "host", "port")
    }

    def write() -> None:
        try:
            with psycopg.connect(**params) as writer:
                position = 1_000_000
                while not done.is_set():
                    position += 1
                    started = time.monotonic()
                    with writer.transaction():
                        writer.execute(
                            "SELECT set_config('app.tenant_ids', %s, true)", [str(tenant_a.pk)]
                        )
                        writer.execute(
                            "INSERT INTO conversation_messages (tenant_id, project_id, "
                            "position, role, content, metadata) "
                            "VALUES (%s, %s, %s, 'user', 'now', '{}')",
                            [tenant_a.pk, project.pk, position],
                        )
                        writer.execute(
                            "INSERT INTO agent_executions (tenant_id, project_id, agent_type, "
                            "correlation_id, attempt, status, input_data, output_data, "
                            "error_type, error_message, retry_count, model, prompt_tokens, "
                            "completion_tokens, cost_usd) VALUES (%s, %s, 'writer', "
                            "gen_random_uuid(), 1, 'running', '{}', '{}', '', '', 0, '', 0, 0, 0)",
                            [tenant_a.pk, project.pk],
                        )
                    waits.append(time.monotonic() - started)
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        summary = retention_enforce()
    finally:
        done.set()
        writer.join()

    assert summary.removed[tenant_a.pk]["conversation_messages"] == 2000
    assert summary.removed[tenant_a.pk]["agent_executions"] == 1000
    assert not errors
    assert waits, "the writer wrote during the run"
    print(f"writer: {len(waits)} writes during the run, longest {max(waits) * 1000:.0f} ms")
    assert max(waits) < 1.0


def test_a_batch_whose_lock_is_held_gives_up_after_the_lock_timeout(tenant_a, owner_a, settings):
    """A writer holds a row lock on an old message: the run waits RETENTION_LOCK_TIMEOUT
    per try, leaves the batch to the next run (saying so) and finishes."""
    settings.RETENTION_LOCK_TIMEOUT = "200ms"
    retention_policy_set(tenant=tenant_a, by=owner_a, messages_days=30)
    project = make_tenant_rows(tenant_a)[Project]
    message = message_add(tenant=tenant_a, project=project, role="user", content="held")
    old = backdate("conversation_messages", tenant_a, message.pk, OLD)
    holder = connections.create_connection("default")
    try:
        with holder.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT set_config('app.tenant_ids', %s, true)", [str(tenant_a.pk)])
            cursor.execute(
                "SELECT 1 FROM conversation_messages WHERE tenant_id = %s AND id = %s FOR UPDATE",
                [tenant_a.pk, old],
            )
            assert cursor.fetchone() == (1,)
            summary = retention_enforce()
            cursor.execute("ROLLBACK")
    finally:
        holder.close()

    assert any("conversation_messages" in reason for reason in summary.deferred)
    assert summary.removed[tenant_a.pk].get("conversation_messages", 0) == 0
    assert retention_enforce().removed[tenant_a.pk]["conversation_messages"] == 1


# Bad input and rights ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "field"),
    [
        ({"executions_days": 0}, "executions_days"),
        ({"messages_days": -1}, "messages_days"),
        ({"exports_days": 36501}, "exports_days"),
        ({"audit_events_days": "ten"}, "audit_events_days"),
        ({"search_queries_days": True}, "search_queries_days"),
        ({"forever_days": 3}, "forever_days"),
    ],
)
def test_bad_days_are_refused_naming_the_field_and_nothing_is_written(
    tenant_a, owner_a, days, field
):
    with pytest.raises(ValidationError) as refused:
        retention_policy_set(tenant=tenant_a, by=owner_a, **{"messages_days": 30, **days})
    assert field in refused.value.message_dict
    with tenant_context(tenant_a):
        assert not RetentionPolicy.objects.exists()


def test_the_database_refuses_days_out_of_range_whoever_writes(tenant_a):
    from django.db import IntegrityError

    with tenant_context(tenant_a), pytest.raises(IntegrityError):
        RetentionPolicy.objects.create(tenant=tenant_a, messages_days=0)


@pytest.mark.parametrize("role", ["admin", "editor", "viewer"])
def test_only_owners_change_the_policy(tenant_a, role):
    member = make_member(tenant_a, f"{role}@example.com", role)
    with pytest.raises(PermissionDenied):
        retention_policy_set(tenant=tenant_a, by=member, executions_days=30)
    with tenant_context(tenant_a):
        assert not RetentionPolicy.objects.exists()


def test_an_owner_of_another_tenant_is_refused(tenant_a, owner_b):
    with pytest.raises(PermissionDenied):
        retention_policy_set(tenant=tenant_a, by=owner_b, executions_days=30)


def test_setting_a_field_to_none_returns_it_to_the_default(tenant_a, owner_a, settings):
    retention_policy_set(tenant=tenant_a, by=owner_a, messages_days=7, exports_days=9)
    retention_policy_set(tenant=tenant_a, by=owner_a, messages_days=None)
    applied = retention_policy_for(tenant_a)
    assert applied["messages"] == settings.RETENTION_DEFAULT_DAYS["messages"]
    assert applied["exports"] == 9


def test_the_command_reports_and_a_bad_setting_exits_non_zero(tenant_a, settings):
    out = io.StringIO()
    call_command("retention", "--dry-run", stdout=out)
    assert "not enforced yet" not in out.getvalue()  # every category is
    assert "longest transaction: " in out.getvalue()  # the bound of any lock it held
    assert "Dry run" in out.getvalue()
    settings.RETENTION_DEFAULT_DAYS = {**settings.RETENTION_DEFAULT_DAYS, "messages": 0}
    with pytest.raises(CommandError, match=r"RETENTION_DEFAULT_DAYS\['messages'\]"):
        call_command("retention")
    with tenant_context(tenant_a):
        assert RetentionRun.objects.filter(dry_run=False).count() == 0


def test_the_command_refuses_an_unknown_option():
    with pytest.raises(CommandError):
        call_command("retention", "--days", "3")


# The admin ----------------------------------------------------------------------------------


def test_an_owner_changes_the_policy_in_the_admin_and_sees_the_last_run(client, tenant_a, owner_a):
    retention_policy_set(tenant=tenant_a, by=owner_a, exports_days=40)
    retention_enforce()
    with tenant_context(tenant_a):
        policy = RetentionPolicy.objects.get(tenant=tenant_a)
    logged_in(client, owner_a)
    url = admin_url(RetentionPolicy, "change", policy.pk)

    page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Last run" in text and "not enforced yet" not in text
    response = client.post(
        url, {"executions_days": "15", "exports_days": "40", "messages_days": ""}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert retention_policy_for(tenant_a)["executions"] == 15


def test_an_admin_reads_the_policy_and_an_editor_does_not_see_it(client, tenant_a, owner_a):
    retention_policy_set(tenant=tenant_a, by=owner_a, exports_days=40)
    with tenant_context(tenant_a):
        policy = RetentionPolicy.objects.get(tenant=tenant_a)
    admin = make_member(tenant_a, "admin@example.com", "admin", is_staff=True)
    editor = make_member(tenant_a, "editor@example.com", "editor", is_staff=True)
    url = admin_url(RetentionPolicy, "change", policy.pk)

    logged_in(client, admin)
    page = client.get(url)
    assert page.status_code == 200
    assert 'name="exports_days"' not in page.content.decode(), "read-only for admins"
    client.post(url, {"exports_days": "5"})
    assert retention_policy_for(tenant_a)["exports"] == 40

    logged_in(client, editor)
    assert client.get(url).status_code in REFUSED


def test_a_tenant_sees_only_its_own_runs(client, tenant_a, tenant_b, owner_a, owner_b):
    retention_enforce()
    logged_in(client, owner_a)
    response = client.get(admin_url(RetentionRun, "changelist"))
    assert response.status_code == 200
    assert {run.tenant_id for run in response.context["cl"].result_list} == {tenant_a.pk}
