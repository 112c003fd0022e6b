"""Run history partitions (core.db.partitions): agent_executions is split by month.

Creating the coming months' partitions, and dropping the months past retention.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from agents.models import AgentExecution, ChangeProposal
from core.db import partitions
from core.ids import uuid7_floor
from tenancy.context import system_context

logger = logging.getLogger(__name__)

EXECUTIONS_TABLE = AgentExecution._meta.db_table


def execution_partitions_ensure(*, ahead: int, now: datetime | None = None) -> list[str]:
    """Create agent_executions' partitions from this month to `ahead` months on; the new ones.

    Idempotent. As the owner (system_context): only the owner may create partitions.
    """
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 120:
        raise ValidationError({"ahead": "A whole number of months from 0 to 120."})
    current = partitions.month_start(now or timezone.now())
    with system_context("create agent_executions partitions"):
        with connection.cursor() as cursor:
            return partitions.ensure_months(
                cursor, EXECUTIONS_TABLE, current, partitions.add_months(current, ahead)
            )


def execution_history_retain(*, months: int, now: datetime | None = None) -> dict[str, int]:
    """Remove the run history older than the last `months` months (this one included).

    Whole months: their partitions are detached and dropped, and everything that
    depends on their executions goes by its foreign key's rule (sources, errors,
    evaluations and idempotency keys deleted; messages, decisions and final proposals
    keep their row without the execution). Refused, changing nothing, while a change
    proposal under review (pending, approved) comes from one of those executions or an
    export is being built (pending, running) for a project that has some. One
    transaction: all of it or nothing. Returns the rows removed or cleared per table.
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValidationError({"retain_months": "A whole number of months, 1 or more."})
    cutoff = partitions.add_months(partitions.month_start(now or timezone.now()), 1 - months)
    upper = uuid7_floor(cutoff)
    with system_context("agent_executions retention"):
        # The lock first: no execution of those months may appear, nor be pointed at by
        # a new proposal, between the checks and the drop.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {EXECUTIONS_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        reviewing = ChangeProposal.objects.filter(
            execution_id__lt=upper,
            status__in=[ChangeProposal.Status.PENDING, ChangeProposal.Status.APPROVED],
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
    logger.info("execution history retained", extra={"cutoff": cutoff.isoformat(), **removed})
    return removed
