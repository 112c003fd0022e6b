"""Tenant context: which tenants the current transaction may see (docs/security.md).

PostgreSQL's row-level security policies read the transaction-scoped setting
`app.tenant_ids`; this module is the one place Python sets it.

    with tenant_context(tenant):          # or several: tenant_context(a, b)
        Project.objects.create(...)

    with tenant_context(tenant, user=alice):   # and whose: restricted rows follow her
        ...                                    # (her memberships read once, see below)

    @tenant_context(tenant_id)            # also a decorator
    def job(): ...

    with system_context("purge expired exports"):   # explicit, logged bypass
        ...

The same statement also says who acts, for the audit trail's triggers (core.db.audit):
`app.actor` ('admin' for requests, `job:<reason>` for system jobs; unset means
'service') and `app.request_id`, beside `app.user_id`.

What it costs: a context that begins the transaction sends one statement (its
set_config) between BEGIN and COMMIT, and nothing on leaving, since the settings end
with the transaction. Nested in a transaction it reads the settings of before in that
same statement and restores them with one more on leaving.

On a Citus coordinator the settings must reach the workers, whose row-level security
reads them too: there they are set with SET LOCAL, propagated (see _propagate), still
one round trip; nested, the read of before is one more.

With a user, the context also sets `app.full_access_tenant_ids`: the context's tenants
where that user sees every restricted row (owner or admin there, or an active
superuser). The policies read it as they read the tenants, from the transaction, never
from a table (docs/security.md, "Restricted rows"): tenant_context(..., user=) reads
the user's memberships once for it, a request reads them with its tenants.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from psycopg import sql

from core.db.backend.base import CITUS_PRESENT_SQL
from core.db.connections import begins_transaction, owner_connection
from core.db.errors import write_refusal
from core.db.replicas import replica_scope

if TYPE_CHECKING:
    from django.db.backends.utils import CursorWrapper

    from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

TENANT_IDS_SETTING = "app.tenant_ids"
USER_ID_SETTING = "app.user_id"
# The context's tenants where its user sees every restricted row.
FULL_ACCESS_SETTING = "app.full_access_tenant_ids"
BYPASS_SETTING = "app.rls_bypass"
# Who acts, read by the audit trail's triggers only: set with the scope, never restored
# (a nested context changes the tenants, not who acts).
ACTOR_SETTING = "app.actor"
REQUEST_ID_SETTING = "app.request_id"
ADMIN_ACTOR = "admin"
JOB_ACTOR_PREFIX = "job:"
# Set to LOCKED by the request middleware: nested contexts may then only narrow.
SCOPE_SETTING = "app.tenant_scope"
LOCKED = "locked"


def _as_uuid(obj: object, field: str = "tenant") -> uuid.UUID:
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


# Restored on leaving a nested scope; the bypass is only ever turned on by system_context,
# which always starts its own transaction, so it never needs restoring.
_SCOPE_SETTINGS = (TENANT_IDS_SETTING, SCOPE_SETTING, USER_ID_SETTING, FULL_ACCESS_SETTING)
_READ_WHEN_NESTED = (*_SCOPE_SETTINGS, BYPASS_SETTING)


def _apply(
    cursor: CursorWrapper, values: dict[str, str], read: tuple[str, ...] = ()
) -> dict[str, str]:
    """Read the settings `read` (before), then set `values`, for this transaction only.
    Returns what was read.

    On plain PostgreSQL, one round trip: PostgreSQL evaluates the select list left to
    right, so the reads see the values of before the set_config calls of the same
    statement. The first statement on a connection also asks whether the database is a
    Citus coordinator (core.db.backend), which the connection then remembers.
    """
    connection = cursor.db
    citus = connection.citus
    if citus:
        previous = _read(cursor, read) if read else {}
        _propagate(values, connection)
        return previous
    reads = ["current_setting(%s, true)"] * len(read)
    columns = reads + ["set_config(%s, %s, true)"] * len(values)
    if citus is None:
        columns.append(CITUS_PRESENT_SQL)
    params = [*read, *(part for pair in values.items() for part in pair)]
    cursor.execute("SELECT " + ", ".join(columns), params)
    row = cursor.fetchone()
    if citus is None:
        connection.remember_citus(bool(row[-1]))
        if row[-1]:
            # set_config reached the coordinator only: once per connection, set again.
            _propagate(values, connection)
    return {name: value or "" for name, value in zip(read, row, strict=False)}


def _read(cursor: CursorWrapper, names: tuple[str, ...]) -> dict[str, str]:
    cursor.execute("SELECT " + ", ".join(["current_setting(%s, true)"] * len(names)), names)
    return {name: value or "" for name, value in zip(names, cursor.fetchone(), strict=True)}


def _propagate(values: dict[str, str], connection: Any) -> None:
    """Set `values` for this transaction on the coordinator and every worker of Citus.

    set_config(..., true) stays on the node that runs it, so the workers' row-level
    security would see no tenant; SET LOCAL with citus.propagate_set_commands = 'local'
    goes to the workers already in the transaction and to every one it reaches later,
    and ends with the transaction (or with the savepoint rolled back to), so it holds
    behind PgBouncer's transaction pooling too. One round trip: several statements, the
    values composed as literals (SET takes no parameters), bound on the client.
    """
    statements: list[sql.Composable] = [
        sql.SQL("SET LOCAL citus.propagate_set_commands TO 'local'")
    ]
    statements += [
        sql.SQL("SET LOCAL {} TO {}").format(sql.Identifier(*name.split(".")), sql.Literal(value))
        for name, value in values.items()
    ]
    text = sql.SQL("; ").join(statements).as_string(connection.connection)
    with connection.client_side_binding(), connection.cursor() as cursor:
        cursor.execute(text)


def current_tenant_ids(using: str = DEFAULT_DB_ALIAS) -> list[uuid.UUID]:
    """The tenants the current transaction is scoped to (empty outside any context)."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [TENANT_IDS_SETTING])
        value = cursor.fetchone()[0] or ""
    return [uuid.UUID(part) for part in value.split(",") if part]


