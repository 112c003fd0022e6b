"""The exports app's job on the worker (tenancy.jobs): building an export.

export_create(queue=True) (the admin's action) queues `exports.build` in the transaction
that creates the export; the worker builds it with the same code a synchronous caller
runs, to completed or to failed with its reason (a project without versions), which the
job does not retry: a build fails for reasons that do not pass.
"""

from __future__ import annotations

import uuid

from exports.services import BUILD_TASK, export_build
from tenancy.jobs import JobAttempt, tenant_task


# Not atomic: each step of the build commits, so the export shows running.
@tenant_task(BUILD_TASK, retry=False, atomic=False)
def build(tenant_id: uuid.UUID, attempt: JobAttempt, *, export_id: str) -> str:
    """Build the export; its final status is the job's result."""
    export = export_build(tenant=tenant_id, export_id=uuid.UUID(export_id))
    return "gone" if export is None else str(export.status)
