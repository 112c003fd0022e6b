"""Retention per tenant (docs/operations.md, "Retention"): the policies, and the job that
enforces them.

A policy says, per category, how many days a tenant keeps its rows; an empty category
takes the RETENTION_DEFAULT_DAYS setting. A row's age is its id's: every id is a UUIDv7
made when the row was, the key the monthly partitions of agent_executions split on too
(core.db.partitions), so "older than N days" is `id < uuid7_floor(now - N days)`, a range
of the primary key.

`retention_enforce` (behind `manage.py retention`) removes, for every tenant:

1. its evaluation runs, conversation messages and exports (with their files) past its
   policy, in batches;
2. the whole months of agent_executions that every tenant's policy lets go: their
   dependents are removed (or their keys cleared) in batches first, then the months'
   partitions are dropped in one short transaction (core.db.partitions);
3. the rest of its executions past its policy, in batches, with their errors, sources,
   evaluations and idempotency keys; messages, decisions and proposals keep their row
   without the execution (their keys' ON DELETE rule). An execution a change proposal
   under review comes from is kept, as the partitions job keeps its month;
4. its audit events past its policy (docs/operations.md, "Retention of audit events"),
   sealed first: the chain is cut at the longest sealed prefix made before the cutoff
   (tenancy.audit.chain_cut), whose last event's seq and hash become the chain's anchor
   (audit_chain_anchors, written before anything is removed: audit_verify starts from
   it, and the append-only trigger lets the owner delete only what is below it). Then
   the months of audit_events whose every event is below its tenant's anchor are
   dropped whole, and the rest of each prefix is deleted in batches. The global chain
   (users, tenants, shared templates) has no tenant and no policy: it is kept;
5. its search log (search_queries) past its policy: the months every tenant's policy
   lets go are dropped whole (nothing references the log), the rest deleted in batches.

Each batch is its own short transaction of rows of one tenant, the tenant named in every
statement (a Citus cluster routes it to one shard), taken by id (keyset), under the
logged bypass and `lock_timeout` RETENTION_LOCK_TIMEOUT: a batch that would wait longer
for a lock gives up and is tried again, then left to the next run. Its size adapts per
table (at most RETENTION_BATCH_SIZE rows, halved after a batch slower than
RETENTION_BATCH_MAX_SECONDS): a batch holds its tenant's audit chain lock until it
commits, which is what a writer of the same tenant may wait for. A dry run reads the
same batches and counts what they would remove, excluding what an earlier step would
already have removed, so it reports the counts a real run then finds. Idempotent: a
second run finds nothing left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import sql

from agents.models import AgentExecution, ConversationMessage, EvaluationRun
from agents.services.history import UNDER_REVIEW, history_still_needed
from core.db import partitions
from core.db.roles import require_sees_every_row
from core.ids import uuid7_floor
from core.jobs import JobSummary, job_cutoff
from documents.models import SearchQuery
from exports.models import Export
from exports.services import UNFINISHED_STATUSES, export_files_delete, export_files_unshared
from retention.models import (
    CATEGORIES,
    ENFORCED,
    MAX_DAYS,
    RetentionPolicy,
    RetentionRun,
    days_field,
)
from tenancy.audit import Anchor, audit_seal, chain_anchor_set, chain_cut
from tenancy.context import require_tenant, system_context, tenant_context
from tenancy.models import AuditEvent, Membership, MembershipRole, Tenant, TenantRef, User

logger = logging.getLogger(__name__)

EXECUTIONS = AgentExecution._meta.db_table
MESSAGES = ConversationMessage._meta.db_table
EVALUATIONS = EvaluationRun._meta.db_table
EXPORTS = Export._meta.db_table
AUDIT_EVENTS = AuditEvent._meta.db_table
SEARCH_QUERIES = SearchQuery._meta.db_table
# The table each enforced category removes rows of.
TABLE_OF_CATEGORY = {
    "executions": EXECUTIONS,
    "messages": MESSAGES,
    "evaluation_runs": EVALUATIONS,
    "exports": EXPORTS,
    "audit_events": AUDIT_EVENTS,
    "search_queries": SEARCH_QUERIES,
}
NOT_ENFORCED = tuple(category for category in CATEGORIES if category not in ENFORCED)
FIELDS = tuple(days_field(category) for category in CATEGORIES)
# PostgreSQL's lock_not_available: a statement gave up at lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"
LOCK_RETRIES = 3
FILES = "files"
NO_CONDITION = sql.SQL("")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Policies ---------------------------------------------------------------------------


def default_days() -> dict[str, int]:
    """RETENTION_DEFAULT_DAYS, checked: ImproperlyConfigured naming the category when a
    category is missing or its value is not a whole number of days from 1 to MAX_DAYS."""
    configured = settings.RETENTION_DEFAULT_DAYS
    days = {}
    for category in CATEGORIES:
        value = configured.get(category)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            raise ImproperlyConfigured(
                f"RETENTION_DEFAULT_DAYS[{category!r}] must be a whole number of days from 1 "
                f"to {MAX_DAYS}, not {value!r}."
            )
        days[category] = value
    return days


def _effective(policy: RetentionPolicy | None, defaults: dict[str, int]) -> dict[str, int]:
    return {
        category: (getattr(policy, days_field(category)) if policy else None) or defaults[category]
        for category in CATEGORIES
    }


def retention_policy_for(tenant: TenantRef) -> dict[str, int]:
    """The days the tenant keeps each category: its policy's, or the default."""
    tenant_id = require_tenant(tenant)
    defaults = default_days()
    with tenant_context(tenant_id):
        policy = RetentionPolicy.objects.filter(tenant_id=tenant_id).first()
    return _effective(policy, defaults)


