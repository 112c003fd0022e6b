"""The agent-executions changelist: the DB time of a whole admin request vs its page query.

The project's figure is the time of every statement the request sends (session, user,
tenant scope, filters' choices, the paginator's count, the page), measured around each
execute on Django's connection; the request runs through Django's test client as a
superuser, middleware and all. The reference is the changelist's own page query, the
one that fetches the rows shown, run raw under the same tenants (a superuser's request
is scoped to every tenant) and timed the same way.
"""

from __future__ import annotations

import time

from django.test import Client
from django.urls import reverse

from benchmarks.data import COMMON_TERM, RARE_TERM, Dataset
from benchmarks.reference import Reference
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.timing import (
    Outcome,
    StatementTimer,
    interleave,
    milliseconds,
    where_time_goes,
)

ADMIN_GOAL = 2.0
CASES = (
    ("admin_plain", "plain", {}),
    ("admin_status", "status filter", {"status__exact": "failed"}),
    ("admin_search", f"search {COMMON_TERM!r}", {"q": COMMON_TERM}),
    ("admin_search_rare", f"rare search {RARE_TERM!r}", {"q": RARE_TERM}),
)


def measure(dataset: Dataset, ref: Reference, scale: Scale) -> list[PathResult]:
    # ALLOWED_HOSTS has localhost by default; secure=True, as outside debug HTTP redirects.
    client = Client(HTTP_HOST="localhost")
    client.force_login(dataset.superuser)
    url = reverse("admin:agents_agentexecution_changelist")
    tenants = dataset.tenant_ids()
    results = []
    for key, label, query in CASES:
        page: dict = {}

        def project(query=query, page=page) -> Outcome:
            timer = StatementTimer()
            with timer.recording():
                response = client.get(url, query, secure=True)
            if response.status_code != 200:
                raise RuntimeError(f"{url} {query}: HTTP {response.status_code}")
            changelist = response.context_data["cl"]
            page["statement"] = changelist.result_list.query.sql_with_params()
            page.setdefault("timers", []).append(timer)
            return Outcome(rows=len(changelist.result_list), seconds=timer.seconds)

        def reference(page=page) -> Outcome:
            statement = page["statement"]
            # Only the page query is timed, not the set_config before it.
            with ref.conn.transaction(), ref.conn.cursor() as cursor:
                ref.set_scope(cursor, tenants)
                started = time.perf_counter()
                cursor.execute(*statement)
                found = cursor.fetchall()
                elapsed = time.perf_counter() - started
            return Outcome(rows=len(found), seconds=elapsed)

        project_times, reference_times = interleave(
            f"admin changelist, {label}", project, reference, rounds=scale.admin_rounds
        )
        results.append(
            PathResult(
                key=key,
                group="admin",
                title=f"admin executions, {label}: DB time",
                reference_title="its page query",
                unit="ms",
                project=milliseconds(project_times),
                reference=milliseconds(reference_times),
                goal=ADMIN_GOAL,
                notes={"profile": where_time_goes(page["timers"])},
            )
        )
    return results
