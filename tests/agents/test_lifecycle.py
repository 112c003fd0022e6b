"""The execution lifecycle is enforced by PostgreSQL, for raw SQL as much as the ORM."""

import itertools

import pytest
from django.db import IntegrityError, connection, transaction

from agents.models import ALLOWED_TRANSITIONS, ExecutionStatus
from documents.services import project_create
from tenancy.context import tenant_context

STATUSES = ExecutionStatus.values
# How to reach each status from pending through allowed transitions.
PATH_TO = {
    "pending": [],
    "running": ["running"],
    "succeeded": ["running", "succeeded"],
    "failed": ["running", "failed"],
    "cancelled": ["cancelled"],
}
FORBIDDEN = [
    (old, new)
    for old, new in itertools.permutations(STATUSES, 2)
    if (old, new) not in ALLOWED_TRANSITIONS
]


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Lifecycle")


def insert_execution(cursor, project, status: str = "pending"):
    """A raw INSERT giving every NOT NULL column without a database default."""
    cursor.execute(
        """
        INSERT INTO agent_executions (
            tenant_id, project_id, agent_type, correlation_id, attempt, status, input_data,
            output_data, error_type, error_message, retry_count, model, prompt_tokens,
            completion_tokens, cost_usd
        ) VALUES (%s, %s, 'writer', uuidv7(), 1, %s, '{}', '{}', '', '', 0, '', 0, 0, 0)
        RETURNING id
        """,
        [project.tenant_id, project.pk, status],
    )
    return cursor.fetchone()[0]


def set_status(cursor, execution_id, status: str) -> None:
    cursor.execute("UPDATE agent_executions SET status = %s WHERE id = %s", [status, execution_id])


def execution_in(cursor, project, status: str):
    execution_id = insert_execution(cursor, project)
    for step in PATH_TO[status]:
        set_status(cursor, execution_id, step)
    return execution_id


def current_status(cursor, execution_id) -> str:
    cursor.execute("SELECT status FROM agent_executions WHERE id = %s", [execution_id])
    return cursor.fetchone()[0]


def test_the_allowed_transitions_are_the_documented_five():
    assert ALLOWED_TRANSITIONS == {
        ("pending", "running"),
        ("pending", "cancelled"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "cancelled"),
    }
    assert len(FORBIDDEN) == 15


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_a_forbidden_transition_is_refused_in_raw_sql(tenant_a, project, old, new):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_id = execution_in(cursor, project, old)
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            set_status(cursor, execution_id, new)
        assert f"from {old} to {new}" in str(error.value)
        assert current_status(cursor, execution_id) == old


def test_the_refusal_is_an_integrity_constraint_violation(tenant_a, project):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_id = execution_in(cursor, project, "succeeded")
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            set_status(cursor, execution_id, "running")
        assert error.value.__cause__.sqlstate == "23000"


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED_TRANSITIONS))
def test_an_allowed_transition_passes_in_raw_sql(tenant_a, project, old, new):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_id = execution_in(cursor, project, old)
        set_status(cursor, execution_id, new)
        assert current_status(cursor, execution_id) == new


@pytest.mark.parametrize("status", STATUSES)
def test_an_unchanged_status_lets_other_columns_change(tenant_a, project, status):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_id = execution_in(cursor, project, status)
        cursor.execute(
            "UPDATE agent_executions SET status = status, error_message = 'note' WHERE id = %s",
            [execution_id],
        )
        cursor.execute("SELECT error_message FROM agent_executions WHERE id = %s", [execution_id])
        assert cursor.fetchone()[0] == "note"


@pytest.mark.parametrize("status", ["pending", "running"])
def test_an_insert_may_start_pending_or_running(tenant_a, project, status):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_id = insert_execution(cursor, project, status)
        assert current_status(cursor, execution_id) == status


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_an_insert_in_a_terminal_status_is_refused(tenant_a, project, status):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            insert_execution(cursor, project, status)
        assert status in str(error.value)


def test_a_bulk_orm_update_is_refused_too(tenant_a, project):
    from agents.models import AgentExecution

    with tenant_context(tenant_a), connection.cursor() as cursor:
        execution_in(cursor, project, "failed")
        with pytest.raises(IntegrityError), transaction.atomic():
            AgentExecution.objects.filter(project=project).update(status="succeeded")
