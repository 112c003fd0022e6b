"""Writes of exports: build a project's export file, record downloads, purge expired files.

An export moves pending -> running -> completed (or failed, with error_message), and
the purge moves it to expired once its file is gone. Every transition locks the row
and checks the status it expects, so the purge can race a build safely. Called
outside any transaction, each step commits on its own and other processes see a
running export; inside a caller's transaction (the admin's add form, the seed) the
steps are savepoints that become visible when the caller commits. The file system is
not transactional: if the caller's transaction rolls back, the rows go and the file
stays, until `exports_purge_expired` sweeps folders whose export no longer exists.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from core.db.roles import require_sees_every_row
from core.db.tenant_rows import lock_by_tenant, update_by_tenant
from core.files import delete_file, sweep_orphan_folders
from core.hashing import sha256_hex
from core.ids import uuid7
from core.jobs import JobSummary, job_cutoff, job_duration
from documents.models import Project
from documents.selectors import latest_versions
from exports import builders
from exports.models import Export, ExportFormat, ExportStatus
from tenancy.context import require_tenant, system_context, tenant_context
from tenancy.jobs import defer_tenant_job
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

# The worker's build task (exports.tasks), queued by name.
BUILD_TASK = "exports.build"
STORAGE_ALIAS = "exports"
# Every export's file lives in its own folder, FOLDER_ROOT/<tenant_id>/<export_id>/.
FOLDER_ROOT = "exports"
# Besides completed exports, the purge expires builds that died pending or running: the
# file they may have left under their recorded key goes too.
UNFINISHED_STATUSES = (ExportStatus.PENDING, ExportStatus.RUNNING)


class ExportBuildError(Exception):
    """An export could not be built; the message is recorded on the row."""


def _storage() -> Storage:
    return storages[STORAGE_ALIAS]


def _generate_storage_key(export: Export) -> str:
    """Generated from ids only: nothing a user typed ever reaches a storage path."""
    extension = builders.EXTENSIONS[ExportFormat(export.format)]
    return f"{FOLDER_ROOT}/{export.tenant_id}/{export.pk}/{uuid7()}.{extension}"


def _transition(export: Export, *, expected: tuple[str, ...], **changes: Any) -> Export:
    """Apply `changes` under a row lock if the export's status is still one of `expected`."""
    with tenant_context(export.tenant_id):
        row = Export.objects.select_for_update().get(tenant_id=export.tenant_id, pk=export.pk)
        if row.status not in expected:
            raise ExportBuildError(f"The export became {row.status} while it was being built.")
        for field, value in changes.items():
            setattr(row, field, value)
        row.full_clean()
        row.save(update_fields=list(changes))
    return row


def _failure_message(error: Exception) -> str:
    if isinstance(error, ExportBuildError):
        return str(error)
    if isinstance(error, ValidationError):  # the database refused it: the project went
        return " ".join(error.messages)
    return f"{type(error).__name__}: {error}"


def _mark_failed(export: Export, error: Exception) -> Export:
    message = _failure_message(error)
    try:
        return _transition(
            export,
            expected=(ExportStatus.PENDING, ExportStatus.RUNNING),
            status=ExportStatus.FAILED,
            error_message=message,
            storage_key="",
            manifest={},
            sha256="",
            size_bytes=0,
            completed_at=None,
        )
    except ExportBuildError:
        # Another process (the purge) already moved it on; its status stands.
        with tenant_context(export.tenant_id):
            return Export.objects.get(pk=export.pk)


