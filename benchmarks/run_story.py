"""A run's story page (issue 23) for a run of 50 steps, amid the generated run history.

The run is written through the services into the 50% tenant, after the history is
loaded: 50 executions in a tree (a root, steps under it and chains of sub-steps), every
seventh step failing with a TimeoutError and retried successfully, retrievers that read
five chunks each, a version, a decision and a proposal. The project's figure is the DB
time of the whole admin request (`/admin/agents/agentexecution/run/<id>/` through
Django's test client as the bench's superuser, middleware and all), timed around each
statement as the changelist rows are; its reference is the page's own reads
(agents.selectors.run_story's statements, taken from what it sent) run raw in one
transaction under the same tenant. The notes give the request's wall time (rendering
included) and where its DB time goes.
"""

from __future__ import annotations

import statistics
import time
import uuid

from django.test import Client

from benchmarks.data import Dataset
from benchmarks.reference import Reference, own_statements
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import Outcome, StatementTimer, interleave, milliseconds, where_time_goes

STEPS = 50
GOAL = 2.0
SOURCES_PER_RETRIEVER = 5


def seed_run(dataset: Dataset) -> tuple[uuid.UUID, int]:
    """A run of STEPS executions in a new project of the 50% tenant; its id and size."""
    from agents import services
    from documents.models import Chunk
    from documents.services import document_version_create, project_create
    from tenancy.context import tenant_context

    tenant = dataset.hot.tenant
    project = project_create(tenant=tenant, name="Bench: a run of 50 steps")
    with tenant_context(tenant):
        chunks = list(Chunk.objects.filter(tenant=tenant).order_by("id")[:SOURCES_PER_RETRIEVER])

    def step(agent_type: str, parent=None):
        execution = services.execution_create(
            tenant=tenant, project=project, agent_type=agent_type, parent=parent, model="gpt-4o"
        )
        return services.execution_start(tenant=tenant, execution=execution)

    def finish(execution, number: int, **fields):
        return services.execution_finish(
            tenant=tenant,
            execution=execution,
            prompt_tokens=100 + number,
            completion_tokens=20 + number,
            cost_usd="0.0004",
            **fields,
        )

    root = step("planner")
    parent, written = root, 1
    number = 0
    while written < STEPS:
        number += 1
        agent_type = ("retriever", "drafter", "critic")[number % 3]
        execution = step(agent_type, parent)
        written += 1
        if agent_type == "retriever":
            services.execution_record_sources(
                tenant=tenant,
                execution=execution,
                results=[{"chunk": c, "score": 1 - i / 10} for i, c in enumerate(chunks)],
            )
        if number % 7 == 0 and written < STEPS:
            services.execution_fail(
                tenant=tenant,
                execution=execution,
                error_type="TimeoutError",
                error_message="the model did not answer in time",
                traceback="Traceback (most recent call last):\nTimeoutError: 30 s",
            )
            execution = services.execution_retry(
                tenant=tenant, execution=execution, recovery_strategy="a smaller context"
            )
            execution = services.execution_start(tenant=tenant, execution=execution)
            written += 1
        finish(execution, number)
        # Chains of three sub-steps under the root: a tree, not a list.
        parent = root if number % 3 == 0 else execution
    version = document_version_create(
        tenant=tenant, project=project, document_type="plan", content="The plan, written."
    )
    services.decision_record(
        tenant=tenant,
        project=project,
        category="stack",
        question="Which queue?",
        options=[{"name": "procrastinate"}, {"name": "celery"}],
        selected="procrastinate",
        execution=root,
    )
    services.change_proposal_propose(
        tenant=tenant, base_version=version, content="The plan, revised.", execution=root
    )
    finish(root, 0, produced_version=version)
    return root.correlation_id, written


def measure(dataset: Dataset, ref: Reference, scale: Scale) -> PathResult:
    from django.urls import reverse

    from agents.selectors import run_story

    correlation_id, steps = seed_run(dataset)
    tenant_id = dataset.hot.tenant.pk
    statements = own_statements(lambda: run_story(tenant=tenant_id, correlation_id=correlation_id))
    client = Client(HTTP_HOST="localhost")
    client.force_login(dataset.superuser)
    url = reverse("admin:agents_agentexecution_run", args=[str(correlation_id)])
    timers: list[StatementTimer] = []
    walls: list[float] = []

    def project() -> Outcome:
        timer = StatementTimer()
        started = time.perf_counter()
        with timer.recording():
            response = client.get(url, secure=True)
        walls.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}")
        timers.append(timer)
        return Outcome(rows=len(response.context_data["steps"]), seconds=timer.seconds)

    def reference() -> Outcome:
        with ref.conn.transaction(), ref.conn.cursor() as cursor:
            ref.set_scope(cursor, [tenant_id])
            started = time.perf_counter()
            found = []
            for sql, params in statements:
                cursor.execute(sql, params)
                found.append(cursor.fetchall())
            elapsed = time.perf_counter() - started
        return Outcome(rows=len(found[0]), seconds=elapsed)

    project_times, reference_times = interleave(
        "run story page", project, reference, rounds=scale.admin_rounds * 2
    )
    return PathResult(
        key="admin_run_story",
        group="admin",
        title=f"admin run story, {steps} steps: DB time",
        reference_title="its page queries",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        goal=GOAL,
        notes={
            "steps": steps,
            "executions_in_table": scale.executions + steps,
            "page_queries": len(statements),
            "request_wall_ms": round(statistics.median(walls) * 1000, 3),
            "profile": where_time_goes(timers),
        },
    )