@dataclass(frozen=True)
class TenantAccess:
    """A user's tenants, and those among them where the user sees every restricted row."""

    tenant_ids: list[uuid.UUID]
    full_access_tenant_ids: list[uuid.UUID]


def full_access_tenant_ids(
    user: User | uuid.UUID, tenant_ids: list[uuid.UUID], using: str = DEFAULT_DB_ALIAS
) -> list[uuid.UUID]:
    """Those of `tenant_ids` where `user` is an owner or admin; all of them for an active
    superuser. Reads the user's memberships (one query; one more for a user given by id).
    """
    # Imported here: this module is imported before the apps' models are ready.
    from tenancy.models import FULL_ACCESS_ROLES, Membership, User

    if not tenant_ids:
        return []
    if isinstance(user, User):
        superuser = user.is_superuser and user.is_active
    else:
        superuser = (
            User.objects.using(using).filter(pk=user, is_superuser=True, is_active=True).exists()
        )
    if superuser:
        return sorted(tenant_ids)
    return sorted(
        Membership.objects.using(using)
        .filter(
            user_id=_as_uuid(user, "user"), tenant_id__in=tenant_ids, role__in=FULL_ACCESS_ROLES
        )
        .values_list("tenant_id", flat=True)
    )


@contextmanager
def _scoped_settings(
    values: dict[str, str],
    using: str,
    *,
    then: Callable[[], dict[str, str]] | None = None,
) -> Iterator[dict[str, str]]:
    """A transaction (or savepoint) with `values` set; yields the settings of before.

    Where the block starts the transaction, it ends it too, and the settings end with it
    (set_config(..., true)): one statement, nothing read (an empty dict is yielded: a
    new transaction has no scope of its own yet), nothing restored. Nested in a
    transaction, the settings of before are read in that same statement and set again
    on leaving the block, unless it rolls back to its savepoint, which restores them.
    `then()`, called once `values` are set, gives settings that need them to be read
    (a user's full-access tenants); they are set with one more statement.
    """
    connection = connections[using]
    owns_transaction = begins_transaction(using)
    try:
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:
                read = () if owns_transaction else _READ_WHEN_NESTED
                previous = _apply(cursor, values, read=read)
                more = then() if then is not None else {}
                if more:
                    _apply(cursor, more)
                    values = {**values, **more}
            with replica_scope(values, using=using):
                yield previous
            if owns_transaction or connection.needs_rollback:
                return
            with connection.cursor() as cursor:
                _apply(cursor, {name: previous[name] for name in _SCOPE_SETTINGS})
    except DatabaseError as error:
        # Every service writes in a tenant context: the one place where a trigger's
        # refusal (a new row for a deleted project) becomes the ValidationError naming
        # the field, once the block's savepoint has undone the refused write, so the
        # caller's transaction stays usable.
        refusal = write_refusal(error)
        if refusal is None:
            raise
        raise refusal from error


