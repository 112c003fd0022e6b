"""The sweep of upload folders that no document row points at."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.utils import timezone

from core.files import OrphanSweep, sweep_orphan_folders
from core.jobs import job_cutoff, job_duration
from documents.models import (
    Document,
)
from documents.services.uploads import DOCUMENTS_FOLDER
from tenancy.context import system_context

logger = logging.getLogger(__name__)


def documents_sweep_orphan_files(
    *,
    dry_run: bool = False,
    grace: timedelta | None = None,
    now: datetime | None = None,
) -> OrphanSweep:
    """Delete upload files whose document row is gone, in every tenant.

    Walks documents/<tenant_id>/<document_id>/ in the default storage and deletes the
    files of each folder without a matching document row (rows deleted by the admin,
    by cascades, or never committed because the caller's transaction rolled back).
    A folder anything in which is younger than `grace` (settings.ORPHAN_FILE_GRACE_SECONDS
    by default) is kept, so an upload whose transaction has not committed yet (
    document_create stores the file before its transaction commits the row) is never
    swept. A system job, in system_context:
    call it outside any transaction. Idempotent. Raises ImproperlyConfigured, deleting
    nothing, where the bypass cannot see every document (no DATABASE_OWNER_URL).
    """
    if grace is None:
        grace = job_duration("ORPHAN_FILE_GRACE_SECONDS")
    cutoff = job_cutoff(now or timezone.now(), grace, field="grace")
    with system_context("documents_sweep_orphan_files: upload folders without a document"):
        summary = sweep_orphan_folders(
            storage=default_storage,
            root=DOCUMENTS_FOLDER,
            rows=Document.objects.all(),
            cutoff=cutoff,
            dry_run=dry_run,
            job="documents_sweep_orphan_files",
        )
    logger.info("orphan document files swept", extra=dataclasses.asdict(summary))
    return summary
