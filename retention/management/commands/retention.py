"""`manage.py retention [--dry-run]`: enforce every tenant's retention policy."""

from typing import Any

from core.jobs import SystemJobCommand
from retention.services import RetentionSummary, retention_enforce


class Command(SystemJobCommand):
    help = (
        "Remove, in every tenant, the agent executions (with their errors, sources and "
        "idempotency keys), conversation messages, evaluation runs and exports (with their "
        "files) older than its retention policy allows (RETENTION_DEFAULT_DAYS where the "
        "policy says nothing): whole monthly partitions where every tenant's policy lets "
        "them go, short batches otherwise (docs/operations.md, 'Retention'). Records the "
        "run in retention_runs. Audit events go too, sealed first, the oldest part of each "
        "tenant's chain cut at an anchor that audit_verify starts from, and the "
        "search log (search_queries), by whole months or in batches likewise. "
        "--dry-run reports the same counts and removes nothing."
    )

    def run(self, *, dry_run: bool, **options: Any) -> RetentionSummary:
        return retention_enforce(dry_run=dry_run)
