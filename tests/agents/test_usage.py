"""The usage rollup (execution_usage_daily, kept by triggers on agent_executions) and the
quotas that read it (agents.services.usage)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from agents import selectors, services
from agents.models import AgentExecution, TenantQuota
from documents.services import project_create
from tenancy.context import tenant_context
from tenancy.models import Tenant
from tests.factories import make_member
from tests.locks import run_together

MODELS = ("gpt-small", "gpt-large", "")
FIGURES = ("executions", "failures", "prompt_tokens", "completion_tokens", "cost_usd")

# What the rollup must equal: the same sums grouped from the executions themselves.
GROUPED_SQL = """
SELECT tenant_id, (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date, model,
    count(*), count(*) FILTER (WHERE status = 'failed'), sum(prompt_tokens),
    sum(completion_tokens), sum(cost_usd)
FROM agent_executions GROUP BY 1, 2, 3
"""
ROLLUP_SQL = """
SELECT tenant_id, day, model, executions, failures, prompt_tokens, completion_tokens, cost_usd
FROM execution_usage_daily
"""
# An execution's contribution, read before it is deleted (a delete keeps its usage).
ROW_SQL = """
SELECT tenant_id, (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date, model,
    1, (status = 'failed')::int, prompt_tokens, completion_tokens, cost_usd
FROM agent_executions WHERE tenant_id = %s AND id = %s
"""


def _sums(rows) -> dict[tuple, tuple]:
    """(tenant, day, model) -> figures, without keys whose figures are all zero."""
    total: dict[tuple, list] = {}
    for tenant_id, day, model, *figures in rows:
        into = total.setdefault((tenant_id, day, model), [0, 0, 0, 0, Decimal(0)])
        for index, value in enumerate(figures):
            into[index] += value
    return {key: tuple(values) for key, values in total.items() if any(values)}


def _read(sql: str, params=()) -> list[tuple]:
    # Every tenant's rows (a system_context cannot open inside a test's transaction).
    with tenant_context(*Tenant.objects.values_list("pk", flat=True)):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


def assert_rollup_exact(deleted: list[tuple] = ()) -> None:
    """The rollup equals the executions grouped, plus what the deleted ones had counted."""
    assert _sums(_read(ROLLUP_SQL)) == _sums([*_read(GROUPED_SQL), *deleted])


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Usage")


def _finish(tenant, execution, rng: random.Random, **changes):
    return services.execution_finish(
        tenant=tenant,
        execution=execution,
        prompt_tokens=rng.randrange(0, 5000),
        completion_tokens=rng.randrange(0, 2000),
        cost_usd=Decimal(rng.randrange(0, 10**6)) / 10**5,
        **changes,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_rollup_equals_the_executions_grouped_after_a_random_mix(tenant_a, project, seed):
    """Creates, starts, finishes (some with another model), failures, cancels, retries,
    corrections of usage by raw SQL, starts moved to another day, and deletes."""
    rng = random.Random(seed)
    executions: list[AgentExecution] = []
    deleted: list[tuple] = []

    def pick(*statuses: str, leaf: bool = False) -> AgentExecution | None:
        with tenant_context(tenant_a):
            rows = AgentExecution.objects.filter(
                tenant_id=tenant_a.pk, pk__in=[e.pk for e in executions], status__in=statuses
            )
            # A leaf for a delete: a step's parent would take its steps with it.
            candidates = list(rows.filter(steps__isnull=True) if leaf else rows)
        return rng.choice(candidates) if candidates else None

    for _ in range(120):
        action = rng.choice(
            [
                "create",
                "create",
                "start",
                "finish",
                "fail",
                "cancel",
                "retry",
                "correct",
                "move",
                "delete",
            ]  # fmt: skip
        )
        if action == "create":
            parent = rng.choice([None, *executions[-3:]])
            executions.append(
                services.execution_create(
                    tenant=tenant_a,
                    project=project,
                    agent_type=rng.choice(["writer", "critic"]),
                    model=rng.choice(MODELS),
                    parent=parent,
                )
            )
        elif action == "start" and (row := pick("pending")):
            services.execution_start(tenant=tenant_a, execution=row)
        elif action == "finish" and (row := pick("running")):
            model = rng.choice([None, *MODELS])
            _finish(tenant_a, row, rng, model=model)
        elif action == "fail" and (row := pick("running")):
            services.execution_fail(tenant=tenant_a, execution=row, error_type="Timeout")
        elif action == "cancel" and (row := pick("pending", "running")):
            services.execution_cancel(tenant=tenant_a, execution=row)
        elif action == "retry" and (row := pick("failed", "cancelled")):
            retry = services.execution_retry(tenant=tenant_a, execution=row)
            if retry not in executions:  # a second retry of one attempt returns the first
                executions.append(retry)
        elif action == "correct" and (row := pick("succeeded", "failed")):
            # A provider's invoice corrects the usage afterwards, written by hand.
            with tenant_context(tenant_a):
                AgentExecution.objects.filter(tenant_id=tenant_a.pk, pk=row.pk).update(
                    prompt_tokens=rng.randrange(0, 9000), cost_usd=Decimal("1.5")
                )
        elif action == "move" and (row := pick("running", "succeeded", "failed")):
            # Started on an earlier day: its figures move from one day's row to another.
            with tenant_context(tenant_a):
                AgentExecution.objects.filter(tenant_id=tenant_a.pk, pk=row.pk).update(
                    started_at=datetime(2026, 1, rng.randrange(1, 28), tzinfo=UTC),
                    completed_at=None,
                )
        elif action == "delete" and (
            row := pick("succeeded", "failed", "cancelled", "pending", leaf=True)
        ):
            deleted.extend(_read(ROW_SQL, [tenant_a.pk, row.pk]))
            with tenant_context(tenant_a):
                AgentExecution.objects.filter(tenant_id=tenant_a.pk, pk=row.pk).delete()
            executions.remove(row)

    assert len(_read(ROLLUP_SQL)) > 1
    assert_rollup_exact(deleted)


def test_a_delete_keeps_the_usage_it_counted(tenant_a, project):
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="w")
    services.execution_start(tenant=tenant_a, execution=execution)
    services.execution_finish(
        tenant=tenant_a, execution=execution, prompt_tokens=10, completion_tokens=5, cost_usd="2"
    )
    with tenant_context(tenant_a):
        AgentExecution.objects.filter(tenant_id=tenant_a.pk, pk=execution.pk).delete()
    used = selectors.usage_of_month(tenant=tenant_a)
    assert (used.executions, used.tokens, used.cost_usd) == (1, 15, Decimal(2))


def test_an_execution_counts_on_the_day_it_started_in_utc(tenant_a, project):
    execution = services.execution_create(
        tenant=tenant_a, project=project, agent_type="w", model="m"
    )
    started = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    with tenant_context(tenant_a):
        AgentExecution.objects.filter(tenant_id=tenant_a.pk, pk=execution.pk).update(
            status="running", started_at=started
        )
    # 23:30 UTC on the 31st: the 31st, whatever the server's or the user's time zone.
    assert _sums(_read(ROLLUP_SQL)) == {
        (tenant_a.pk, started.date(), "m"): (1, 0, 0, 0, Decimal(0))
    }


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_separate_connections_lose_nothing(tenant_a, tenant_b):
    """Eight writers at once, on the same tenant, day and model (one rollup row) and on
    another tenant, each creating, starting and finishing executions."""
    projects = {
        tenant_a.pk: project_create(tenant=tenant_a, name="A"),
        tenant_b.pk: project_create(tenant=tenant_b, name="B"),
    }

    def writer(tenant, number: int):
        def work() -> None:
            for step in range(6):
                execution = services.execution_create(
                    tenant=tenant, project=projects[tenant.pk], agent_type="w", model="shared"
                )
                services.execution_start(tenant=tenant, execution=execution)
                if step % 3 == 2:
                    services.execution_fail(tenant=tenant, execution=execution, error_type="E")
                else:
                    services.execution_finish(
                        tenant=tenant,
                        execution=execution,
                        prompt_tokens=number + 1,
                        completion_tokens=step,
                        cost_usd="0.25",
                    )

        return work

    errors = run_together([writer(t, n) for n in range(4) for t in (tenant_a, tenant_b)])
    assert errors == []
    assert_rollup_exact()
    totals = Counter()
    for tenant_id, _day, model, executions, failures, *_rest in _read(ROLLUP_SQL):
        totals[(tenant_id, model)] += executions
        totals["failures"] += failures
    assert totals[(tenant_a.pk, "shared")] == totals[(tenant_b.pk, "shared")] == 24
    assert totals["failures"] == 16


# Quotas


def _spend(tenant, project, *, tokens: int, cost: str = "0") -> AgentExecution:
    execution = services.execution_create(tenant=tenant, project=project, agent_type="w")
    services.execution_start(tenant=tenant, execution=execution)
    return services.execution_finish(
        tenant=tenant, execution=execution, prompt_tokens=tokens, cost_usd=cost
    )


def test_a_run_past_the_token_quota_is_refused_naming_it(tenant_a, alice, project):
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=1000)
    _spend(tenant_a, project, tokens=999)
    # Below the limit: allowed.
    failing = services.execution_create(tenant=tenant_a, project=project, agent_type="w")
    services.execution_start(tenant=tenant_a, execution=failing)
    services.execution_fail(tenant=tenant_a, execution=failing, error_type="Timeout")
    _spend(tenant_a, project, tokens=1)
    with pytest.raises(ValidationError) as refused:
        services.execution_create(tenant=tenant_a, project=project, agent_type="w")
    assert set(refused.value.message_dict) == {"monthly_token_limit"}
    assert "1,000 of 1,000" in refused.value.message_dict["monthly_token_limit"][0]
    # A retry is a new execution too.
    with pytest.raises(ValidationError) as refused:
        services.execution_retry(tenant=tenant_a, execution=failing)
    assert set(refused.value.message_dict) == {"monthly_token_limit"}
    with tenant_context(tenant_a):
        assert AgentExecution.objects.count() == 3


def test_a_run_past_the_cost_quota_is_refused_and_a_higher_quota_lets_it(tenant_a, alice, project):
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_cost_limit_usd="10.00")
    _spend(tenant_a, project, tokens=5, cost="10.000001")
    with pytest.raises(ValidationError) as refused:
        services.execution_create(tenant=tenant_a, project=project, agent_type="w")
    assert set(refused.value.message_dict) == {"monthly_cost_limit_usd"}
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_cost_limit_usd="20")
    assert services.execution_create(tenant=tenant_a, project=project, agent_type="w").pk


def test_an_existing_idempotency_key_is_answered_past_the_quota(tenant_a, alice, project):
    first = services.execution_create(
        tenant=tenant_a, project=project, agent_type="w", idempotency_key="job-1"
    )
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=0)
    again = services.execution_create(
        tenant=tenant_a, project=project, agent_type="w", idempotency_key="job-1"
    )
    assert again.pk == first.pk
    with pytest.raises(ValidationError, match="monthly_token_limit"):
        services.execution_create(
            tenant=tenant_a, project=project, agent_type="w", idempotency_key="job-2"
        )


def test_last_months_usage_does_not_count_against_this_month(tenant_a, alice, project):
    spent = _spend(tenant_a, project, tokens=500)
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    with tenant_context(tenant_a):
        AgentExecution.objects.filter(pk=spent.pk).update(
            started_at=last_month, completed_at=last_month
        )
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=500)
    assert services.execution_create(tenant=tenant_a, project=project, agent_type="w").pk
    [use] = selectors.quota_usage(tenant=tenant_a, now=last_month)
    assert (use.used, use.reached) == (500, True)


def test_another_tenants_usage_does_not_count(tenant_a, tenant_b, alice, project):
    other = project_create(tenant=tenant_b, name="Other")
    _spend(tenant_b, other, tokens=10_000)
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=100)
    assert services.execution_create(tenant=tenant_a, project=project, agent_type="w").pk


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"monthly_token_limit": -1}, "monthly_token_limit"),
        ({"monthly_token_limit": 10**12 + 1}, "monthly_token_limit"),
        ({"monthly_token_limit": "lots"}, "monthly_token_limit"),
        ({"monthly_token_limit": True}, "monthly_token_limit"),
        ({"monthly_cost_limit_usd": "-0.01"}, "monthly_cost_limit_usd"),
        ({"monthly_cost_limit_usd": "10000000.01"}, "monthly_cost_limit_usd"),
        ({"monthly_cost_limit_usd": float("nan")}, "monthly_cost_limit_usd"),
        ({"monthly_cost_limit_usd": "1e400"}, "monthly_cost_limit_usd"),
        ({"warn_at_percent": 0}, "warn_at_percent"),
        ({"warn_at_percent": 101}, "warn_at_percent"),
        ({"monthly_limit": 5}, "monthly_limit"),
    ],
)
def test_a_bad_quota_is_refused_naming_its_field_and_nothing_is_written(
    tenant_a, alice, values, field
):
    with pytest.raises(ValidationError) as refused:
        services.tenant_quota_set(tenant=tenant_a, by=alice, **values)
    assert field in refused.value.message_dict
    with tenant_context(tenant_a):
        assert not TenantQuota.objects.exists()


def test_only_owners_set_a_quota(tenant_a, alice):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    admin = make_member(tenant_a, "admin@example.com", role="admin")
    for user in (viewer, admin, None):
        with pytest.raises(PermissionDenied):
            services.tenant_quota_set(tenant=tenant_a, by=user, monthly_token_limit=5)
    quota = services.tenant_quota_set(
        tenant=tenant_a, by=alice, monthly_token_limit=5, monthly_cost_limit_usd="1.50"
    )
    assert (quota.monthly_token_limit, quota.monthly_cost_limit_usd) == (5, Decimal("1.50"))
    # Fields not given stay; None lifts a limit.
    quota = services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=None)
    with tenant_context(tenant_a):
        stored = TenantQuota.objects.get()
    assert (stored.monthly_token_limit, stored.monthly_cost_limit_usd) == (None, Decimal("1.50"))


def test_the_warning_threshold(tenant_a, alice, project):
    services.tenant_quota_set(
        tenant=tenant_a, by=alice, monthly_token_limit=1000, warn_at_percent=80
    )
    _spend(tenant_a, project, tokens=799)
    [use] = selectors.quota_usage(tenant=tenant_a)
    assert (use.warned, use.reached) == (False, False)
    _spend(tenant_a, project, tokens=1)
    [use] = selectors.quota_usage(tenant=tenant_a)
    assert (use.warned, use.reached, round(use.percent)) == (True, False, 80)


# The note in /health/


@pytest.mark.django_db(transaction=True)
def test_health_notes_tenants_near_their_quota_and_stays_healthy(client, tenant_a, alice):
    project = project_create(tenant=tenant_a, name="Health")
    response = client.get("/health/", {"format": "json"})
    assert (response.status_code, response.json()["notes"]) == (200, "OK")

    services.tenant_quota_set(
        tenant=tenant_a, by=alice, monthly_token_limit=100, warn_at_percent=80
    )
    _spend(tenant_a, project, tokens=85)
    response = client.get("/health/", {"format": "json"})
    assert response.status_code == 200
    assert response.json()["notes"] == (
        "OK: usage_quotas: 1 tenant past the warning threshold of their monthly quota, "
        "0 at a limit (new executions refused); see the admin's quotas"
    )
    # Counts only: /health/ answers anyone.
    assert tenant_a.name not in response.content.decode()

    _spend(tenant_a, project, tokens=15)
    body = client.get("/health/", {"format": "json"}).json()
    assert "1 tenant past the warning threshold" in body["notes"]
    assert "1 at a limit" in body["notes"]
    assert all(value.startswith("OK") for value in body.values())
