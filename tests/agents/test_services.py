"""Execution services: creation, idempotency, transitions, retries, durations, evaluations."""

import copy
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors, services
from agents.models import AgentExecution, EvaluationRun
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context
from tests.locks import run_together


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


@pytest.fixture
def execution(tenant_a, project):
    return services.execution_create(tenant=tenant_a, project=project, agent_type="writer")


@pytest.fixture
def running(tenant_a, execution):
    return services.execution_start(tenant=tenant_a, execution=execution)


def count_executions(tenant) -> int:
    with tenant_context(tenant):
        return AgentExecution.objects.count()


# Creation


def test_create_makes_a_pending_first_attempt_of_a_new_run(tenant_a, project):
    execution = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", input_data={"topic": "x"}
    )
    assert (execution.status, execution.attempt, execution.retry_count) == ("pending", 1, 0)
    assert execution.correlation_id.version == 7
    assert execution.input_data == {"topic": "x"}
    assert execution.started_at is None


def test_a_step_inherits_its_parents_run(tenant_a, project, execution):
    step = services.execution_create(
        tenant=tenant_a, project=project, agent_type="retriever", parent=execution
    )
    assert step.correlation_id == execution.correlation_id
    assert step.parent_id == execution.pk


def test_a_step_in_another_run_than_its_parent_is_refused(tenant_a, project, execution):
    with pytest.raises(ValidationError) as error:
        services.execution_create(
            tenant=tenant_a,
            project=project,
            agent_type="retriever",
            parent=execution,
            correlation_id=uuid.uuid4(),
        )
    assert "correlation_id" in error.value.message_dict


def test_a_blank_agent_type_is_refused_naming_the_field(tenant_a, project):
    with pytest.raises(ValidationError) as error:
        services.execution_create(tenant=tenant_a, project=project, agent_type="")
    assert "agent_type" in error.value.message_dict


def test_another_tenants_project_is_refused(tenant_b, project):
    with pytest.raises(ValidationError) as error:
        services.execution_create(tenant=tenant_b, project=project, agent_type="writer")
    assert "project" in error.value.message_dict


# Idempotency


def test_the_same_idempotency_key_returns_the_same_execution(tenant_a, project):
    first = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", idempotency_key="req-1"
    )
    again = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", idempotency_key="req-1"
    )
    assert again.pk == first.pk
    assert count_executions(tenant_a) == 1


def test_a_key_is_scoped_to_its_tenant(tenant_a, tenant_b, project):
    other_project = project_create(tenant=tenant_b, name="Other")
    first = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", idempotency_key="req-1"
    )
    other = services.execution_create(
        tenant=tenant_b, project=other_project, agent_type="writer", idempotency_key="req-1"
    )
    assert other.pk != first.pk


def test_a_key_reused_for_another_agent_type_is_refused(tenant_a, project):
    services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", idempotency_key="req-1"
    )
    with pytest.raises(ValidationError) as error:
        services.execution_create(
            tenant=tenant_a, project=project, agent_type="critic", idempotency_key="req-1"
        )
    assert "idempotency_key" in error.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_concurrent_creators_with_one_key_make_one_row(tenant_a):
    project = project_create(tenant=tenant_a, name="Race")
    creators, results = 10, []

    def create() -> None:
        execution = services.execution_create(
            tenant=tenant_a, project=project, agent_type="writer", idempotency_key="same"
        )
        results.append(execution.pk)

    errors = run_together([create] * creators)

    assert errors == []
    assert len(set(results)) == 1
    assert count_executions(tenant_a) == 1


# Transitions


def test_start_sets_running_and_started_at(tenant_a, execution):
    services.execution_start(tenant=tenant_a, execution=execution)
    assert execution.status == "running"
    assert execution.started_at is not None


def test_finish_records_output_usage_and_the_produced_version(tenant_a, project, running):
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="Hello"
    )
    services.execution_finish(
        tenant=tenant_a,
        execution=running,
        output_data={"ok": True},
        model="gpt-x",
        prompt_tokens=120,
        completion_tokens=30,
        cost_usd=Decimal("0.0125"),
        produced_version=version,
    )
    with tenant_context(tenant_a):
        row = AgentExecution.objects.get(pk=running.pk)
    assert row.status == "succeeded"
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (120, 30, Decimal("0.0125"))
    assert (row.model, row.output_data, row.produced_version_id) == (
        "gpt-x",
        {"ok": True},
        version.pk,
    )
    assert row.completed_at >= row.started_at


def test_fail_records_the_error(tenant_a, running):
    services.execution_fail(
        tenant=tenant_a, execution=running, error_type="Timeout", error_message="took too long"
    )
    assert (running.status, running.error_type) == ("failed", "Timeout")
    assert running.completed_at is not None


def test_fail_without_an_error_type_is_refused(tenant_a, running):
    with pytest.raises(ValidationError) as error:
        services.execution_fail(tenant=tenant_a, execution=running, error_type="")
    assert "error_type" in error.value.message_dict