def _require_owner(tenant_id: uuid.UUID, by: User | None) -> None:
    """PermissionDenied unless `by` is an owner of the tenant (read in its context), or
    an active superuser, whom every admin lets change everything."""
    if isinstance(by, User) and by.is_active and by.is_superuser:
        return
    if not isinstance(by, User) or not (
        by.is_active
        and Membership.objects.filter(
            tenant_id=tenant_id, user_id=by.pk, role=MembershipRole.OWNER
        ).exists()
    ):
        raise PermissionDenied("Only the tenant's owners may change its retention policy.")


def retention_policy_set(*, tenant: TenantRef, by: User, **days: Any) -> RetentionPolicy:
    """Set the tenant's retention days: keyword arguments named as the policy's fields
    (`executions_days=30`); None for the default; fields not given stay as they are.

    Owners only (PermissionDenied). A value that is not a whole number of days from 1 to
    MAX_DAYS, or an unknown field, is a ValidationError naming it; nothing is written.
    """
    tenant_id = require_tenant(tenant)
    unknown = {
        name: f"Not a retention field; one of {', '.join(FIELDS)}."
        for name in days
        if name not in FIELDS
    }
    not_whole = {
        name: "A whole number of days, or None for the default."
        for name, value in days.items()
        if name in FIELDS and (isinstance(value, bool) or not isinstance(value, int | None))
    }
    if unknown or not_whole:
        raise ValidationError({**unknown, **not_whole})
    with tenant_context(tenant_id, user=by), transaction.atomic():
        _require_owner(tenant_id, by)
        policy = RetentionPolicy.objects.select_for_update().filter(
            tenant_id=tenant_id
        ).first() or RetentionPolicy(tenant_id=tenant_id)
        for name, value in days.items():
            setattr(policy, name, value)
        policy.full_clean()
        if policy._state.adding:
            policy.save()
        else:
            policy.save(update_fields=[*days, "updated_at"])
    logger.info(
        "retention policy set",
        extra={"tenant_id": str(tenant_id), "by": str(by.pk), **days},
    )
    return policy


