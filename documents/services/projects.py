"""Projects: create, soft delete and restore, and the purge of soft-deleted ones."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Count, QuerySet
from django.db.models.deletion import Collector
from django.utils import timezone

from core.db.roles import require_sees_every_row
from core.db.tenant_rows import lock_by_tenant
from core.jobs import JobSummary, job_cutoff, job_duration
from documents.models import (
    Project,
)
from tenancy.context import require_tenant, system_context, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)


def project_create(
    *,
    tenant: TenantRef,
    name: str,
    by: User | None = None,
    status: str = Project.Status.DRAFT,
    current_step: int = 1,
    language: str = "en",
    metadata: dict | None = None,
) -> Project:
    require_tenant(tenant)
    with tenant_context(tenant):
        project = Project(
            tenant_id=getattr(tenant, "pk", tenant),
            name=name,
            created_by=by,
            status=status,
            current_step=current_step,
            language=language,
            metadata=metadata or {},
        )
        project.full_clean()
        project.save()
    return project


def project_soft_delete(*, tenant: TenantRef, project: Project) -> Project:
    """Hide the project from the default manager; its rows stay until purged."""
    require_tenant(tenant, project=project)
    with tenant_context(tenant):
        if project.deleted_at is None:
            project.deleted_at = timezone.now()
            _save_deleted_at(project)
    return project


def project_restore(*, tenant: TenantRef, project: Project) -> Project:
    require_tenant(tenant, project=project)
    with tenant_context(tenant):
        if project.deleted_at is not None:
            project.deleted_at = None
            _save_deleted_at(project)
    return project


def project_share_lock(*, tenant_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """Hold the project's row FOR SHARE until the transaction ends.

    The lock of every writer of a project's rows (the project_live triggers take it at
    their insert): a writer that must lock other rows first, rows the purge deletes
    after locking the project, takes this one before them, so both lock in one order.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM projects WHERE tenant_id = %s AND id = %s FOR SHARE",
            [tenant_id, project_id],
        )


def _save_deleted_at(project: Project) -> None:
    project.full_clean()
    project.save(update_fields=["deleted_at"])
    # The trigger set updated_at; show the caller the stored value.
    project.refresh_from_db(fields=["updated_at"])


@dataclass(frozen=True)
class PurgeSummary(JobSummary):
    """What projects_purge_deleted removed, or would remove on a dry run."""

    cutoff: datetime
    # Tenant slug -> projects purged.
    projects_by_tenant: dict[str, int]
    # Model label ("documents.DocumentVersion") -> rows deleted with the projects.
    rows_by_model: dict[str, int]

    @property
    def total_projects(self) -> int:
        return sum(self.projects_by_tenant.values())

    def report(self) -> list[str]:
        verb = "Would delete" if self.dry_run else "Deleted"
        return [
            f"{verb} {self.total_projects} project(s) soft-deleted before "
            f"{self.cutoff.isoformat()}.",
            *(f"  tenant {slug}: {n} project(s)" for slug, n in self.projects_by_tenant.items()),
            *(f"  {label}: {n} row(s)" for label, n in sorted(self.rows_by_model.items())),
        ]


def _rows_to_delete(queryset: QuerySet) -> dict[str, int]:
    """Rows a delete() of the queryset would remove, per model, without deleting them."""
    collector = Collector(using=DEFAULT_DB_ALIAS, origin=queryset)
    # Django's own delete() passes a QuerySet; the stubs ask for a __contains__ it lacks.
    collector.collect(queryset)  # type: ignore[arg-type]
    counts: Counter[str] = Counter()
    for fast in collector.fast_deletes:
        counts[fast.model._meta.label] += fast.count()
    for model, instances in collector.data.items():
        counts[model._meta.label] += len(instances)
    return {label: count for label, count in counts.items() if count}


def projects_purge_deleted(
    *,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeSummary:
    """Delete projects soft-deleted before `now - older_than`, in every tenant.

    `older_than` defaults to settings.PURGE_DELETED_PROJECTS_AFTER_DAYS. A system job
    (core.jobs): runs in system_context (the logged bypass of row-level security), so
    it must not be called inside a transaction. Deleting cascades through the ORM and
    the database to versions, agent executions and exports; knowledge documents stay
    with the tenant (their project becomes NULL). A dry run deletes nothing and the
    summary says what would go. Idempotent: purged rows are gone. Raises
    ValidationError naming `older_than` when it is negative or reaches before the year
    1, and ImproperlyConfigured where the bypass cannot see every project (no
    DATABASE_OWNER_URL).
    """
    if older_than is None:
        older_than = job_duration("PURGE_DELETED_PROJECTS_AFTER_DAYS")
    cutoff = job_cutoff(now or timezone.now(), older_than, field="older_than")
    with system_context(f"purge_deleted: projects deleted before {cutoff.isoformat()}"):
        # Seeing no project, it would report nothing to purge; say why instead.
        require_sees_every_row(Project._meta.db_table, job="projects_purge_deleted")
        doomed = Project.all_objects.filter(deleted_at__lt=cutoff)
        if not dry_run:
            # Lock first: a project restored meanwhile no longer matches and is kept. The
            # projects' rows before anything of theirs, tenant by tenant (one shard's rows
            # at a time on Citus: core.db.tenant_rows), in id order, as every writer of a
            # project's rows takes the project's row first (project_share_lock): a writer
            # and the purge, or two purges, never lock in opposite orders.
            keys = lock_by_tenant(doomed.order_by("id"), "id")
            doomed = Project.all_objects.filter(id__in=[pk for _tenant, pk in keys])
        projects_by_tenant = {
            row["tenant__slug"]: row["projects"]
            for row in doomed.order_by("tenant__slug")
            .values("tenant__slug")
            .annotate(projects=Count("id"))
        }
        if not dry_run:
            _total, rows_by_model = doomed.delete()
            rows_by_model = {label: n for label, n in rows_by_model.items() if n}
        else:
            rows_by_model = _rows_to_delete(doomed)
    logger.info(
        "purge_deleted %s",
        "dry run" if dry_run else "applied",
        extra={
            "cutoff": cutoff.isoformat(),
            "projects_by_tenant": projects_by_tenant,
            "rows_by_model": rows_by_model,
        },
    )
    return PurgeSummary(
        dry_run=dry_run,
        cutoff=cutoff,
        projects_by_tenant=projects_by_tenant,
        rows_by_model=rows_by_model,
    )
