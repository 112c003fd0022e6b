"""Run history partitions (core.db.partitions): agent_executions is split by month, as are
the audit trail and the search log, whose months this job creates too.

Creating the coming months' partitions, and dropping the months past retention.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from agents.models import AgentExecution, ChangeProposal
from core.db import partitions
from core.db.connections import owner_role_name, runtime_role_name
from core.db.roles import revoke_append_only_writes
from core.ids import uuid7_floor
from core.jobs import JobSummary, rolled_back_on_dry_run
from documents.models import SearchQuery
from tenancy.context import system_context
from tenancy.models import AuditEvent, GlobalAuditEvent

logger = logging.getLogger(__name__)

EXECUTIONS_TABLE = AgentExecution._meta.db_table
# Every table partitioned by month: the run history, the audit trail and the search log.
PARTITIONED_TABLES = (
    EXECUTIONS_TABLE,
    AuditEvent._meta.db_table,
    GlobalAuditEvent._meta.db_table,
    SearchQuery._meta.db_table,
)


@dataclass(frozen=True)
class PartitionsSummary(JobSummary):
    """What the partitions job created and removed, or would on a dry run."""

    created: list[str]
    # Rows removed or cleared per table; None when no retention was asked for.
    removed: dict[str, int] | None = None

    def report(self) -> list[str]:
        created, removed = (
            ("would create", "would remove") if self.dry_run else ("created", "removed")
        )
        lines = [f"{created}: {', '.join(self.created) or 'none (all present)'}"]
        if self.removed is not None:
            shown = ", ".join(f"{table} {n}" for table, n in sorted(self.removed.items()))
            lines.append(f"{removed}: {shown or 'nothing older than the months kept'}")
        return lines


def execution_partitions_ensure(
    *, ahead: int, now: datetime | None = None, dry_run: bool = False
) -> list[str]:
    """Create the partitions of agent_executions, the audit trail and the search log from
    this month to `ahead` months on; the new ones. The audit trail's new months are
    append-only for the runtime role like the others (core.db.roles.revoke_append_only_writes).

    Idempotent. As the owner (system_context): only the owner may create partitions. A
    dry run creates them in a transaction it rolls back (core.jobs.rolled_back_on_dry_run).
    """
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 120:
        raise ValidationError({"ahead": "A whole number of months from 0 to 120."})
    current = partitions.month_start(now or timezone.now())
    with rolled_back_on_dry_run(dry_run) as done:
        with system_context("create monthly partitions"):
            with connection.cursor() as cursor:
                created = [
                    name
                    for table in PARTITIONED_TABLES
                    for name in partitions.ensure_months(
                        cursor, table, current, partitions.add_months(current, ahead)
                    )
                ]
                runtime = runtime_role_name()
                if created and runtime and runtime != owner_role_name():
                    revoke_append_only_writes(cursor, runtime)
            done()
    return created


# A change proposal under review keeps the execution it comes from: removing it would
# clear the proposal's execution_id while a reviewer reads it.
UNDER_REVIEW = (ChangeProposal.Status.PENDING, ChangeProposal.Status.APPROVED)


def history_still_needed(upper: uuid.UUID) -> tuple[int, int]:
    """(change proposals under review that come from an execution with an id below
    `upper`, exports being built for a project that has such executions): while either
    is nonzero, whole months below `upper` are not dropped."""
    reviewing = ChangeProposal.objects.filter(
        execution_id__lt=upper, status__in=UNDER_REVIEW
    ).count()
    # The exports table by its contract name (docs/architecture.md): the exports app
    # builds on documents, not on agents, so neither imports the other.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM exports e WHERE e.status IN ('pending', 'running') "
            "AND EXISTS (SELECT 1 FROM agent_executions x WHERE x.tenant_id = e.tenant_id "
            "AND x.project_id = e.project_id AND x.id < %s)",
            [upper],
        )
        building = cursor.fetchone()[0]
    return reviewing, building


def execution_history_retain(
    *, months: int, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Remove the run history older than the last `months` months (this one included).

    Whole months: their partitions are detached and dropped, and everything that
    depends on their executions goes by its foreign key's rule (sources, errors,
    evaluations and idempotency keys deleted; messages, decisions and final proposals
    keep their row without the execution). Refused, changing nothing, while a change
    proposal under review (pending, approved) comes from one of those executions or an
    export is being built (pending, running) for a project that has some. One
    transaction: all of it or nothing. Returns the rows removed or cleared per table. A
    dry run does it all in that transaction and rolls it back (exact counts, the same
    brief locks).
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValidationError({"retain_months": "A whole number of months, 1 or more."})
    cutoff = partitions.add_months(partitions.month_start(now or timezone.now()), 1 - months)
    upper = uuid7_floor(cutoff)
    with rolled_back_on_dry_run(dry_run) as done, system_context("agent_executions retention"):
        # The lock first: no execution of those months may appear, nor be pointed at by
        # a new proposal, between the checks and the drop.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {EXECUTIONS_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        reviewing, building = history_still_needed(upper)
        if reviewing or building:
            raise ValidationError(
                {
                    "retain_months": f"History before {cutoff:%Y-%m} is still needed: "
                    f"{reviewing} change proposals under review come from its executions "
                    f"and {building} exports are being built for projects with executions "
                    "in it. Nothing was removed."
                }
            )
        with connection.cursor() as cursor:
            removed = partitions.drop_months_before(cursor, EXECUTIONS_TABLE, cutoff)
        done()
    logger.info(
        "execution history %s",
        "retention dry run" if dry_run else "retained",
        extra={"cutoff": cutoff.isoformat(), **removed},
    )
    return removed