# The job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionSummary(JobSummary):
    """What a retention run removed, or on a dry run would, per tenant and table."""

    run_id: uuid.UUID
    # tenant id -> table (or "table.column" for keys cleared, "files") -> rows.
    removed: dict[uuid.UUID, dict[str, int]]
    partitions_dropped: tuple[str, ...]
    # What was left for the next run (a lock not granted in time, held history).
    deferred: tuple[str, ...] = ()
    names: dict[uuid.UUID, str] = field(default_factory=dict)
    # Its longest transaction (seconds, what it did): no lock it took was held longer.
    longest_transaction: tuple[float, str] = (0.0, "")

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for counts in self.removed.values():
            total.update(counts)
        return dict(total)

    def report(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        drop = "would drop" if self.dry_run else "dropped"
        lines = [f"retention run {self.run_id}"]
        for tenant_id, counts in sorted(self.removed.items(), key=lambda item: str(item[0])):
            shown = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()) if n)
            label = self.names.get(tenant_id, str(tenant_id))
            lines.append(f"{label} ({tenant_id}): {verb} {shown or 'nothing'}")
        lines.append(f"partitions {drop}: {', '.join(self.partitions_dropped) or 'none'}")
        seconds, what = self.longest_transaction
        if what:
            lines.append(f"longest transaction: {seconds:.3f} s ({what})")
        lines.extend(f"deferred: {reason}" for reason in self.deferred)
        if NOT_ENFORCED:
            lines.append(
                "not enforced yet: "
                + ", ".join(NOT_ENFORCED)
                + " (their days are kept in the policies; nothing is removed for them)"
            )
        return lines


