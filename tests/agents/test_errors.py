"""Execution errors: execution_fail records one per failure; `recovered` turns true, by the
database, once a later attempt of the same step succeeds, also under concurrency."""

import threading
from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors, services
from agents.models import AgentExecution, ExecutionError
from documents.services import project_create
from tenancy.context import tenant_context
from tests.locks import in_thread, run_together, wait_for_lock_waiters

TRACEBACK = 'Traceback (most recent call last):\n  File "agent.py", line 3\nTimeoutError: slow\n'


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


def started(tenant, project, agent_type="writer", parent=None) -> AgentExecution:
    execution = services.execution_create(
        tenant=tenant, project=project, agent_type=agent_type, parent=parent
    )
    return services.execution_start(tenant=tenant, execution=execution)


def fail(tenant, execution, **fields) -> AgentExecution:
    return services.execution_fail(
        tenant=tenant, execution=execution, error_type="TimeoutError", **fields
    )


def retry_started(tenant, execution) -> AgentExecution:
    retry = services.execution_retry(tenant=tenant, execution=execution)
    return services.execution_start(tenant=tenant, execution=retry)


def error_of(tenant, execution) -> ExecutionError:
    with tenant_context(tenant):
        return ExecutionError.objects.get(execution=execution)


def recovered(tenant, execution) -> bool:
    return error_of(tenant, execution).recovered


# Recording


def test_fail_records_one_error_of_the_failure(tenant_a, project):
    execution = started(tenant_a, project)
    fail(tenant_a, execution, error_message="took 31 s", traceback=TRACEBACK)
    error = error_of(tenant_a, execution)
    assert (error.node, error.error_type, error.message, error.traceback, error.attempt) == (
        "writer",
        "TimeoutError",
        "took 31 s",
        TRACEBACK,
        1,
    )
    assert error.recovered is False


def test_the_node_may_name_the_step_inside_the_agent(tenant_a, project):
    execution = started(tenant_a, project)
    fail(tenant_a, execution, node="draft_section", recovery_strategy="smaller context")
    error = error_of(tenant_a, execution)
    assert (error.node, error.recovery_strategy) == ("draft_section", "smaller context")


def test_a_long_traceback_keeps_its_end_within_the_limit(tenant_a, project, settings):
    settings.EXECUTION_ERROR_TRACEBACK_MAX_CHARS = 100
    execution = started(tenant_a, project)
    long = "x" * 500 + TRACEBACK
    fail(tenant_a, execution, traceback=long)
    kept = error_of(tenant_a, execution).traceback
    marker, tail = kept.split("\n", 1)
    assert len(kept) <= 100
    assert long.endswith(tail) and tail.endswith("TimeoutError: slow\n")
    assert marker == f"[... {len(long) - len(tail)} characters cut ...]"


def test_a_traceback_at_the_limit_is_kept_whole(tenant_a, project, settings):
    settings.EXECUTION_ERROR_TRACEBACK_MAX_CHARS = len(TRACEBACK)
    execution = started(tenant_a, project)
    fail(tenant_a, execution, traceback=TRACEBACK)
    assert error_of(tenant_a, execution).traceback == TRACEBACK


def test_a_refused_failure_records_no_error(tenant_a, project):
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    with pytest.raises(ValidationError) as error:
        fail(tenant_a, execution)  # still pending: it cannot fail
    assert "status" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not ExecutionError.objects.exists()


def test_the_retry_says_what_it_does_on_the_errors_record(tenant_a, project):
    execution = fail(tenant_a, started(tenant_a, project))
    services.execution_retry(tenant=tenant_a, execution=execution, recovery_strategy="backoff 30 s")
    assert error_of(tenant_a, execution).recovery_strategy == "backoff 30 s"


def test_an_error_record_is_immutable_but_for_its_recovery(tenant_a, project):
    execution = fail(tenant_a, started(tenant_a, project))
    with tenant_context(tenant_a):
        with pytest.raises(IntegrityError, match="is a record"), transaction.atomic():
            ExecutionError.objects.filter(execution=execution).update(message="rewritten")


