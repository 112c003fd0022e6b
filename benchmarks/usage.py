"""Usage: the usage page against the scan it replaces, and what the rollup's triggers cost
an execution's writes (docs/architecture.md, "Usage rollup").

- "usage page, 90 days": the DB time of the whole admin request for the usage page
  (the rollup's changelist with its totals, chart and rows, period 90 days) as the
  superuser, whose request is scoped to every tenant, against the query the page would
  need without the rollup: the same sums (executions, failures, tokens, cost per tenant,
  day and model) grouped from agent_executions over the same 90 days, run raw under the
  same tenants. Goal <= 1x: the page must cost less than the scan it replaces.
- "execution writes, usage rollup on": an execution's life through the services
  (execution_create, execution_start, execution_finish with tokens and cost), 20 per
  call, with the rollup's two triggers enabled against the same writes with them
  disabled (ALTER TABLE ... DISABLE TRIGGER by the owner before each call, left out of
  the time), interleaved. Goal <= 1.3x, the audit trail's. Measured after the page: the
  executions written with the triggers off are missing from the rollup afterwards.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import psycopg
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from benchmarks.data import Dataset
from benchmarks.reference import Reference
from benchmarks.report import LOWER, PathResult
from benchmarks.scales import Scale
from benchmarks.timing import (
    Outcome,
    StatementTimer,
    Stats,
    interleave,
    milliseconds,
    where_time_goes,
)
from core.ids import uuid7_floor

PAGE_GOAL = 1.0
WRITE_GOAL = 1.3
EXECUTIONS_PER_CALL = 20
PERIOD_DAYS = 90

# The page's sums without the rollup: one scan of the period's executions (an id range a
# day wider, so only its monthly partitions are read; then the page's own days).
RAW_USAGE_SQL = """
SELECT tenant_id, (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date AS day, model,
    count(*), count(*) FILTER (WHERE status = 'failed'), sum(prompt_tokens),
    sum(completion_tokens), sum(cost_usd)
FROM agent_executions
WHERE id >= %s AND (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date >= %s
GROUP BY 1, 2, 3 ORDER BY 2 DESC, 3
"""


def rollup_triggers(owner: psycopg.Connection) -> list[str]:
    rows = owner.execute(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'agent_executions'::regclass "
        "AND tgname LIKE 'pgtrigger_usage_rollup_%' ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def switch_rollup(owner: psycopg.Connection, triggers: list[str], *, on: bool) -> None:
    verb = sql.SQL("ENABLE" if on else "DISABLE")
    with owner.transaction():
        for name in triggers:
            # On a partitioned table it reaches every partition's clone of the trigger.
            owner.execute(
                sql.SQL("ALTER TABLE agent_executions {} TRIGGER {}").format(
                    verb, sql.Identifier(name)
                )
            )


def measure_page(dataset: Dataset, ref: Reference, scale: Scale) -> PathResult:
    client = Client(HTTP_HOST="localhost")
    client.force_login(dataset.superuser)
    url = reverse("admin:agents_executionusagedaily_changelist")
    tenants = dataset.tenant_ids()
    first_day = timezone.now().date() - timedelta(days=PERIOD_DAYS - 1)
    since = uuid7_floor(timezone.now() - timedelta(days=PERIOD_DAYS + 1))
    timers: list[StatementTimer] = []
    shown: dict = {}

    def project() -> Outcome:
        timer = StatementTimer()
        with timer.recording():
            response = client.get(url, {"period": str(PERIOD_DAYS)}, secure=True)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}")
        timers.append(timer)
        totals = response.context_data["usage_totals"]
        shown["executions"] = totals.executions
        return Outcome(rows=totals.executions, seconds=timer.seconds)

    def reference() -> Outcome:
        with ref.conn.transaction(), ref.conn.cursor() as cursor:
            ref.set_scope(cursor, tenants)
            started = time.perf_counter()
            cursor.execute(RAW_USAGE_SQL, [since, first_day])
            found = cursor.fetchall()
            elapsed = time.perf_counter() - started
        return Outcome(rows=sum(row[3] for row in found), seconds=elapsed)

    page_times, raw_times = interleave(
        f"usage page, {PERIOD_DAYS} days", project, reference, rounds=scale.admin_rounds
    )
    return PathResult(
        key="usage_page",
        group="admin",
        title=f"admin usage page, {PERIOD_DAYS} days: DB time",
        reference_title="the same sums grouped from agent_executions",
        unit="ms",
        project=milliseconds(page_times),
        reference=milliseconds(raw_times),
        goal=PAGE_GOAL,
        notes={"executions_summed": shown.get("executions"), "profile": where_time_goes(timers)},
    )


def measure_writes(dataset: Dataset, owner: psycopg.Connection, scale: Scale) -> PathResult:
    from agents.services import execution_create, execution_finish, execution_start
    from documents.services import project_create

    tenant = dataset.hot.tenant
    project = project_create(tenant=tenant, name="bench usage rollup")
    triggers = rollup_triggers(owner)
    if len(triggers) != 2:
        raise RuntimeError(f"expected the rollup's two triggers, found {triggers}")

    def executions() -> int:
        for n in range(EXECUTIONS_PER_CALL):
            execution = execution_create(
                tenant=tenant, project=project, agent_type="bench", model=f"bench-{n % 3}"
            )
            execution_start(tenant=tenant, execution=execution)
            execution_finish(
                tenant=tenant,
                execution=execution,
                prompt_tokens=1200,
                completion_tokens=300,
                cost_usd=Decimal("0.0081"),
            )
        return EXECUTIONS_PER_CALL

    def side(on: bool):
        def run() -> Outcome:
            started = time.perf_counter()
            switch_rollup(owner, triggers, on=on)
            switched = time.perf_counter() - started
            return Outcome(rows=executions(), excluded=switched)

        return run

    on_times, off_times = interleave(
        "execution writes, usage rollup on vs off",
        side(True),
        side(False),
        rounds=max(3, scale.writer_runs),
    )
    switch_rollup(owner, triggers, on=True)
    per_execution = [1000 * seconds / EXECUTIONS_PER_CALL for seconds in on_times]
    per_execution_off = [1000 * seconds / EXECUTIONS_PER_CALL for seconds in off_times]
    return PathResult(
        key="usage_rollup_write",
        group="writes",
        title="execution create + start + finish, usage rollup on",
        reference_title="rollup triggers off",
        unit="ms",
        project=Stats.of(per_execution),
        reference=Stats.of(per_execution_off),
        better=LOWER,
        goal=WRITE_GOAL,
        notes={"executions_per_call": EXECUTIONS_PER_CALL},
    )


def measure(
    dataset: Dataset, owner: psycopg.Connection, ref: Reference, scale: Scale
) -> list[PathResult]:
    return [measure_page(dataset, ref, scale), measure_writes(dataset, owner, scale)]