@dataclass
class _Run:
    dry_run: bool
    batch_size: int
    lock_timeout: str
    removed: dict[uuid.UUID, Counter[str]]
    # On a dry run, per tenant, the rows an earlier step counted (table -> ids below):
    # a later step's count leaves them out, as a real run would no longer find them.
    counted_below: dict[uuid.UUID, dict[str, uuid.UUID]]
    # The rows of a table's next batch: RETENTION_BATCH_SIZE at most, halved after a full
    # batch slower than RETENTION_BATCH_MAX_SECONDS, doubled after a quick one. A batch
    # holds its tenant's audit chain lock (core.db.audit) from its first delete to its
    # commit, and a writer of the tenant waits that long. Per table, as rows of one cost
    # more than another's (cascades, indexes); the first batch is small, to learn it.
    sizes: dict[str, int] = field(default_factory=dict)
    max_seconds: float = 0.2
    deferred: list[str] = field(default_factory=list)
    # The longest of its transactions (seconds, what it did): the longest any lock it
    # took was held.
    longest: tuple[float, str] = (0.0, "")

    def size(self, table: str) -> int:
        return self.sizes.setdefault(table, max(1, self.batch_size // 8))

    def adapt(self, table: str, seconds: float) -> None:
        """After a full batch of `table` that took `seconds`."""
        size = self.size(table)
        if seconds > self.max_seconds:
            self.sizes[table] = max(1, size // 2)
        elif seconds < self.max_seconds / 2:
            self.sizes[table] = min(self.batch_size, size * 2)

    def already_counted(self, tenant_id: uuid.UUID, table: str) -> tuple[sql.Composable, list]:
        """The condition leaving out what an earlier step of a dry run counted already."""
        below = self.counted_below.get(tenant_id, {}).get(table)
        if not self.dry_run or below is None:
            return NO_CONDITION, []
        return sql.SQL(" AND id >= %s"), [below]


def retention_enforce(*, now: datetime | None = None, dry_run: bool = False) -> RetentionSummary:
    """Enforce every tenant's retention policy (see the module's docstring); a system job
    (core.jobs), run outside any transaction. Writes one retention_runs row per tenant,
    on a dry run too (marked so). ImproperlyConfigured where the settings are out of
    range or the job cannot see every row (no owner role)."""
    started = timezone.now()
    now = now or started
    defaults = default_days()
    batch_size = settings.RETENTION_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ImproperlyConfigured(f"RETENTION_BATCH_SIZE must be 1 or more, not {batch_size!r}.")
    max_seconds = settings.RETENTION_BATCH_MAX_SECONDS
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float)
        or max_seconds <= 0
    ):
        raise ImproperlyConfigured(
            f"RETENTION_BATCH_MAX_SECONDS must be more than 0, not {max_seconds!r}."
        )
    logger.warning(
        "retention: row-level security bypass, batch by batch", extra={"dry_run": dry_run}
    )
    with system_context("retention: read the policies", level=logging.INFO):
        for table in (RetentionPolicy._meta.db_table, EXECUTIONS):
            require_sees_every_row(table, job="retention")
        names = dict(Tenant.objects.order_by("pk").values_list("pk", "name"))
        policies = {policy.tenant_id: policy for policy in RetentionPolicy.objects.all()}
    days = {tenant_id: _effective(policies.get(tenant_id), defaults) for tenant_id in names}
    # Every cutoff first: a `now` the days cannot go back from is refused before any work.
    cutoffs = {
        tenant_id: {
            category: job_cutoff(now, timedelta(days=kept[category]), field="now")
            for category in ENFORCED
        }
        for tenant_id, kept in days.items()
    }
    run = _Run(
        dry_run=dry_run,
        batch_size=batch_size,
        max_seconds=max_seconds,
        lock_timeout=settings.RETENTION_LOCK_TIMEOUT,
        removed={tenant_id: Counter() for tenant_id in names},
        counted_below={tenant_id: {} for tenant_id in names},
    )
    for tenant_id, cutoff in cutoffs.items():
        _remove_evaluations(run, tenant_id, id_below(cutoff["evaluation_runs"]))
        _remove_messages(run, tenant_id, id_below(cutoff["messages"]))
        _remove_exports(run, tenant_id, id_below(cutoff["exports"]))
    dropped, floor = _drop_whole_months(run, [cutoff["executions"] for cutoff in cutoffs.values()])
    for tenant_id, cutoff in cutoffs.items():
        _remove_executions(
            run, tenant_id, lower=floor, upper=id_below(cutoff["executions"]), delete=True
        )
    audit_dropped = _remove_audit_events(
        run,
        {tenant_id: cutoff["audit_events"] for tenant_id, cutoff in cutoffs.items()},
        cut_at=started,
    )
    search_dropped = _remove_search_queries(
        run, {tenant_id: cutoff["search_queries"] for tenant_id, cutoff in cutoffs.items()}
    )
    summary = RetentionSummary(
        dry_run=dry_run,
        run_id=uuid.uuid4(),
        removed={tenant_id: dict(counts) for tenant_id, counts in run.removed.items()},
        partitions_dropped=(*dropped, *audit_dropped, *search_dropped),
        deferred=tuple(run.deferred),
        names={tenant_id: str(name) for tenant_id, name in names.items()},
        longest_transaction=run.longest,
    )
    _record(summary, days, started=started)
    logger.info(
        "retention %s",
        "dry run" if dry_run else "run",
        extra={
            "run_id": str(summary.run_id),
            "partitions_dropped": list(dropped),
            "deferred": list(run.deferred),
            **summary.totals(),
        },
    )
    return summary


def id_below(moment: datetime) -> uuid.UUID:
    """The first id kept when removing what was made before `moment`: every row made
    before it has a smaller id. Nothing is older than 1970 (a UUIDv7's time starts
    there), where uuid7_floor's 48 bits would wrap around to a far later time."""
    if moment <= EPOCH:
        return uuid.UUID(int=0)
    return uuid7_floor(moment)


def _record(
    summary: RetentionSummary, days: dict[uuid.UUID, dict[str, int]], *, started: datetime
) -> None:
    finished = timezone.now()
    with system_context("retention: record the run", level=logging.INFO):
        RetentionRun.objects.bulk_create(
            RetentionRun(
                tenant_id=tenant_id,
                run_id=summary.run_id,
                started_at=started,
                finished_at=finished,
                dry_run=summary.dry_run,
                days=days[tenant_id],
                removed=counts,
            )
            for tenant_id, counts in summary.removed.items()
        )


# Batches ----------------------------------------------------------------------------


def _is_lock_timeout(error: OperationalError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE


def _short_transaction(run: _Run, reason: str, work: Callable[[Any], Any]) -> Any:
    """`work(cursor)` in a transaction of its own under the bypass, waiting at most
    RETENTION_LOCK_TIMEOUT for any lock; tried again LOCK_RETRIES times when a lock is
    not granted in time. Raises the last lock timeout's OperationalError."""
    for attempt in range(1, LOCK_RETRIES + 1):
        started = time.monotonic()
        try:
            with system_context(f"retention: {reason}", level=logging.DEBUG):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, true)", [run.lock_timeout]
                    )
                    return work(cursor)
        except OperationalError as error:
            if not _is_lock_timeout(error) or attempt == LOCK_RETRIES:
                raise
            logger.info("retention: lock not granted in time, again", extra={"reason": reason})
            time.sleep(0.1 * attempt)
        finally:
            # Its locks are held from its first statement to its end (commit or not).
            run.longest = max(run.longest, (time.monotonic() - started, reason))
    raise AssertionError("unreachable")