def _build(export: Export, project: Project) -> Export:
    """Run a pending export to completed, or to failed leaving no file behind."""
    storage = _storage()
    written = False
    try:
        # The key is recorded before the file exists, so a build that dies between
        # writing and completing leaves a file the purge can still find.
        export = _transition(
            export,
            expected=(ExportStatus.PENDING,),
            status=ExportStatus.RUNNING,
            storage_key=_generate_storage_key(export),
        )
        versions = builders.ordered_versions(
            latest_versions(tenant=export.tenant_id, project=project)
        )
        if not versions:
            raise ExportBuildError("The project has no document versions to export.")
        manifest = builders.build_manifest(
            export_id=export.pk,
            export_format=export.format,
            created_at=export.created_at,
            project_id=project.pk,
            project_name=project.name,
            versions=versions,
        )
        content = builders.build_file(export.format, manifest=manifest, versions=versions)
        written = True  # from here on a (partial) file may exist under the key
        saved_key = storage.save(export.storage_key, ContentFile(content))
        if saved_key != export.storage_key:
            delete_file(storage, saved_key)
            raise ExportBuildError("The storage renamed the export file; it was discarded.")
        export = _transition(
            export,
            expected=(ExportStatus.RUNNING,),
            status=ExportStatus.COMPLETED,
            manifest=manifest,
            sha256=sha256_hex(content),
            size_bytes=len(content),
            completed_at=timezone.now(),
        )
    except Exception as error:
        if isinstance(error, ExportBuildError | ValidationError):
            logger.warning(
                "export failed: %s", _failure_message(error), extra={"export_id": str(export.pk)}
            )
        else:
            logger.exception("export failed", extra={"export_id": str(export.pk)})
        if written:
            try:
                delete_file(storage, export.storage_key)
            except Exception:
                logger.exception(
                    "could not delete the file of a failed export",
                    extra={"export_id": str(export.pk), "storage_key": export.storage_key},
                )
        failed = _mark_failed(export, error)
        if isinstance(error, ValidationError):
            # The project was deleted while the export was built (the export's
            # project_live_build trigger refused running or completed): refused as a
            # new export of it would be, once the row says why it failed.
            raise
        return failed
    logger.info(
        "export completed",
        extra={"export_id": str(export.pk), "size_bytes": export.size_bytes},
    )
    return export


# An export is a download to fetch, not an archive; a longer life is a mistake (and a
# large enough one is past the calendar's end: an OverflowError, not a ValidationError).
MAX_EXPORT_TTL = timedelta(days=365)


def export_create(
    *,
    tenant: TenantRef,
    project: Project,
    format: str = ExportFormat.ZIP,
    by: User | None = None,
    ttl: timedelta | None = None,
    queue: bool = False,
) -> Export:
    """Build an export of the latest version of each of the project's documents.

    Bad input raises ValidationError naming the field and creates nothing. Otherwise
    returns the export: completed (file written, sha256 and size recorded) or failed
    with error_message and no file, for instance when the project has no versions.
    `ttl` defaults to the database's 24 hours.

    Outside any transaction, the row and each status change commit on their own, so
    other processes see the export pending, then running. Inside a caller's
    transaction the steps are savepoints, visible to others only when the caller
    commits; if the caller rolls back, the row goes but the written file stays, and
    `purge_exports` sweeps it once it is older than ORPHAN_FILE_GRACE_SECONDS.

    `queue=True` (the admin's action) builds it on the worker instead: the export comes
    back pending, and its `exports.build` job is queued in the transaction that creates
    it (both commit or neither). A build job whose worker died leaves it running; the
    purge fails it after EXPORT_BUILD_LEASE_SECONDS, as for any build that died.
    """
    tenant_id = require_tenant(tenant, project=project)
    if format not in ExportFormat.values:
        raise ValidationError(
            {"format": f"Unknown format {format!r}; expected one of {', '.join(ExportFormat)}."}
        )
    if ttl is not None and not timedelta(0) < ttl <= MAX_EXPORT_TTL:
        raise ValidationError(
            {"ttl": f"The time to live must be positive and at most {MAX_EXPORT_TTL.days} days."}
        )
    # Whether the project is deleted is the database's to say, under the project's row
    # lock (the exports' project_live trigger), not the caller's copy's, which may be
    # stale: a ValidationError naming `project`.
    with tenant_context(tenant_id):
        export = Export(tenant_id=tenant_id, project=project, format=format, created_by=by)
        if ttl is not None:
            export.expires_at = timezone.now() + ttl
        export.full_clean()
        export.save()  # created_at and a defaulted expires_at come back by RETURNING
        if queue:
            defer_tenant_job(BUILD_TASK, tenant_id, export_id=str(export.pk))
    logger.info(
        "export created",
        extra={"export_id": str(export.pk), "project_id": str(project.pk), "format": format},
    )
    return export if queue else _build(export, project)


