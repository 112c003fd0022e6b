"""Tenant context: which tenants the current transaction may see (DESIGN.md section 7).

PostgreSQL's row-level security policies read the transaction-scoped setting
`app.tenant_ids`; this module is the one place Python sets it.

    with tenant_context(tenant):          # or several: tenant_context(a, b)
        Project.objects.create(...)

    @tenant_context(tenant_id)            # also a decorator
    def job(): ...

    with system_context("purge expired exports"):   # explicit, logged bypass
        ...
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from core.db import owner_connection

logger = logging.getLogger(__name__)

TENANT_IDS_SETTING = "app.tenant_ids"
USER_ID_SETTING = "app.user_id"
BYPASS_SETTING = "app.rls_bypass"


def _as_uuid(tenant) -> uuid.UUID:
    value = getattr(tenant, "pk", tenant)
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def normalize_tenant_ids(tenants: Iterable) -> list[uuid.UUID]:
    return sorted({_as_uuid(tenant) for tenant in tenants})


def _set_local(cursor, name: str, value: str) -> str:
    """Set a transaction-scoped setting and return its previous value."""
    cursor.execute(
        "SELECT current_setting(%s, true), set_config(%s, %s, true)", [name, name, value]
    )
    return cursor.fetchone()[0] or ""


def current_tenant_ids(using: str = DEFAULT_DB_ALIAS) -> list[uuid.UUID]:
    """The tenants the current transaction is scoped to (empty outside any context)."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [TENANT_IDS_SETTING])
        value = cursor.fetchone()[0] or ""
    return [uuid.UUID(part) for part in value.split(",") if part]


@contextmanager
def tenant_context(*tenants, using: str = DEFAULT_DB_ALIAS, user=None) -> Iterator[list[uuid.UUID]]:
    """Run the block in a transaction that sees only the given tenants' rows.

    Takes Tenant instances or ids. Nested contexts replace the outer tenants for the
    inner block and restore them afterwards. `user` also scopes `app.user_id`, which
    lets a user read their own memberships.
    """
    tenant_ids = normalize_tenant_ids(tenants)
    if not tenant_ids:
        raise ValueError("tenant_context needs at least one tenant")
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            previous = _set_local(cursor, TENANT_IDS_SETTING, ",".join(map(str, tenant_ids)))
            previous_user = (
                _set_local(cursor, USER_ID_SETTING, str(_as_uuid(user))) if user else None
            )
        yield tenant_ids
        with connections[using].cursor() as cursor:
            _set_local(cursor, TENANT_IDS_SETTING, previous)
            if previous_user is not None:
                _set_local(cursor, USER_ID_SETTING, previous_user)


@contextmanager
def user_context(user, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """A transaction that may read `user`'s own memberships, and nothing else tenant-owned."""
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            previous = _set_local(cursor, USER_ID_SETTING, str(_as_uuid(user)))
        yield
        with connections[using].cursor() as cursor:
            _set_local(cursor, USER_ID_SETTING, previous)


@contextmanager
def system_context(reason: str, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """The explicit bypass for system jobs (seed, purges): every tenant's rows.

    Connects as the owner role (the only role the `system_bypass` policies admit) and
    turns the bypass on for one transaction, with a warning in the log naming the
    reason. Process-wide like core.db.owner_connection: for commands, not requests.
    """
    if not reason:
        raise ValueError("system_context needs a reason; it is logged")
    logger.warning("row-level security bypass: %s", reason, extra={"rls_bypass_reason": reason})
    with owner_connection(using), transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            _set_local(cursor, BYPASS_SETTING, "on")
        yield


def require_tenant(tenant, **objects) -> uuid.UUID:
    """The tenant's id, after checking every given row belongs to it.

    Services call this first, so that a row of another tenant is refused with a
    ValidationError naming the field, before the database's own checks.
    """
    from django.core.exceptions import ValidationError

    if tenant is None:
        raise ValidationError({"tenant": "A tenant is required."})
    tenant_id = _as_uuid(tenant)
    wrong = {
        field: f"{field} belongs to another tenant."
        for field, obj in objects.items()
        if obj is not None and obj.tenant_id != tenant_id
    }
    if wrong:
        raise ValidationError(wrong)
    return tenant_id