def _in_batches(
    run: _Run,
    tenant_id: uuid.UUID,
    table: str,
    *,
    lower: uuid.UUID | None,
    upper: uuid.UUID,
    act: Callable[[Any, list[uuid.UUID]], None],
    where: sql.Composable = NO_CONDITION,
    after_commit: Callable[[], None] | None = None,
) -> None:
    """Call `act(cursor, ids)` on the ids of `table`'s rows of the tenant in [lower,
    upper) matching `where`, RETENTION_BATCH_SIZE at a time, newest first, each batch a
    short transaction; `after_commit()` after each one that committed. Newest first: a
    run's later steps come before the step they hang from, so a step's delete never
    finds its sub-steps gone by cascade already. A batch whose locks are not granted in
    time is left, with the rest of the table's rows of the tenant, to the next run."""
    select = sql.SQL(
        "SELECT id FROM {table} WHERE tenant_id = %s AND id < %s AND id >= %s{where} "
        "ORDER BY id DESC LIMIT %s"
    ).format(table=sql.Identifier(table), where=where)
    floor = lower or uuid.UUID(int=0)
    below = upper
    while True:
        size = run.size(table)

        def batch(cursor: Any, below: uuid.UUID = below, size: int = size) -> list[uuid.UUID]:
            cursor.execute(select, [tenant_id, below, floor, size])
            ids = [pk for (pk,) in cursor.fetchall()]
            if ids:
                act(cursor, ids)
            return ids

        started = time.monotonic()
        try:
            ids = _short_transaction(run, f"{table} of tenant {tenant_id}", batch)
        except OperationalError as error:
            if not _is_lock_timeout(error):
                raise
            run.deferred.append(f"{table} of tenant {tenant_id}: a lock was not granted in time")
            return
        if len(ids) == size:
            run.adapt(table, time.monotonic() - started)
        if ids and after_commit:
            after_commit()
        if len(ids) < size:
            return
        below = ids[-1]


def _delete_rows(run: _Run, tenant_id: uuid.UUID, table: str) -> Callable[[Any, list], None]:
    """The act of a batch that removes its rows from `table` (nothing references them)."""

    def act(cursor: Any, ids: list[uuid.UUID]) -> None:
        if not run.dry_run:
            cursor.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                [tenant_id, ids],
            )
            run.removed[tenant_id][table] += cursor.rowcount
        else:
            run.removed[tenant_id][table] += len(ids)

    return act


def _remove_evaluations(run: _Run, tenant_id: uuid.UUID, upper: uuid.UUID) -> None:
    _in_batches(
        run,
        tenant_id,
        EVALUATIONS,
        lower=None,
        upper=upper,
        act=_delete_rows(run, tenant_id, EVALUATIONS),
    )
    run.counted_below[tenant_id][EVALUATIONS] = upper


def _remove_messages(run: _Run, tenant_id: uuid.UUID, upper: uuid.UUID) -> None:
    _in_batches(
        run,
        tenant_id,
        MESSAGES,
        lower=None,
        upper=upper,
        act=_delete_rows(run, tenant_id, MESSAGES),
    )
    run.counted_below[tenant_id][MESSAGES] = upper


def _remove_exports(run: _Run, tenant_id: uuid.UUID, upper: uuid.UUID) -> None:
    """Exports made before `upper` that are not being built, and their files: deleted
    after the batch's rows are (exports.services.export_files_delete), a file another
    kept export points at excepted."""
    unfinished = [str(status) for status in UNFINISHED_STATUSES]
    kept = Q(pk__gte=upper) | Q(status__in=unfinished)
    files: list[str] = []

    def act(cursor: Any, ids: list[uuid.UUID]) -> None:
        cursor.execute(
            "SELECT storage_key FROM exports WHERE tenant_id = %s AND id = ANY(%s) "
            "AND storage_key <> ''",
            [tenant_id, ids],
        )
        keys = [key for (key,) in cursor.fetchall()]
        files[:] = export_files_unshared(tenant_id=tenant_id, keys=keys, kept=kept)
        _delete_rows(run, tenant_id, EXPORTS)(cursor, ids)
        run.removed[tenant_id][FILES] += len(files)

    def delete_files() -> None:
        if not run.dry_run:
            export_files_delete(files)

    _in_batches(
        run,
        tenant_id,
        EXPORTS,
        lower=None,
        upper=upper,
        act=act,
        where=sql.SQL(" AND status <> ALL({})").format(sql.Literal(unfinished)),
        after_commit=delete_files,
    )