def export_build(*, tenant: TenantRef, export_id: uuid.UUID) -> Export | None:
    """Build the pending export `export_id` (the worker's exports.build); None when it is
    gone (erased, purged). One no longer pending (built by an earlier attempt, failed by
    the purge) is returned as it is.
    """
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        export = Export.objects.filter(tenant_id=tenant_id, pk=export_id).first()
        project = export.project if export is not None else None
    if export is None or project is None:
        return None
    if export.status != ExportStatus.PENDING:
        return export
    return _build(export, project)


def _download_refusal(export: Export) -> ValidationError:
    current = Export.objects.filter(pk=export.pk).values("status", "expires_at").first()
    if current is None:
        return ValidationError({"export": "The export does not exist."})
    if current["status"] != ExportStatus.COMPLETED:
        status = current["status"]
        return ValidationError(
            {"status": f"Only a completed export can be downloaded; this one is {status}."}
        )
    return ValidationError(
        {"expires_at": f"The export expired at {current['expires_at'].isoformat()}."}
    )


def export_download(*, tenant: TenantRef, export: Export) -> tuple[File, str, str]:
    """Open a completed, unexpired export's file and count the download.

    Returns (open binary file, download filename, content type); the caller closes
    the file (a FileResponse does). The count is one UPDATE ... RETURNING, so it
    stays exact under concurrent downloads, and rolls back if the file cannot be
    opened. An unfinished or expired export raises ValidationError naming `status`
    or `expires_at`.
    """
    tenant_id = require_tenant(tenant, export=export)
    with tenant_context(tenant_id):
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE exports SET download_count = download_count + 1 "
                "WHERE id = %s AND tenant_id = %s AND status = %s AND expires_at > now() "
                "RETURNING download_count, storage_key, format, manifest ->> 'project_name', "
                "created_at",
                [export.pk, tenant_id, ExportStatus.COMPLETED],
            )
            row = cursor.fetchone()
        if row is None:
            raise _download_refusal(export)
        export.download_count, storage_key, export_format, project_name, created_at = row
        handle = _storage().open(storage_key, "rb")
    logger.info(
        "export downloaded",
        extra={"export_id": str(export.pk), "download_count": export.download_count},
    )
    extension = builders.EXTENSIONS[ExportFormat(export_format)]
    filename = f"{slugify(project_name or '') or 'project'}-{created_at:%Y%m%d-%H%M%S}.{extension}"
    return handle, filename, builders.CONTENT_TYPES[ExportFormat(export_format)]


@dataclasses.dataclass(frozen=True)
class PurgeSummary(JobSummary):
    """What a purge did (or, in a dry run, would do)."""

    expired: int = 0
    # Builds left pending or running past EXPORT_BUILD_LEASE_SECONDS, marked failed.
    abandoned_failed: int = 0
    files_deleted: int = 0
    files_missing: int = 0
    files_kept: int = 0  # still referenced by an export that is not expired
    orphans_deleted: int = 0  # folders of exports that no longer exist
    orphan_files_deleted: int = 0
    orphans_kept: int = 0  # orphaned folders changed within ORPHAN_FILE_GRACE_SECONDS

    def report(self) -> list[str]:
        expire, fail, delete, sweep = (
            ("Would expire", "would fail", "would delete", "Would sweep")
            if self.dry_run
            else ("Expired", "failed", "deleted", "Swept")
        )
        return [
            f"{expire} {self.expired} export(s); {fail} {self.abandoned_failed} abandoned "
            f"build(s) (pending or running past EXPORT_BUILD_LEASE_SECONDS); {delete} "
            f"{self.files_deleted} file(s), {self.files_missing} already missing, "
            f"{self.files_kept} kept (still used by a live export).",
            f"{sweep} {self.orphans_deleted} orphaned folder(s) ({self.orphan_files_deleted} "
            f"file(s)) of exports that no longer exist; {self.orphans_kept} kept (changed "
            "within ORPHAN_FILE_GRACE_SECONDS).",
        ]


