"""Tenant context: which tenants the current transaction may see (DESIGN.md section 7).

PostgreSQL's row-level security policies read the transaction-scoped setting
`app.tenant_ids`; this module is the one place Python sets it (core.replicas sets the
same values on a replica's transaction, for the reads it routes there).

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

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from core.db import owner_connection
from core.replicas import replica_scope

logger = logging.getLogger(__name__)

TENANT_IDS_SETTING = "app.tenant_ids"
USER_ID_SETTING = "app.user_id"
BYPASS_SETTING = "app.rls_bypass"
# Set to LOCKED by the request middleware: nested contexts may then only narrow.
SCOPE_SETTING = "app.tenant_scope"
LOCKED = "locked"


def _as_uuid(obj, field: str = "tenant") -> uuid.UUID:
    """The id of a row or an id given as such; anything else is refused naming `field`."""
    value = getattr(obj, "pk", obj)
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError({field: f"{value!r} is not a valid {field} id."}) from None


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


def _read_scope(cursor) -> tuple[str, ...]:
    """(tenant ids, scope flag, user id, bypass flag) of the current transaction."""
    names = [TENANT_IDS_SETTING, SCOPE_SETTING, USER_ID_SETTING, BYPASS_SETTING]
    cursor.execute("SELECT " + ", ".join(["current_setting(%s, true)"] * len(names)), names)
    return tuple(value or "" for value in cursor.fetchone())


@contextmanager
def tenant_scope(
    tenant_ids: Iterable,
    *,
    user_id=None,
    locked: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> Iterator[list[uuid.UUID]]:
    """Run the block in a transaction scoped to `tenant_ids` (possibly none).

    `locked=True` is what the request middleware uses: inside a locked scope a nested
    tenant_context may only narrow it, so a service called with a foreign tenant id
    raises PermissionDenied instead of widening what the request sees (only
    system_context's bypass lifts that rule). `user_id` also lets the block read that
    user's own memberships. The outer settings are restored when the block ends.
    """
    ids = normalize_tenant_ids(tenant_ids)
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            previous_ids, previous_scope, previous_user, bypass = _read_scope(cursor)
            if previous_scope == LOCKED and bypass != "on":
                allowed = set(previous_ids.split(","))
                outside = sorted(str(pk) for pk in ids if str(pk) not in allowed)
                if outside:
                    raise PermissionDenied(
                        f"tenant_context cannot widen the request's scope to {', '.join(outside)}"
                    )
            scope = {TENANT_IDS_SETTING: ",".join(map(str, ids))}
            if locked:
                scope[SCOPE_SETTING] = LOCKED
            if user_id is not None:
                scope[USER_ID_SETTING] = str(_as_uuid(user_id, "user"))
            for name, value in scope.items():
                _set_local(cursor, name, value)
        with replica_scope(scope, using=using):
            yield ids
        if connections[using].needs_rollback:
            return  # rolling back to the savepoint restores the settings by itself
        with connections[using].cursor() as cursor:
            _set_local(cursor, TENANT_IDS_SETTING, previous_ids)
            _set_local(cursor, SCOPE_SETTING, previous_scope)
            _set_local(cursor, USER_ID_SETTING, previous_user)


@contextmanager
def user_context(user, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """A transaction that may read `user`'s own memberships, and no other tenant data.

    How the request middleware learns which tenants to scope a request to.
    """
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            user_id = str(_as_uuid(user, "user"))
            previous = _set_local(cursor, USER_ID_SETTING, user_id)
        with replica_scope({USER_ID_SETTING: user_id}, using=using):
            yield
        if not connections[using].needs_rollback:
            with connections[using].cursor() as cursor:
                _set_local(cursor, USER_ID_SETTING, previous)


@contextmanager
def tenant_context(*tenants, using: str = DEFAULT_DB_ALIAS) -> Iterator[list[uuid.UUID]]:
    """Run the block in a transaction that sees only the given tenants' rows.

    Takes Tenant instances or ids, one or several; also a decorator. Nested, it
    replaces the outer tenants for the block; inside a request it may only narrow
    them (see tenant_scope).
    """
    if not tenants:
        raise ValueError("tenant_context needs at least one tenant")
    with tenant_scope(tenants, using=using) as ids:
        yield ids


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