def _refuse_widening(previous: dict[str, str], ids: list[uuid.UUID]) -> None:
    """PermissionDenied if a locked scope of before does not admit every one of `ids`."""
    if previous.get(SCOPE_SETTING) != LOCKED or previous.get(BYPASS_SETTING) == "on":
        return
    allowed = set(previous[TENANT_IDS_SETTING].split(","))
    outside = sorted(str(pk) for pk in ids if str(pk) not in allowed)
    if outside:
        raise PermissionDenied(
            f"tenant_context cannot widen the request's scope to {', '.join(outside)}"
        )


def _refuse_other_user(previous: dict[str, str], user_id: str | None) -> None:
    """PermissionDenied if a locked scope of before belongs to another user than `user_id`:
    a request's services act as its user, never as someone who may see more."""
    if previous.get(SCOPE_SETTING) != LOCKED or previous.get(BYPASS_SETTING) == "on":
        return
    if user_id is not None and previous.get(USER_ID_SETTING) not in ("", user_id):
        raise PermissionDenied("tenant_context cannot change the request's user")


@dataclass(frozen=True)
class _Job:
    actor: str
    tenant_ids: frozenset[uuid.UUID]


# The background job running in this thread (tenancy.jobs.tenant_task), if any.
_current_job: ContextVar[_Job | None] = ContextVar("current_job", default=None)


@contextmanager
def job_scope(name: str, *tenants: TenantRef) -> Iterator[list[uuid.UUID]]:
    """The block is the job `name` of `tenants` (a tenant's job: one): its tenant contexts
    are limited to them and see them whole.

    Every tenant_context opened inside says who acts, `job:<name>`, for the audit trail
    (app.actor is transaction-scoped, so each transaction of the job carries it), and
    one for another tenant raises PermissionDenied, as inside a request's locked scope:
    a job's arguments cannot take it to a tenant it was not queued for. Without a user
    of its own the job sees its tenants' restricted rows too, as their owners do: the
    work was queued by someone allowed to ask for it (an upload into a restricted
    project is ingested like any other), and a job has no member's view to keep.
    """
    if not name:
        raise ValueError("job_scope needs the job's name; it is audited")
    if not tenants:
        raise ValueError("job_scope needs the job's tenant")
    ids = normalize_tenant_ids(tenants)
    token = _current_job.set(_Job(JOB_ACTOR_PREFIX + name, frozenset(ids)))
    try:
        yield ids
    finally:
        _current_job.reset(token)


def _job_values(ids: list[uuid.UUID]) -> dict[str, str]:
    """The running job's actor and full access; PermissionDenied for other tenants."""
    job = _current_job.get()
    if job is None:
        return {}
    outside = sorted(str(pk) for pk in ids if pk not in job.tenant_ids)
    if outside:
        raise PermissionDenied(
            f"the job {job.actor} runs for tenants {', '.join(sorted(map(str, job.tenant_ids)))}"
            f", not {', '.join(outside)}"
        )
    # A tenant_context with a user replaces it with that user's (tenant_scope).
    return {ACTOR_SETTING: job.actor, FULL_ACCESS_SETTING: _ids_text(ids)}


def _ids_text(ids: list[uuid.UUID]) -> str:
    return ",".join(map(str, ids))