PURGE_BATCH_SIZE = 1000  # ids per query, well under PostgreSQL's parameter limit
ABANDONED_BUILD_MESSAGE = (
    "The build did not finish: the export stayed {status} longer than "
    "EXPORT_BUILD_LEASE_SECONDS ({seconds} s) after its last change, as when the process "
    "building it dies. Create the export again."
)


def _due(now: datetime) -> Q:
    """The exports the purge expires at `now`: completed or unfinished, past expires_at.

    One arm per partial index (exports_completed_expiry_idx, exports_unfinished_expiry_idx):
    each arm's status test implies its index's predicate, so the planner can read just the
    due rows of both (a BitmapOr) however many exports expired before. A single
    `status IN (...)` test implies neither predicate and could use neither index.
    """
    return Q(status=ExportStatus.COMPLETED, expires_at__lte=now) | Q(
        status__in=UNFINISHED_STATUSES, expires_at__lte=now
    )


def expired_exports_due(now: datetime) -> QuerySet[Export]:
    """The rows exports_purge_expired locks and expires, in the order it locks them."""
    return Export.objects.filter(_due(now)).order_by("id")


def abandoned_exports(*, now: datetime, changed_before: datetime) -> QuerySet[Export]:
    """Builds that died: pending or running, unchanged since `changed_before`, not due at
    `now`; the rows exports_purge_expired marks failed, in the order it locks them."""
    return Export.objects.filter(
        status__in=UNFINISHED_STATUSES, updated_at__lte=changed_before, expires_at__gt=now
    ).order_by("id")


def _fail_abandoned(rows: list[tuple], lease: timedelta) -> None:
    """Mark builds that died pending or running failed, with the reason, keeping no file."""
    for status in UNFINISHED_STATUSES:
        update_by_tenant(
            Export.objects.filter(status=status),
            [(tenant_id, pk) for tenant_id, pk, _key, row_status in rows if row_status == status],
            batch_size=PURGE_BATCH_SIZE,
            status=ExportStatus.FAILED,
            error_message=ABANDONED_BUILD_MESSAGE.format(
                status=status, seconds=int(lease.total_seconds())
            ),
            storage_key="",
            manifest={},
            sha256="",
            size_bytes=0,
            completed_at=None,
        )


def _rows(queryset: QuerySet[Export], fields: tuple[str, ...], *, lock: bool) -> list[tuple]:
    """`(tenant_id, *fields)` of the rows; with `lock`, locked and skipping others' rows."""
    if lock:
        return lock_by_tenant(queryset, *fields, skip_locked=True)
    return list(queryset.values_list("tenant_id", *fields))


