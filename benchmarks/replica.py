"""The replica read path (`--replica`): a project list read on a streaming standby.

Optional because it needs a pair of servers of its own: the benchmark database lives on
the development server, which is not set up to stream, so this starts a throwaway
primary and a hot standby from the embedded binaries (tests/streaming_replica.py, the
same pair the replica tests use), migrates the primary, and writes one tenant's
projects. The project side is `project_list` in a GET-like unit of work, which
ReplicaRouter sends to the standby (its transaction there carries the tenant, so
row-level security holds); the reference is the very same call in a unit pinned to the
primary. Both servers run on this machine, so the ratio is the router's and the standby
transaction's cost, not a network's.
"""

from __future__ import annotations

from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import interleave, milliseconds

GOAL = 1.5
PAGE = 20
PROJECTS = 2_000


def measure(scale: Scale, progress) -> PathResult:
    from django.core.management import call_command
    from django.db import router

    from core.db import replicas
    from documents.models import Project
    from documents.selectors import project_list
    from tenancy.context import tenant_context
    from tenancy.models import Tenant
    from tests.streaming_replica import (
        django_on,
        replay_lag_after_write,
        standby_of,
        throwaway_primary,
    )

    progress("replica: a throwaway primary and its standby (pg_basebackup -R)")
    with (
        throwaway_primary() as primary,
        standby_of(primary) as standby,
        django_on(primary, {"replica_1": standby.socket_dir}),
    ):
        call_command("migrate", verbosity=0)
        tenant = Tenant.objects.create(name="Replica bench", slug="replica-bench")
        with tenant_context(tenant):
            Project.objects.bulk_create(
                Project(tenant=tenant, name=f"project {n}") for n in range(PROJECTS)
            )
        lag = replay_lag_after_write(primary, standby.socket_dir)
        progress(f"replica: {PROJECTS} projects replayed on the standby in {lag * 1000:.0f} ms")

        def first_page(**unit) -> int:
            with replicas.unit_of_work(**unit), tenant_context(tenant):
                return len(list(project_list(tenant=tenant)[:PAGE]))

        def read_where(**unit) -> str:
            with replicas.unit_of_work(**unit), tenant_context(tenant):
                return router.db_for_read(Project)

        # The comparison is only fair if each side reads where it says it does.
        assert read_where(read_only=True) == "replica_1", "the standby is not used"
        assert read_where(on_primary=True) == "default"
        project_times, reference_times = interleave(
            "project list on the replica",
            lambda: first_page(read_only=True),
            lambda: first_page(on_primary=True),
            rounds=scale.rounds,
        )
    return PathResult(
        key="project_list_replica",
        group="replicas",
        title=f"project list, first {PAGE}, on the replica",
        reference_title="the same on the primary",
        unit="ms",
        project=milliseconds(project_times),
        reference=milliseconds(reference_times),
        goal=GOAL,
        notes={"projects": PROJECTS, "replay_ms": round(lag * 1000, 1)},
    )