@contextmanager
def tenant_scope(
    tenant_ids: Iterable,
    *,
    user_id: User | uuid.UUID | None = None,
    locked: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> Iterator[list[uuid.UUID]]:
    """Run the block in a transaction scoped to `tenant_ids` (possibly none).

    `locked=True` is what the request middleware uses (through request_scope): inside a
    locked scope a nested tenant_context may only narrow it, so a service called with a
    foreign tenant id raises PermissionDenied instead of widening what the request sees
    (only system_context's bypass lifts that rule). `user_id` also lets the block read
    that user's own memberships, and see the restricted rows that user may see (its
    full-access tenants read from the memberships once the settings are in place). The
    outer settings are restored when the block ends.
    """
    ids = normalize_tenant_ids(tenant_ids)
    values = {TENANT_IDS_SETTING: _ids_text(ids), **_job_values(ids)}
    if locked:
        values[SCOPE_SETTING] = LOCKED
    then = None
    if user_id is not None:
        values[USER_ID_SETTING] = str(_as_uuid(user_id, "user"))
        # Not the outer context's: its user, or its tenants, may be others.
        values[FULL_ACCESS_SETTING] = ""
        user = user_id

        def then() -> dict[str, str]:
            full = full_access_tenant_ids(user, ids, using)
            return {FULL_ACCESS_SETTING: _ids_text(full)} if full else {}

    with _scoped_settings(values, using, then=then) as previous:
        # Checked after the set, which shares the read's round trip: a refusal leaves
        # the block, whose savepoint rollback undoes the set.
        _refuse_widening(previous, ids)
        _refuse_other_user(previous, values.get(USER_ID_SETTING))
        yield ids


@contextmanager
def request_scope(
    user: User,
    access_of: Callable[[User], TenantAccess],
    using: str = DEFAULT_DB_ALIAS,
    *,
    actor: str = ADMIN_ACTOR,
    request_id: str = "",
) -> Iterator[list[uuid.UUID]]:
    """The transaction of one authenticated request: `user`'s tenants, locked.

    `access_of(user)` (tenancy.selectors.tenant_access_for_user) reads them first, with
    the user's full-access tenants, while the transaction may read only the user's own
    memberships (app.user_id); both are then set and the tenants locked (see
    tenant_scope) in the same transaction, so the request costs three statements before
    its view runs and none after. The first also sets who acts (`actor`, `request_id`)
    for the audit trail.
    """
    first = {
        USER_ID_SETTING: str(_as_uuid(user, "user")),
        ACTOR_SETTING: actor,
        REQUEST_ID_SETTING: request_id,
    }
    with _scoped_settings(first, using) as previous:
        access = access_of(user)
        ids = normalize_tenant_ids(access.tenant_ids)
        full = normalize_tenant_ids(set(access.full_access_tenant_ids) & set(ids))
        _refuse_widening(previous, ids)
        with connections[using].cursor() as cursor:
            tenants = {
                TENANT_IDS_SETTING: _ids_text(ids),
                SCOPE_SETTING: LOCKED,
                FULL_ACCESS_SETTING: _ids_text(full),
            }
            _apply(cursor, tenants)
        with replica_scope(tenants, using=using):
            yield ids


@contextmanager
def tenant_context(
    *tenants: TenantRef, user: User | uuid.UUID | None = None, using: str = DEFAULT_DB_ALIAS
) -> Iterator[list[uuid.UUID]]:
    """Run the block in a transaction that sees only the given tenants' rows.

    Takes Tenant instances or ids, one or several; also a decorator. Nested, it
    replaces the outer tenants for the block; inside a request it may only narrow
    them (see tenant_scope).

    `user` (a User or an id) is whose the transaction is: restricted projects and
    documents are then visible as that user may see them (docs/security.md). Without
    one the block keeps the user of the scope it is nested in (a request's), and
    outside any sees unrestricted rows only.
    """
    if not tenants:
        raise ValueError("tenant_context needs at least one tenant")
    user_id = None if user is None else _as_uuid(user, "user")
    with tenant_scope(tenants, user_id=user_id, using=using) as ids:
        yield ids


@contextmanager
def system_context(
    reason: str, using: str = DEFAULT_DB_ALIAS, *, level: int = logging.WARNING
) -> Iterator[None]:
    """The explicit bypass for system jobs (seed, purges): every tenant's rows.

    Connects as the owner role (the only role the `system_bypass` policies admit) and
    turns the bypass on for one transaction (its writes are audited as `job:<reason>`),
    with a line in the log naming the reason: a
    warning, unless the caller says the bypass is its ordinary work and tells its user
    itself (the seed: INFO, and a note in its output). Process-wide like
    core.db.connections.owner_connection: for commands, not requests.
    """
    if not reason:
        raise ValueError("system_context needs a reason; it is logged")
    logger.log(level, "row-level security bypass: %s", reason, extra={"rls_bypass_reason": reason})
    # owner_connection refuses to run inside a transaction: this block always starts its
    # own, so the bypass ends with it.
    values = {BYPASS_SETTING: "on", ACTOR_SETTING: JOB_ACTOR_PREFIX + reason}
    with owner_connection(using), _scoped_settings(values, using):
        yield


def require_tenant(tenant: TenantRef | None, **objects: Any) -> uuid.UUID:
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