def exports_purge_expired(*, now: datetime | None = None, dry_run: bool = False) -> PurgeSummary:
    """Mark every export past its expiry expired and delete its file, across all tenants;
    fail the builds that died.

    A system job (core.jobs): runs in `system_context`, so call it outside any
    transaction. An export still pending or running EXPORT_BUILD_LEASE_SECONDS after its
    last change (its build's process died: a live build changes it within seconds) and
    not yet due is marked failed, with the reason in error_message, and its file, if the
    build wrote one, is deleted.
    Idempotent (expired rows are not selected again). A file is kept while any other
    export that is not expired points at it; a file already gone is counted as
    missing and its row is still expired. Files are deleted before the rows commit:
    if the commit fails, the next run finds the rows again and the files missing.

    Then it sweeps orphans: folders exports/<tenant_id>/<export_id>/ whose export row
    no longer exists, unless something in them changed within ORPHAN_FILE_GRACE_SECONDS
    of `now` (a build whose transaction has not committed yet). A dry run deletes
    nothing. A `now` so far from today that the lease or the grace reaches outside the
    dates Python holds is refused with a ValidationError naming `now`.
    Raises ImproperlyConfigured, changing nothing, where the bypass does not admit the
    owner role's connection, since every export would then look gone.
    """
    now = now or timezone.now()
    lease = job_duration("EXPORT_BUILD_LEASE_SECONDS")
    abandoned_before = job_cutoff(now, lease, field="now")
    orphans_before = job_cutoff(now, job_duration("ORPHAN_FILE_GRACE_SECONDS"), field="now")
    storage = _storage()
    deleted = missing = 0
    with system_context("purge_exports"):
        require_sees_every_row(Export._meta.db_table, job="purge_exports")
        due = expired_exports_due(now)
        # (tenant_id, id, storage_key); locked tenant by tenant (core.db.tenant_rows),
        # skipping others' rows.
        rows = _rows(due, ("id", "storage_key"), lock=not dry_run)
        # Builds that died: unfinished, unchanged for the lease, not due yet (the due
        # ones are expired above). Through exports_unfinished_expiry_idx (few rows).
        stale = abandoned_exports(now=now, changed_before=abandoned_before)
        abandoned = _rows(stale, ("id", "storage_key", "status"), lock=not dry_run)
        abandoned_ids = [pk for _tenant, pk, _key, _status in abandoned]
        # Keys a live export (neither expired nor due nor abandoned) also points at: only
        # a copied row can share a key, but a live export's file must never go.
        gone = due.exclude(storage_key="").order_by().values("storage_key")
        live_keys = set(
            Export.objects.exclude(status=ExportStatus.EXPIRED)
            .exclude(_due(now))
            .exclude(pk__in=abandoned_ids)
            .filter(
                Q(storage_key__in=gone)
                | Q(storage_key__in=[key for _tenant, _pk, key, _status in abandoned if key])
            )
            .values_list("storage_key", flat=True)
        )
        if not dry_run:
            update_by_tenant(
                Export.objects.all(),
                [(tenant_id, pk) for tenant_id, pk, _key in rows],
                batch_size=PURGE_BATCH_SIZE,
                status=ExportStatus.EXPIRED,
            )
            _fail_abandoned(abandoned, lease)
        keys = {key for _t, _pk, key in rows if key} | {
            key for _t, _pk, key, _status in abandoned if key
        }
        for key in sorted(keys - live_keys):
            if not storage.exists(key):
                missing += 1
                continue
            if not dry_run:
                delete_file(storage, key)
            deleted += 1
        # Rows vanish without their files through cascades (project purge, tenant or
        # admin delete) and through a caller's rollback after export_create wrote the file.
        orphans = sweep_orphan_folders(
            storage=storage,
            root=FOLDER_ROOT,
            rows=Export.objects.all(),
            cutoff=orphans_before,
            dry_run=dry_run,
            job="purge_exports",
        )
    summary = PurgeSummary(
        dry_run=dry_run,
        expired=len(rows),
        abandoned_failed=len(abandoned),
        files_deleted=deleted,
        files_missing=missing,
        files_kept=len(keys & live_keys),
        orphans_deleted=len(orphans.orphan_folders),
        orphan_files_deleted=orphans.files_deleted,
        orphans_kept=orphans.recent_folders_kept,
    )
    logger.info("exports purged", extra=dataclasses.asdict(summary))
    return summary


def export_files_unshared(*, tenant_id: uuid.UUID, keys: list[str], kept: Q) -> list[str]:
    """Of `keys` (the files of exports being removed), those that exist in the exports
    storage and that no export of the tenant matching `kept` (the ones that stay) points
    at: only a copied row can share a key, and a file a kept export needs must stay.
    Read in the caller's context (the retention job's bypass)."""
    shared = set(
        Export.objects.filter(kept, tenant_id=tenant_id, storage_key__in=keys).values_list(
            "storage_key", flat=True
        )
    )
    storage = _storage()
    return sorted(key for key in set(keys) - shared if key and storage.exists(key))


def export_files_delete(keys: list[str]) -> None:
    """Delete these export files and their emptied folders; the caller has committed the
    removal of their rows (a rollback then leaves no row without its file)."""
    storage = _storage()
    for key in keys:
        delete_file(storage, key)