def _not_under_review() -> sql.Composable:
    """Executions no change proposal under review comes from (agents' UNDER_REVIEW)."""
    return sql.SQL(
        " AND NOT EXISTS (SELECT 1 FROM change_proposals p WHERE p.tenant_id = "
        "agent_executions.tenant_id AND p.execution_id = agent_executions.id "
        "AND p.status = ANY({}))"
    ).format(sql.Literal([str(status) for status in UNDER_REVIEW]))


def _remove_executions(
    run: _Run,
    tenant_id: uuid.UUID,
    *,
    lower: uuid.UUID | None,
    upper: uuid.UUID,
    delete: bool,
) -> None:
    """The tenant's executions in [lower, upper): their dependents removed (or their
    keys cleared), each key by its own ON DELETE rule read from the catalog, and, with
    `delete`, the executions themselves (else counted: a partition drop removes them)."""
    with connection.cursor() as cursor:
        references = [
            reference
            for reference in partitions.references_to(cursor, EXECUTIONS)
            if reference[0] != EXECUTIONS
        ]

    def act(cursor: Any, ids: list[uuid.UUID]) -> None:
        for table, action, column in references:
            if action not in ("c", "n"):
                raise ValueError(f"{table}.{column}: no ON DELETE rule retention knows")
            excluded, params = run.already_counted(tenant_id, table)
            target = sql.SQL("{} WHERE tenant_id = %s AND {} = ANY(%s)").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            name = table if action == "c" else f"{table}.{column}"
            if run.dry_run:
                cursor.execute(
                    sql.SQL("SELECT count(*) FROM {}{}").format(target, excluded),
                    [tenant_id, ids, *params],
                )
                run.removed[tenant_id][name] += cursor.fetchone()[0]
                continue
            if action == "c":
                statement = sql.SQL("DELETE FROM {}").format(target)
            else:
                statement = sql.SQL(
                    "UPDATE {} SET {} = NULL WHERE tenant_id = %s AND {} = ANY(%s)"
                ).format(sql.Identifier(table), sql.Identifier(column), sql.Identifier(column))
            cursor.execute(statement, [tenant_id, ids])
            run.removed[tenant_id][name] += cursor.rowcount
        if delete:
            _delete_rows(run, tenant_id, EXECUTIONS)(cursor, ids)
        else:
            run.removed[tenant_id][EXECUTIONS] += len(ids)

    _in_batches(
        run,
        tenant_id,
        EXECUTIONS,
        lower=lower,
        upper=upper,
        act=act,
        where=_not_under_review() if delete else NO_CONDITION,
    )


def _drop_whole_months(run: _Run, cutoffs: list[datetime]) -> tuple[list[str], uuid.UUID | None]:
    """Drop agent_executions' months that every tenant's policy lets go; (the partitions
    dropped, or on a dry run those that would be; the first id left to the batches).

    The months' dependents go first, in batches, tenant by tenant; then one transaction
    locks the table (waiting at most RETENTION_LOCK_TIMEOUT), checks again that nothing
    still needs those months (core's partitions job's rule: proposals under review,
    exports being built) and drops them with what little was added meanwhile. Where
    something needs them, or the lock is not granted in time, nothing is dropped and the
    batches remove the executions instead."""
    if not cutoffs:
        return [], None
    month = partitions.month_start(min(cutoffs))
    floor = id_below(month)
    with system_context("retention: plan the partition drop", level=logging.INFO):
        with connection.cursor() as cursor:
            names = sorted(
                n for m, n in partitions.partitions(cursor, EXECUTIONS).items() if m < month
            )
        if not names:
            return [], None
        reviewing, building = history_still_needed(floor)
    if reviewing or building:
        run.deferred.append(
            f"{EXECUTIONS} months before {month:%Y-%m}: {reviewing} proposals under review "
            f"and {building} exports being built need them; removed in batches instead"
        )
        return [], None
    before = {tenant_id: counts[EXECUTIONS] for tenant_id, counts in run.removed.items()}
    for tenant_id in run.removed:
        _remove_executions(run, tenant_id, lower=None, upper=floor, delete=False)
    if run.dry_run:
        return names, floor

    def drop(cursor: Any) -> list[str] | None:
        cursor.execute(f"LOCK TABLE {EXECUTIONS} IN SHARE ROW EXCLUSIVE MODE")
        if any(history_still_needed(floor)):
            return None
        partitions.drop_months_before(cursor, EXECUTIONS, month)
        return names

    try:
        dropped = _short_transaction(run, "drop whole months", drop)
    except OperationalError as error:
        if not _is_lock_timeout(error):
            raise
        dropped = None
    if dropped is None:
        # Not dropped: the batches count (and remove) those executions instead.
        for tenant_id, count in before.items():
            run.removed[tenant_id][EXECUTIONS] = count
        run.deferred.append(f"{EXECUTIONS} months before {month:%Y-%m}: not dropped this run")
        return [], None
    return dropped, floor