@pytest.mark.parametrize("start", [False, True])
def test_cancel_from_pending_or_running(tenant_a, execution, start):
    if start:
        services.execution_start(tenant=tenant_a, execution=execution)
    services.execution_cancel(tenant=tenant_a, execution=execution)
    assert execution.status == "cancelled"
    assert execution.completed_at is not None


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ([], "finish"),
        ([], "fail"),
        (["start"], "start"),
        (["start", "finish"], "start"),
        (["start", "finish"], "finish"),
        (["start", "finish"], "fail"),
        (["start", "finish"], "cancel"),
        (["start", "fail"], "finish"),
        (["start", "fail"], "cancel"),
        (["cancel"], "start"),
        (["cancel"], "cancel"),
    ],
)
def test_a_wrong_state_call_is_refused_naming_status(tenant_a, execution, setup, action):
    calls = {
        "start": lambda: services.execution_start(tenant=tenant_a, execution=execution),
        "finish": lambda: services.execution_finish(tenant=tenant_a, execution=execution),
        "fail": lambda: services.execution_fail(
            tenant=tenant_a, execution=execution, error_type="Boom"
        ),
        "cancel": lambda: services.execution_cancel(tenant=tenant_a, execution=execution),
    }
    for step in setup:
        calls[step]()
    before = execution.status
    with pytest.raises(ValidationError) as error:
        calls[action]()
    assert "status" in error.value.message_dict
    with tenant_context(tenant_a):
        assert AgentExecution.objects.get(pk=execution.pk).status == before


def test_a_stale_instance_cannot_finish_twice(tenant_a, running):
    stale = copy.copy(running)
    services.execution_finish(tenant=tenant_a, execution=running)
    with pytest.raises(ValidationError) as error:
        services.execution_fail(tenant=tenant_a, execution=stale, error_type="Late")
    assert "status" in error.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_concurrent_finishers_have_exactly_one_winner(tenant_a):
    project = project_create(tenant=tenant_a, name="Race")
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="w")
    services.execution_start(tenant=tenant_a, execution=execution)
    workers, wins = 8, []

    def finish(n: int) -> None:
        if n % 2:
            services.execution_finish(tenant=tenant_a, execution=execution)
        else:
            services.execution_fail(tenant=tenant_a, execution=execution, error_type="E")
        wins.append(n)

    errors = run_together([partial(finish, n) for n in range(workers)])

    assert [error for error in errors if not isinstance(error, ValidationError)] == []
    assert len(wins) == 1
    assert len(errors) == workers - 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt_tokens", -1),
        ("completion_tokens", -5),
        ("cost_usd", Decimal("-0.01")),
        ("cost_usd", "-1"),
        ("cost_usd", "lots"),
    ],
)
def test_negative_usage_is_refused_naming_the_field(tenant_a, running, field, value):
    with pytest.raises(ValidationError) as error:
        services.execution_finish(tenant=tenant_a, execution=running, **{field: value})
    assert field in error.value.message_dict
    with tenant_context(tenant_a):
        assert AgentExecution.objects.get(pk=running.pk).status == "running"


def test_a_version_of_another_project_is_refused(tenant_a, running):
    other = project_create(tenant=tenant_a, name="Other")
    version = document_version_create(
        tenant=tenant_a, project=other, document_type="about", content="x"
    )
    with pytest.raises(ValidationError) as error:
        services.execution_finish(tenant=tenant_a, execution=running, produced_version=version)
    assert "produced_version" in error.value.message_dict


def test_update_corrects_a_pending_executions_input_and_model(tenant_a, execution):
    services.execution_update(
        tenant=tenant_a, execution=execution, input_data={"goal": "new"}, model="gpt-x"
    )
    with tenant_context(tenant_a):
        stored = AgentExecution.objects.get(pk=execution.pk)
    assert (stored.input_data, stored.model, stored.status) == ({"goal": "new"}, "gpt-x", "pending")


def test_update_of_a_started_execution_is_refused_naming_status(tenant_a, running):
    with pytest.raises(ValidationError) as error:
        services.execution_update(tenant=tenant_a, execution=running, input_data={}, model="m")
    assert "status" in error.value.message_dict
    with tenant_context(tenant_a):
        assert AgentExecution.objects.get(pk=running.pk).model == running.model


def test_another_tenant_cannot_move_an_execution(tenant_b, execution):
    with pytest.raises(ValidationError) as error:
        services.execution_start(tenant=tenant_b, execution=execution)
    assert "execution" in error.value.message_dict


# Duration


def test_duration_is_completed_minus_started_from_the_database_clock(tenant_a, running):
    # One transaction: now() would give a zero duration; the wall clock does not.
    with tenant_context(tenant_a):
        services.execution_finish(tenant=tenant_a, execution=running)
    assert running.duration == running.completed_at - running.started_at
    assert running.duration > timedelta(0)


