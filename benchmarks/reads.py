"""ORM read paths and tenant_context, per call, against raw psycopg doing the same reads.

Each project call is what application code writes: a selector or a queryset inside
tenant_context(tenant). Its reference is one raw transaction that sets the same tenant
with set_config and runs the very SELECT the project sent (benchmarks.reference).
"""

from __future__ import annotations

from datetime import UTC, datetime

from benchmarks.data import METADATA_PROBE, Dataset
from benchmarks.reference import Reference, own_statements
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import interleave, milliseconds, profile
from core.db import partitions

ORM_GOAL = 2.0
CONTEXT_GOAL = 1.5
PAGE = 20
# Entering tenant_context costs microseconds: more rounds for as steady a median.
CONTEXT_ROUNDS_FACTOR = 4


def _compare(
    key: str, title: str, reference_title: str, project, reference, rounds: int, goal: float
) -> PathResult:
    project_times, reference_times = interleave(title, project, reference, rounds=rounds)
    return PathResult(
        key=key,
        group="reads",
        title=title,
        reference_title=reference_title,
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        goal=goal,
        notes={"profile": profile(project)},
    )


def measure(dataset: Dataset, ref: Reference, scale: Scale) -> list[PathResult]:
    from agents.selectors import execution_history
    from documents.models import Project
    from documents.selectors import latest_versions, project_list
    from tenancy.context import tenant_context

    tenant = dataset.hot.tenant
    tenants = [tenant.pk]
    with tenant_context(tenant):
        project_row = Project.objects.get(pk=dataset.hot_project_id)

    def context_entry() -> int:
        with tenant_context(tenant):
            return 0

    def by_pk() -> int:
        with tenant_context(tenant):
            Project.objects.get(pk=dataset.hot_project_id)
        return 1

    def first_page() -> int:
        with tenant_context(tenant):
            return len(list(project_list(tenant=tenant)[:PAGE]))

    def metadata_contains() -> int:
        with tenant_context(tenant):
            matching = project_list(tenant=tenant).filter(metadata__contains=METADATA_PROBE)
            return len(list(matching[:PAGE]))

    def latest() -> int:
        return len(latest_versions(tenant=tenant, project=project_row))

    # The newest full month of run history: the selector's id range lets PostgreSQL
    # scan that month's partition only.
    this_month = partitions.month_start(datetime.now(UTC))
    last_month = partitions.add_months(this_month, -1)

    def history_month() -> int:
        with tenant_context(tenant):
            page = execution_history(tenant=tenant, start=last_month, end=this_month)[:PAGE]
            return len(list(page))

    def replay(call):
        statements = own_statements(call)
        return lambda: ref.rows(tenants, statements)

    return [
        _compare(
            "tenant_context",
            "tenant_context entry alone",
            "BEGIN + set_config + COMMIT",
            context_entry,
            lambda: ref.rows(tenants, []),
            scale.rounds * CONTEXT_ROUNDS_FACTOR,
            CONTEXT_GOAL,
        ),
        _compare(
            "project_by_pk",
            "project by pk, in tenant_context",
            "raw psycopg, same set_config",
            by_pk,
            replay(by_pk),
            scale.rounds,
            ORM_GOAL,
        ),
        _compare(
            "project_list",
            f"project list, first {PAGE}",
            "its query, raw",
            first_page,
            replay(first_page),
            scale.rounds,
            ORM_GOAL,
        ),
        _compare(
            "metadata_contains",
            f"JSONB @> on metadata, first {PAGE}",
            "its query, raw",
            metadata_contains,
            replay(metadata_contains),
            scale.rounds,
            ORM_GOAL,
        ),
        _compare(
            "execution_history_month",
            f"run history of a month, first {PAGE} (pruned)",
            "its query, raw",
            history_month,
            replay(history_month),
            scale.rounds,
            ORM_GOAL,
        ),
        _compare(
            "latest_versions",
            "latest versions of a project",
            "its query, raw",
            latest,
            replay(latest),
            scale.rounds,
            ORM_GOAL,
        ),
    ]