# Audit events -------------------------------------------------------------------------


def _remove_audit_events(
    run: _Run, cutoffs: dict[uuid.UUID, datetime], *, cut_at: datetime
) -> list[str]:
    """Cut each tenant's audit chain at its policy's cutoff (see the module's docstring);
    the audit_events partitions dropped (or, dry, that would be).

    A real run seals first, so that what is removed is sealed and the cut lands as far
    as the policy allows; a dry run seals nothing and counts the events sealed already,
    what a real run would remove at least."""
    if not run.dry_run:
        audit_seal()
    below = {tenant_id: id_below(cutoff) for tenant_id, cutoff in cutoffs.items()}
    with system_context("retention: plan the audit chains' cuts", level=logging.INFO):
        with connection.cursor() as cursor:
            planned = {
                tenant_id: chain_cut(cursor, tenant_id, before=upper)
                for tenant_id, upper in below.items()
            }
    cuts = {tenant_id: cut for tenant_id, cut in planned.items() if cut is not None}
    if not run.dry_run:
        for tenant_id, cut in list(cuts.items()):

            def anchor(cursor: Any, tenant_id: uuid.UUID = tenant_id, cut: Anchor = cut) -> None:
                chain_anchor_set(cursor, tenant_id, cut, cut_at=cut_at)

            try:
                _short_transaction(run, f"anchor the audit chain of tenant {tenant_id}", anchor)
            except OperationalError as error:
                if not _is_lock_timeout(error):
                    raise
                # No anchor, nothing of the chain removed: the next run cuts it.
                del cuts[tenant_id]
                run.deferred.append(f"{AUDIT_EVENTS} of tenant {tenant_id}: not cut this run")
    dropped, floor = _drop_whole_audit_months(run, cuts, max(cutoffs.values(), default=None))
    for tenant_id, cut in cuts.items():
        _in_batches(
            run,
            tenant_id,
            AUDIT_EVENTS,
            lower=floor,
            upper=below[tenant_id],
            act=_delete_rows(run, tenant_id, AUDIT_EVENTS),
            where=sql.SQL(" AND seq <= {}").format(sql.Literal(cut.seq)),
        )
    return dropped