def test_duration_is_exact_to_the_microsecond(tenant_a, running):
    started = datetime(2026, 1, 1, 10, 0, 0, 1, tzinfo=UTC)
    completed = datetime(2026, 1, 1, 10, 0, 1, 500000, tzinfo=UTC)
    with tenant_context(tenant_a):
        AgentExecution.objects.filter(pk=running.pk).update(
            started_at=started, completed_at=completed
        )
        running.refresh_from_db()
    assert running.duration == timedelta(seconds=1, microseconds=499999)


def test_duration_is_none_until_completed(running):
    assert running.duration is None


# Retries


def test_retries_number_attempts_within_the_run(tenant_a, project):
    root = services.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    first = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", parent=root, input_data={"n": 1}
    )
    attempt = first
    for _ in range(2):
        services.execution_start(tenant=tenant_a, execution=attempt)
        services.execution_fail(tenant=tenant_a, execution=attempt, error_type="Timeout")
        attempt = services.execution_retry(tenant=tenant_a, execution=attempt)

    with tenant_context(tenant_a):
        attempts = list(
            selectors.execution_list(tenant=tenant_a, correlation_id=root.correlation_id)
            .filter(agent_type="writer")
            .order_by("attempt")
        )
    assert [(e.attempt, e.retry_count) for e in attempts] == [(1, 0), (2, 1), (3, 2)]
    assert {e.correlation_id for e in attempts} == {root.correlation_id}
    assert {e.parent_id for e in attempts} == {root.pk}
    assert {e.input_data["n"] for e in attempts} == {1}
    assert attempts[-1].status == "pending"


def test_a_cancelled_execution_can_be_retried(tenant_a, execution):
    services.execution_cancel(tenant=tenant_a, execution=execution)
    retry = services.execution_retry(tenant=tenant_a, execution=execution)
    assert (retry.attempt, retry.status) == (2, "pending")


def test_retrying_the_same_attempt_twice_returns_one_new_attempt(tenant_a, running):
    services.execution_fail(tenant=tenant_a, execution=running, error_type="E")
    first = services.execution_retry(tenant=tenant_a, execution=running)
    again = services.execution_retry(tenant=tenant_a, execution=running)
    assert again.pk == first.pk
    assert count_executions(tenant_a) == 2


@pytest.mark.parametrize("setup", [[], ["start"], ["start", "finish"]])
def test_retry_of_a_pending_running_or_succeeded_execution_is_refused(tenant_a, execution, setup):
    for step in setup:
        getattr(services, f"execution_{step}")(tenant=tenant_a, execution=execution)
    with pytest.raises(ValidationError) as error:
        services.execution_retry(tenant=tenant_a, execution=execution)
    assert "status" in error.value.message_dict


# Evaluations


def test_an_evaluation_scores_a_version(tenant_a, project):
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="Plan"
    )
    evaluation = services.evaluation_record(
        tenant=tenant_a, document_version=version, score=87.5, metrics={"clarity": 0.9}
    )
    assert evaluation.project_id == project.pk
    assert selectors.evaluation_list(tenant=tenant_a, project=project) == [evaluation]


def test_an_evaluation_scores_an_execution(tenant_a, project, execution):
    evaluation = services.evaluation_record(tenant=tenant_a, execution=execution, score=40)
    assert selectors.evaluation_list(tenant=tenant_a, project=project, execution=execution) == [
        evaluation
    ]


def test_an_evaluation_needs_exactly_one_target(tenant_a, project, execution):
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="Plan"
    )
    for targets in ({}, {"document_version": version, "execution": execution}):
        with pytest.raises(ValidationError) as error:
            services.evaluation_record(tenant=tenant_a, score=50, **targets)
        assert {"document_version", "execution"} <= set(error.value.message_dict)


@pytest.mark.parametrize("score", [-1, 100.5])
def test_a_score_outside_0_to_100_is_refused(tenant_a, execution, score):
    with pytest.raises(ValidationError) as error:
        services.evaluation_record(tenant=tenant_a, execution=execution, score=score)
    assert "score" in error.value.message_dict


@pytest.mark.parametrize("targets", ["neither", "both"])
def test_the_database_refuses_neither_or_both_targets(tenant_a, project, execution, targets):
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="Plan"
    )
    version_id, execution_id = (None, None) if targets == "neither" else (version.pk, execution.pk)
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(
                """
                INSERT INTO evaluation_runs
                    (tenant_id, project_id, document_version_id, execution_id, evaluator,
                     metrics, score)
                VALUES (%s, %s, %s, %s, '', '{}', 50)
                """,
                [tenant_a.pk, project.pk, version_id, execution_id],
            )
        assert "evaluation_runs_exactly_one_target" in str(error.value)
        assert EvaluationRun.objects.count() == 0


def test_another_tenants_execution_cannot_be_evaluated(tenant_b, execution):
    with pytest.raises(ValidationError) as error:
        services.evaluation_record(tenant=tenant_b, execution=execution, score=50)
    assert "execution" in error.value.message_dict
