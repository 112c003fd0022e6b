"""Access below the tenant: restrict and unrestrict projects and knowledge documents,
grant and revoke a user's access to them (docs/security.md, "Restricted rows").

Only the tenant's owners and admins may do any of it (PermissionDenied otherwise).
Each service runs in the tenant's context as `by`, so the row-level security policies
check the same again: the access tables take writes from owners and admins only. A
grant goes to a member of the tenant only (ValidationError naming `user`); rows of
another tenant are refused naming their field. Nothing is written on a refusal.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet

from documents.models import Document, DocumentAccess, Project, ProjectAccess
from tenancy.context import require_tenant, tenant_context
from tenancy.models import FULL_ACCESS_ROLES, Membership, TenantRef, User

MANAGING_ROLES = FULL_ACCESS_ROLES
Grant = TypeVar("Grant", ProjectAccess, DocumentAccess)


def _require_manager(tenant_id: uuid.UUID, by: User | None) -> None:
    """PermissionDenied unless `by` is an owner or admin of the tenant (in its context),
    or an active superuser, whom the policies let see every row too."""
    if by is not None and by.is_active and by.is_superuser:
        return
    if (
        by is None
        or not Membership.objects.filter(
            tenant_id=tenant_id, user_id=by.pk, role__in=MANAGING_ROLES
        ).exists()
    ):
        raise PermissionDenied("Only the tenant's owners and admins may change who has access.")


def _require_member(tenant_id: uuid.UUID, user: User) -> None:
    if not isinstance(user, User):
        raise ValidationError({"user": f"{user!r} is not a user."})
    if not Membership.objects.filter(tenant_id=tenant_id, user_id=user.pk).exists():
        raise ValidationError({"user": f"{user.email} is not a member of this tenant."})


def _set_restricted(
    rows: QuerySet, field: str, *, tenant: TenantRef, row: Project | Document, by: User, value: bool
) -> None:
    """Set `restricted` of `row` (one of `rows`, a manager's every row of its model)."""
    tenant_id = require_tenant(tenant, **{field: row})
    with tenant_context(tenant_id, user=by):
        _require_manager(tenant_id, by)
        # Filtered on tenant_id, as every UPDATE (a Citus cluster routes it by tenant).
        if not rows.filter(tenant_id=tenant_id, pk=row.pk).update(restricted=value):
            raise ValidationError({field: f"No such {field} in this tenant."})
    row.restricted = value


def project_restrict(*, tenant: TenantRef, project: Project, by: User) -> Project:
    """Make the project, and everything that hangs off it, visible to the tenant's owners
    and admins and to the users granted it only."""
    # Soft-deleted ones too: their rows stay until the purge.
    _set_restricted(
        Project.all_objects.all(), "project", tenant=tenant, row=project, by=by, value=True
    )
    return project


def project_unrestrict(*, tenant: TenantRef, project: Project, by: User) -> Project:
    """Make the project visible to every member again; its grants stay for next time."""
    _set_restricted(
        Project.all_objects.all(), "project", tenant=tenant, row=project, by=by, value=False
    )
    return project


def document_restrict(*, tenant: TenantRef, document: Document, by: User) -> Document:
    """Make the knowledge document and its chunks visible to the tenant's owners and
    admins and to the users granted it only."""
    _set_restricted(
        Document.objects.all(), "document", tenant=tenant, row=document, by=by, value=True
    )
    return document


def document_unrestrict(*, tenant: TenantRef, document: Document, by: User) -> Document:
    _set_restricted(
        Document.objects.all(), "document", tenant=tenant, row=document, by=by, value=False
    )
    return document


def _grant(
    grants: type[Grant],
    rows: QuerySet,
    field: str,
    *,
    tenant: TenantRef,
    row: Project | Document,
    user: User,
    by: User,
) -> Grant:
    """Grant `user` the `row` (one of `rows`) in `grants`; idempotent."""
    tenant_id = require_tenant(tenant, **{field: row})
    with tenant_context(tenant_id, user=by):
        _require_manager(tenant_id, by)
        _require_member(tenant_id, user)
        if not rows.filter(tenant_id=tenant_id, pk=row.pk).exists():
            raise ValidationError({field: f"No such {field} in this tenant."})
        with transaction.atomic():
            grant, _ = grants.objects.get_or_create(
                tenant_id=tenant_id,
                **{f"{field}_id": row.pk},
                user=user,
                defaults={"created_by": by},
            )
    return grant


def _revoke(
    grants: type[ProjectAccess | DocumentAccess],
    field: str,
    *,
    tenant: TenantRef,
    row: Project | Document,
    user: User,
    by: User,
) -> bool:
    tenant_id = require_tenant(tenant, **{field: row})
    with tenant_context(tenant_id, user=by):
        _require_manager(tenant_id, by)
        deleted, _ = grants.objects.filter(
            tenant_id=tenant_id, **{f"{field}_id": row.pk}, user_id=user.pk
        ).delete()
    return deleted > 0


def project_access_grant(
    *, tenant: TenantRef, project: Project, user: User, by: User
) -> ProjectAccess:
    """Let `user`, a member of the tenant, see `project` while it is restricted.

    Idempotent: a second grant returns the first one.
    """
    rows = Project.all_objects.all()
    return _grant(ProjectAccess, rows, "project", tenant=tenant, row=project, user=user, by=by)


def project_access_revoke(*, tenant: TenantRef, project: Project, user: User, by: User) -> bool:
    """Take back `user`'s access to `project`; True if there was a grant. The next
    statement of every transaction already goes without it."""
    return _revoke(ProjectAccess, "project", tenant=tenant, row=project, user=user, by=by)


def document_access_grant(
    *, tenant: TenantRef, document: Document, user: User, by: User
) -> DocumentAccess:
    """Let `user`, a member of the tenant, see `document` (and its chunks) while it is
    restricted. Idempotent: a second grant returns the first one."""
    rows = Document.objects.all()
    return _grant(DocumentAccess, rows, "document", tenant=tenant, row=document, user=user, by=by)


def document_access_revoke(*, tenant: TenantRef, document: Document, user: User, by: User) -> bool:
    """Take back `user`'s access to `document`; True if there was a grant."""
    return _revoke(DocumentAccess, "document", tenant=tenant, row=document, user=user, by=by)