def _drop_whole_audit_months(
    run: _Run, cuts: dict[uuid.UUID, Anchor], latest: datetime | None
) -> tuple[list[str], uuid.UUID | None]:
    """Drop the oldest months of audit_events whose every event is sealed and at or
    below its tenant's cut (so every tenant's policy lets the month go); (the partitions
    dropped, or on a dry run those that would be; the first id left to the batches).

    Only months before the latest cutoff can qualify. Each is read once, grouped by
    tenant, before the drop's transaction: what the check found stays true, since new
    events get ids of today (never of an old month), seals only reach unsealed events
    (which fail the check) and an anchor only moves forward. The drop itself waits at
    most RETENTION_LOCK_TIMEOUT for the table's lock; not granted, the batches remove
    those events instead."""
    if latest is None or not cuts:
        return [], None
    counted: Counter[uuid.UUID] = Counter()
    months: list[tuple[datetime, str]] = []
    with system_context("retention: plan the audit partition drop", level=logging.INFO):
        with connection.cursor() as cursor:
            candidates = sorted(
                (month, name)
                for month, name in partitions.partitions(cursor, AUDIT_EVENTS).items()
                if month < partitions.month_start(latest)
            )
            for month, name in candidates:
                lower, upper = partitions.month_bounds(month)
                cursor.execute(
                    f"SELECT tenant_id, count(*), count(seq), max(seq) FROM {AUDIT_EVENTS} "
                    "WHERE id >= %s AND id < %s GROUP BY tenant_id",
                    [lower, upper],
                )
                found = cursor.fetchall()
                if not all(
                    tenant_id in cuts and sealed == count and last <= cuts[tenant_id].seq
                    for tenant_id, count, sealed, last in found
                ):
                    break
                months.append((month, name))
                counted.update({tenant_id: count for tenant_id, count, _, _ in found})
    if not months:
        return [], None
    end = partitions.add_months(months[-1][0], 1)
    names = [name for _, name in months]

    def drop(cursor: Any) -> list[str]:
        partitions.drop_months_before(cursor, AUDIT_EVENTS, end)
        return names

    if not run.dry_run:
        try:
            _short_transaction(run, "drop whole audit months", drop)
        except OperationalError as error:
            if not _is_lock_timeout(error):
                raise
            run.deferred.append(f"{AUDIT_EVENTS} months before {end:%Y-%m}: not dropped this run")
            return [], None
    for tenant_id, count in counted.items():
        run.removed.setdefault(tenant_id, Counter())[AUDIT_EVENTS] += count
    return names, id_below(end)


# The search log -----------------------------------------------------------------------


def _remove_search_queries(run: _Run, cutoffs: dict[uuid.UUID, datetime]) -> list[str]:
    """Each tenant's logged searches made before its cutoff; the partitions dropped (or,
    dry, that would be). The months before every tenant's cutoff go whole, the rest in
    batches."""
    dropped, floor = _drop_whole_search_months(run, list(cutoffs.values()))
    for tenant_id, cutoff in cutoffs.items():
        _in_batches(
            run,
            tenant_id,
            SEARCH_QUERIES,
            lower=floor,
            upper=id_below(cutoff),
            act=_delete_rows(run, tenant_id, SEARCH_QUERIES),
        )
    return dropped


def _drop_whole_search_months(
    run: _Run, cutoffs: list[datetime]
) -> tuple[list[str], uuid.UUID | None]:
    """Drop the months of search_queries before every tenant's cutoff; (the partitions
    dropped, or on a dry run those that would be; the first id left to the batches).

    Nothing references the log, so nothing else is removed with them. Each month's rows
    are counted per tenant first, for the run's record: no row is added to a past month
    meanwhile (a new row's id is of its own time). The drop waits at most
    RETENTION_LOCK_TIMEOUT for the table's lock; not granted, the batches remove those
    rows instead."""
    if not cutoffs:
        return [], None
    month = partitions.month_start(min(cutoffs))
    counted: Counter[uuid.UUID] = Counter()
    with system_context("retention: plan the search log's partition drop", level=logging.INFO):
        with connection.cursor() as cursor:
            names = sorted(
                name
                for start, name in partitions.partitions(cursor, SEARCH_QUERIES).items()
                if start < month
            )
            if not names:
                return [], None
            cursor.execute(
                f"SELECT tenant_id, count(*) FROM {SEARCH_QUERIES} WHERE id < %s GROUP BY 1",
                [id_below(month)],
            )
            counted.update(dict(cursor.fetchall()))

    def drop(cursor: Any) -> list[str]:
        partitions.drop_months_before(cursor, SEARCH_QUERIES, month)
        return names

    if not run.dry_run:
        try:
            _short_transaction(run, "drop whole months of the search log", drop)
        except OperationalError as error:
            if not _is_lock_timeout(error):
                raise
            run.deferred.append(
                f"{SEARCH_QUERIES} months before {month:%Y-%m}: not dropped this run"
            )
            return [], None
    for tenant_id, count in counted.items():
        run.removed.setdefault(tenant_id, Counter())[SEARCH_QUERIES] += count
    return names, id_below(month)