def test_recovered_never_goes_back_to_false(tenant_a, project):
    execution = fail(tenant_a, started(tenant_a, project))
    with tenant_context(tenant_a):
        ExecutionError.objects.filter(execution=execution).update(recovered=True)
        with pytest.raises(IntegrityError), transaction.atomic():
            ExecutionError.objects.filter(execution=execution).update(recovered=False)


def test_one_error_per_execution(tenant_a, project):
    execution = fail(tenant_a, started(tenant_a, project))
    with tenant_context(tenant_a):
        with pytest.raises(IntegrityError, match="execution_errors_execution_uniq"):
            with transaction.atomic():
                ExecutionError.objects.create(
                    tenant=tenant_a, execution=execution, node="x", error_type="y", attempt=1
                )


# Recovery


def failed_without_record(tenant, project) -> AgentExecution:
    """A failed first attempt whose error record has not been written yet (a slow logger)."""
    first = started(tenant, project)
    with tenant_context(tenant):
        AgentExecution.objects.filter(pk=first.pk).update(status="failed")
    return first


def record_late(tenant, execution) -> None:
    """The failure's record, written in the caller's tenant context."""
    ExecutionError.objects.create(
        tenant=tenant, execution=execution, node="writer", error_type="Timeout", attempt=1
    )


def test_recovered_flips_when_the_retry_succeeds(tenant_a, project):
    first = fail(tenant_a, started(tenant_a, project))
    retry = retry_started(tenant_a, first)
    assert recovered(tenant_a, first) is False
    services.execution_finish(tenant=tenant_a, execution=retry)
    assert recovered(tenant_a, first) is True


def test_recovered_stays_false_when_the_retry_fails_too(tenant_a, project):
    first = fail(tenant_a, started(tenant_a, project))
    second = fail(tenant_a, retry_started(tenant_a, first))
    assert (recovered(tenant_a, first), recovered(tenant_a, second)) == (False, False)


def test_recovered_stays_false_when_the_retry_is_cancelled(tenant_a, project):
    first = fail(tenant_a, started(tenant_a, project))
    services.execution_cancel(tenant=tenant_a, execution=retry_started(tenant_a, first))
    assert recovered(tenant_a, first) is False


def test_a_third_attempts_success_recovers_both_earlier_failures(tenant_a, project):
    first = fail(tenant_a, started(tenant_a, project))
    second = fail(tenant_a, retry_started(tenant_a, first))
    services.execution_finish(tenant=tenant_a, execution=retry_started(tenant_a, second))
    assert (recovered(tenant_a, first), recovered(tenant_a, second)) == (True, True)


def test_another_step_of_the_same_run_succeeding_recovers_nothing(tenant_a, project):
    root = started(tenant_a, project, agent_type="planner")
    writer = fail(tenant_a, started(tenant_a, project, agent_type="writer", parent=root))
    retriever = started(tenant_a, project, agent_type="retriever", parent=root)
    services.execution_finish(tenant=tenant_a, execution=retriever)
    services.execution_finish(tenant=tenant_a, execution=root)
    assert recovered(tenant_a, writer) is False


def test_another_runs_success_recovers_nothing(tenant_a, project):
    failed = fail(tenant_a, started(tenant_a, project))
    other = fail(tenant_a, started(tenant_a, project))
    services.execution_finish(tenant=tenant_a, execution=retry_started(tenant_a, other))
    assert (recovered(tenant_a, failed), recovered(tenant_a, other)) == (False, True)


def test_a_raw_sql_success_recovers_too(tenant_a, project):
    first = fail(tenant_a, started(tenant_a, project))
    retry = retry_started(tenant_a, first)
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute("UPDATE agent_executions SET status = 'succeeded' WHERE id = %s", [retry.pk])
    assert recovered(tenant_a, first) is True


