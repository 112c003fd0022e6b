"""Reads of exports.

Selectors that return rows run inside `tenant_context(tenant)` themselves; those that
return a QuerySet must be evaluated where a tenant context is set (a request, or the
caller's `tenant_context`), since row-level security hides everything elsewhere.
"""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from documents.models import Project
from exports.models import Export
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef


def export_list(
    *, tenant: TenantRef, project: Project | None = None, status: str | None = None
) -> QuerySet[Export]:
    """A tenant's exports, newest first; optionally one project's (exports_project_idx)."""
    exports = Export.objects.filter(tenant_id=require_tenant(tenant, project=project))
    if project is not None:
        exports = exports.filter(project=project)
    if status:
        exports = exports.filter(status=status)
    return exports.order_by("-created_at")


def export_get(*, tenant: TenantRef, export_id: uuid.UUID | str) -> Export:
    """One of the tenant's exports; raises Export.DoesNotExist for another tenant's."""
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        return Export.objects.select_related("project").get(tenant_id=tenant_id, pk=export_id)