def test_a_failure_recorded_after_a_later_attempt_succeeded_is_recovered(tenant_a, project):
    first = failed_without_record(tenant_a, project)
    services.execution_finish(tenant=tenant_a, execution=retry_started(tenant_a, first))
    with tenant_context(tenant_a):
        record_late(tenant_a, first)
    assert recovered(tenant_a, first) is True


# Recovery under concurrency: recording a failure and a later attempt's success meet
# at one lock per step, whichever comes first.


@pytest.mark.django_db(transaction=True)
def test_a_success_committing_after_an_uncommitted_failure_record_recovers_it(tenant_a, project):
    first = failed_without_record(tenant_a, project)
    retry = retry_started(tenant_a, first)
    recorded, release, failures = threading.Event(), threading.Event(), []

    def recorder():
        with tenant_context(tenant_a):
            record_late(tenant_a, first)
            recorded.set()
            release.wait(timeout=120)

    recording = in_thread(recorder, failures)
    assert recorded.wait(timeout=120)
    finishing = in_thread(
        lambda: services.execution_finish(tenant=tenant_a, execution=retry), failures
    )
    wait_for_lock_waiters(1)  # the success waits for the record's commit
    release.set()
    recording.join()
    finishing.join()
    assert failures == []
    assert recovered(tenant_a, first) is True


@pytest.mark.django_db(transaction=True)
def test_a_failure_record_committing_after_an_uncommitted_success_is_recovered(tenant_a, project):
    first = failed_without_record(tenant_a, project)
    retry = retry_started(tenant_a, first)
    finished, release, failures = threading.Event(), threading.Event(), []

    def finisher():
        with tenant_context(tenant_a):
            services.execution_finish(tenant=tenant_a, execution=retry)
            finished.set()
            release.wait(timeout=120)

    finishing = in_thread(finisher, failures)
    assert finished.wait(timeout=120)

    def recorder():
        with tenant_context(tenant_a):
            record_late(tenant_a, first)

    recording = in_thread(recorder, failures)
    wait_for_lock_waiters(1)  # the record waits for the success's commit
    release.set()
    finishing.join()
    recording.join()
    assert failures == []
    assert recovered(tenant_a, first) is True


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_recover_exactly_their_own_failures(tenant_a, project):
    runs = 8
    firsts = [fail(tenant_a, started(tenant_a, project)) for _ in range(runs)]
    retries = [retry_started(tenant_a, first) for first in firsts]
    actions = [services.execution_finish, services.execution_cancel] * (runs // 2)
    failures = run_together(
        [
            partial(action, tenant=tenant_a, execution=retry)
            for action, retry in zip(actions, retries, strict=True)
        ]
    )
    assert failures == []
    assert [recovered(tenant_a, first) for first in firsts] == [n % 2 == 0 for n in range(runs)]


# Failures by node


def test_failures_by_node_count_failures_and_the_share_recovered(tenant_a, project):
    for _ in range(3):
        first = fail(tenant_a, started(tenant_a, project, agent_type="writer"))
    services.execution_finish(tenant=tenant_a, execution=retry_started(tenant_a, first))
    fail(tenant_a, started(tenant_a, project, agent_type="retriever"))
    summary = selectors.failures_by_node(tenant=tenant_a)
    assert [(row.node, row.failures, row.recovered) for row in summary] == [
        ("writer", 3, 1),
        ("retriever", 1, 0),
    ]
    assert summary[0].share_recovered == pytest.approx(1 / 3)
    assert summary[0].unrecovered == 2


def test_failures_by_node_of_one_project(tenant_a, project):
    other = project_create(tenant=tenant_a, name="Other")
    fail(tenant_a, started(tenant_a, project))
    fail(tenant_a, started(tenant_a, other, agent_type="critic"))
    summary = selectors.failures_by_node(tenant=tenant_a, project=other)
    assert [(row.node, row.failures) for row in summary] == [("critic", 1)]


def test_failures_by_node_see_only_the_tenants_errors(tenant_a, tenant_b, project):
    fail(tenant_a, started(tenant_a, project))
    assert selectors.failures_by_node(tenant=tenant_b) == []
