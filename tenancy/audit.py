"""The audit trail's hash chains: sealed (`manage.py audit_seal`), verified
(`manage.py audit_verify`), redacted (redact_events) and cut (anchors, for retention)
here (docs/security.md, "The hash chain").

The events are written by triggers only (core.db.audit), unsealed: seq, prev_hash and
hash NULL, so a tenant's writers never wait for each other. `audit_seal` gives the
committed unsealed events of each chain their place after the fact, as the owner, in
short transactions of its own; `canonical_content` and `event_hash` are the one
definition of an event's hash, used by the seal to write it and by the verification to
check it.

An event's hash covers `changes_sha256`, the digest of its changes the trigger stored
with it, not the changes themselves: an erasure replaces the changes with
REDACTED_CHANGES (redact_events) and the chain still verifies. Verifying an event
checks the digest against the changes, unless the event is redacted (its changes are
then the marker exactly), and its hash against its canonical content either way.

Verifying a chain rebuilds each sealed event's hash from its stored columns, and checks
that seq counts on with no gap and that each prev_hash is the previous event's hash,
from seq 1, or from the chain's anchor (the last event retention removed: its seq and
hash, in audit_chain_anchors). The first event that fails is named; the chains' last
hashes are returned so an operator can keep them elsewhere: a chain proves nothing was
changed or removed before its head, and a head kept elsewhere proves nothing was cut off
after it. An event is tamper-evident from its seal on, not before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from core.db.audit import (
    ANCHORS,
    GLOBAL_AUDITED_TABLES,
    GLOBAL_EVENTS,
    REDACTED_CHANGES,
    TENANT_EVENTS,
)
from core.db.connections import owner_connection
from core.db.roles import require_sees_every_row
from tenancy.context import system_context
from tenancy.models import Tenant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What verification reads of an event: the columns of its canonical content, its
# changes as jsonb's own text (canonical: keys sorted, one spacing) to check their
# digest against, whether it was redacted, and its place in the chain.
_COLUMNS = (
    "id, seq, table_name, row_id, action, actor_user_id, actor, request_id, "
    "created_at, changes::text, changes_sha256, redacted_at IS NOT NULL, prev_hash, hash"
)
# Events read per round trip: a chain of millions is verified in constant memory.
BATCH = 5000
# Events sealed per transaction (one read, one UPDATE): short transactions, and at most
# 4 x SEAL_BATCH parameters in the UPDATE.
SEAL_BATCH = 1000
# The advisory lock key of a chain, taken by audit_seal for each batch so that two
# sealers never interleave on one chain: the tenant's id after this prefix, or the
# global chain's name.
TENANT_CHAIN_LOCK_PREFIX = f"{TENANT_EVENTS}:"
GLOBAL_CHAIN_LOCK = GLOBAL_EVENTS


def _field(value: object) -> str:
    text = "" if value is None else str(value)
    return f"{len(text)}:{text}"


def canonical_content(
    *,
    id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    seq: int,
    table_name: str,
    row_id: uuid.UUID,
    action: str,
    actor_user_id: uuid.UUID | None,
    actor: str,
    request_id: str,
    created_at: datetime,
    changes_sha256: str,
) -> str:
    micros = (created_at - _EPOCH) // _MICROSECOND
    values = (
        id, tenant_id, seq, table_name, row_id, action, actor_user_id, actor, request_id,
        micros, changes_sha256,
    )  # fmt: skip
    return "|".join(_field(value) for value in values)


def changes_sha256(changes_text: str) -> str:
    """The digest of an event's changes, from their jsonb text (`changes::text`); the
    trigger computes the same in SQL (core.db.audit.changes_sha256_sql)."""
    return hashlib.sha256(changes_text.encode()).hexdigest()


def event_hash(prev_hash: str | None, content: str) -> str:
    return hashlib.sha256(f"{prev_hash or ''}|{content}".encode()).hexdigest()


_MICROSECOND = datetime.resolution


@dataclass(frozen=True)
class ChainResult:
    """One chain's verification: its name, how many events, its head, the first break,
    and how many of its events it found unsealed (committed after the seal read the
    chain: a transaction still open then; one still open now is not seen at all)."""

    chain: str
    events: int
    head: str | None
    broken: str | None = None
    unsealed: int = 0
    # The seq the chain was verified from: 1, or the one after its anchor.
    first_seq: int = 1

    @property
    def ok(self) -> bool:
        return self.broken is None


@dataclass
class AuditVerification:
    chains: list[ChainResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(chain.ok for chain in self.chains)

    def report(self) -> list[str]:
        lines = []
        for chain in self.chains:
            if chain.ok:
                cut = f" from seq {chain.first_seq}" if chain.first_seq > 1 else ""
                lines.append(
                    f"ok      {chain.chain}: {chain.events} events{cut}, head {chain.head}"
                )
            else:
                lines.append(f"BROKEN  {chain.chain}: {chain.broken}")
            if chain.unsealed:
                lines.append(
                    f"unsealed {chain.chain}: {chain.unsealed} events not verified yet, "
                    "committed after the seal read the chain (the next seal takes them)"
                )
        broken = sum(1 for chain in self.chains if not chain.ok)
        lines.append(
            f"{len(self.chains)} chains verified, {broken} broken"
            if self.chains
            else "no audit events"
        )
        return lines


@dataclass(frozen=True)
class Anchor:
    """Where a tenant chain starts after retention cut it: the last removed event."""

    seq: int
    hash: str


def chain_anchor(cursor, tenant_id: uuid.UUID) -> Anchor | None:
    """The tenant chain's anchor, if retention has cut it. In a system_context."""
    cursor.execute(f"SELECT seq, hash FROM {ANCHORS} WHERE tenant_id = %s", [tenant_id])
    row = cursor.fetchone()
    return Anchor(row[0], row[1]) if row else None


def _event_problem(row: tuple, previous_hash: str | None, expected_seq: int, tenant_id) -> str:
    """What is wrong with one sealed event, or ''."""
    (
        id, seq, table_name, row_id, action, actor_user_id, actor, request_id,
        created_at, changes_text, stored_digest, redacted, prev_hash, stored_hash,
    ) = row  # fmt: skip
    if seq != expected_seq:
        return f"seq {expected_seq} expected"
    if prev_hash != previous_hash:
        return "prev_hash is not the previous hash"
    if redacted:
        if changes_text != REDACTED_CHANGES:
            return "redacted, but its changes are not the redaction marker"
    elif changes_sha256(changes_text) != stored_digest:
        return "changes do not match their changes_sha256"
    content = canonical_content(
        id=id, tenant_id=tenant_id, seq=seq, table_name=table_name, row_id=row_id,
        action=action, actor_user_id=actor_user_id, actor=actor, request_id=request_id,
        created_at=created_at, changes_sha256=stored_digest,
    )  # fmt: skip
    if event_hash(prev_hash, content) != stored_hash:
        return "hash does not match its content"
    return ""


def _start(first: tuple, anchor: Anchor | None) -> tuple[int, str | None]:
    """(seq, prev_hash) the chain's first stored event must have: seq 1 and none; after
    an anchor, the anchor's next and hash; or, where a cut is still under way (the
    anchor written, not every event below it deleted yet), the first event left, whose
    own prev_hash is taken as given: the events from it on are verified through the
    anchor's own event."""
    seq, prev_hash = first[1], first[-2]
    if anchor is None:
        return 1, None
    if seq <= anchor.seq:
        return seq, prev_hash
    return anchor.seq + 1, anchor.hash


def _verify_rows(
    chain: str, batches: Iterable[list[tuple]], tenant_id, anchor: Anchor | None = None
) -> ChainResult:
    previous_hash: str | None = None
    expected_seq = first_seq = anchor.seq + 1 if anchor else 1
    count = 0
    for rows in batches:
        for row in rows:
            if count == 0:
                expected_seq, previous_hash = _start(row, anchor)
                first_seq = expected_seq
            problem = _event_problem(row, previous_hash, expected_seq, tenant_id)
            if not problem and anchor and row[1] == anchor.seq and row[-1] != anchor.hash:
                problem = "its hash is not the one the chain's anchor holds"
            if problem:
                id, seq, table_name, row_id, action = row[:5]
                where = f"event {id} (seq {seq}, {action} {table_name} {row_id})"
                return ChainResult(
                    chain, count, previous_hash, f"{where}: {problem}", first_seq=first_seq
                )
            previous_hash, expected_seq, count = row[-1], expected_seq + 1, count + 1
    return ChainResult(chain, count, previous_hash, first_seq=first_seq)


def _batches(cursor, table: str, tenant_id: uuid.UUID | None):
    """The chain's sealed events in seq order, BATCH at a time (keyset on seq, by its
    index; the unsealed ones, seq NULL, are not in the chain yet)."""
    tenant_filter = "tenant_id = %s AND " if tenant_id else ""
    after = 0
    while True:
        params = [tenant_id, after] if tenant_id else [after]
        cursor.execute(
            f"SELECT {_COLUMNS} FROM {table} WHERE {tenant_filter}seq > %s "
            f"ORDER BY seq LIMIT {BATCH}",
            params,
        )
        rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][1]


def _unsealed(cursor, table: str, tenant_id: uuid.UUID | None) -> int:
    tenant_filter = "tenant_id = %s AND " if tenant_id else ""
    cursor.execute(
        f"SELECT count(*) FROM {table} WHERE {tenant_filter}hash IS NULL",
        [tenant_id] if tenant_id else [],
    )
    return cursor.fetchone()[0]


def _tenants(cursor, tenant_slug: str | None, *, unsealed_only: bool) -> list[tuple]:
    """(id, name) of `tenant_slug`'s tenant, or of every tenant with events (with
    unsealed events: `unsealed_only`), also one deleted since (named by its id). An
    unknown slug is a ValidationError naming `tenant`. In a system_context."""
    if tenant_slug is not None:
        tenants = list(Tenant.objects.filter(slug=tenant_slug).values_list("id", "slug"))
        if not tenants:
            raise ValidationError({"tenant": f"No tenant with the slug {tenant_slug!r}."})
        return tenants
    where = " WHERE hash IS NULL" if unsealed_only else ""
    cursor.execute(f"SELECT DISTINCT tenant_id FROM {TENANT_EVENTS}{where}")
    ids = [row[0] for row in cursor.fetchall()]
    slugs = dict(Tenant.objects.filter(id__in=ids).values_list("id", "slug"))
    return sorted(((pk, slugs.get(pk, str(pk))) for pk in ids), key=lambda t: t[1])


def audit_verify(*, tenant_slug: str | None = None, seal: bool = True) -> AuditVerification:
    """Verify every tenant's chain and the global one, or `tenant_slug`'s only.

    Seals first (audit_seal, same scope; `seal=False` skips it), so that every event
    committed before the call is verified; the unsealed events found after the seal (of
    transactions that were still open during it) are counted per chain. Runs as the
    owner with the explicit bypass (system_context): every event is read, none written.
    An unknown slug is a ValidationError naming `tenant`.
    """
    if seal:
        audit_seal(tenant_slug=tenant_slug)
    result = AuditVerification()
    with system_context("audit_verify"), connection.cursor() as cursor:
        for tenant_id, slug in _tenants(cursor, tenant_slug, unsealed_only=False):
            anchor = chain_anchor(cursor, tenant_id)
            batches = _batches(cursor, TENANT_EVENTS, tenant_id)
            chain = _verify_rows(f"tenant {slug}", batches, tenant_id, anchor)
            unsealed = _unsealed(cursor, TENANT_EVENTS, tenant_id)
            result.chains.append(dataclasses.replace(chain, unsealed=unsealed))
        if tenant_slug is None:
            chain = _verify_rows("global", _batches(cursor, GLOBAL_EVENTS, None), None)
            unsealed = _unsealed(cursor, GLOBAL_EVENTS, None)
            result.chains.append(dataclasses.replace(chain, unsealed=unsealed))
    return result


# --- Sealing ------------------------------------------------------------------------------


@dataclass
class AuditSeal:
    """What one audit_seal did: events sealed per chain (the chains that had any)."""

    sealed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sealed.values())

    def report(self) -> list[str]:
        lines = [f"sealed  {chain}: {count} events" for chain, count in self.sealed.items()]
        lines.append(
            f"{self.total} events sealed in {len(self.sealed)} chains"
            if self.sealed
            else "nothing to seal"
        )
        return lines


# Sealing's statements, per chain: {table}, and {tenant} a filter on tenant_id (every
# statement on audit_events names its tenant: one shard on Citus) or nothing (global).
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
# The head: the last sealed event, through the (tenant_id, seq DESC) index, whose scan
# skips the unsealed events' NULLs.
_HEAD_SQL = "SELECT seq, hash FROM {table} WHERE {tenant}seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
# The committed unsealed events, oldest first, through the partial *_unsealed_idx.
_UNSEALED_SQL = (
    "SELECT id, table_name, row_id, action, actor_user_id, actor, request_id, created_at, "
    "changes_sha256 FROM {table} WHERE {tenant}hash IS NULL ORDER BY created_at, id LIMIT %s"
)
# One UPDATE per batch; the id range lets the planner skip the months (partitions) the
# batch has no event in. `hash IS NULL`: never a second seal (the append-only trigger
# would refuse it anyway).
_SEAL_SQL = (
    "UPDATE {table} AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "
    "FROM (VALUES {values}) AS v (id, seq, prev_hash, hash) "
    "WHERE {tenant_e}e.id = v.id AND e.hash IS NULL AND e.id BETWEEN %s AND %s"
)
_FIRST_VALUES = "(%s::uuid, %s::bigint, %s::varchar, %s::varchar)"
_VALUES = "(%s, %s, %s, %s)"


def _seal_batch(cursor, table: str, tenant_id: uuid.UUID | None, lock_key: str) -> int:
    """Seal up to SEAL_BATCH of the chain's committed unsealed events, in the caller's
    transaction (which the lock lasts for); how many."""
    tenant = "tenant_id = %s AND " if tenant_id else ""
    tenant_params = [tenant_id] if tenant_id else []
    cursor.execute(_LOCK_SQL, [lock_key])
    cursor.execute(_HEAD_SQL.format(table=table, tenant=tenant), tenant_params)
    head = cursor.fetchone()
    if head is None and tenant_id is not None:
        # Retention may have removed every sealed event: the chain goes on from its anchor.
        anchor = chain_anchor(cursor, tenant_id)
        head = (anchor.seq, anchor.hash) if anchor else None
    seq, prev_hash = (head[0], head[1]) if head else (0, None)
    cursor.execute(_UNSEALED_SQL.format(table=table, tenant=tenant), [*tenant_params, SEAL_BATCH])
    rows = cursor.fetchall()
    if not rows:
        return 0
    values: list[object] = []
    for row in rows:
        id, table_name, row_id, action, actor_user_id, actor, request_id, created_at, digest = row
        seq += 1
        content = canonical_content(
            id=id, tenant_id=tenant_id, seq=seq, table_name=table_name, row_id=row_id,
            action=action, actor_user_id=actor_user_id, actor=actor, request_id=request_id,
            created_at=created_at, changes_sha256=digest,
        )  # fmt: skip
        hash = event_hash(prev_hash, content)
        values += [id, seq, prev_hash, hash]
        prev_hash = hash
    ids = [row[0] for row in rows]
    statement = _SEAL_SQL.format(
        table=table,
        tenant_e="e." + tenant if tenant else "",
        values=", ".join([_FIRST_VALUES] + [_VALUES] * (len(rows) - 1)),
    )
    cursor.execute(statement, [*values, *tenant_params, min(ids), max(ids)])
    if cursor.rowcount != len(rows):
        raise RuntimeError(
            f"{table}: sealed {cursor.rowcount} of {len(rows)} events; another sealer "
            "did not take the chain's lock"
        )
    return len(rows)


def _seal_chain(tenant_id: uuid.UUID | None) -> int:
    """Seal a chain's committed unsealed events, SEAL_BATCH per transaction; how many."""
    sealed = 0
    while True:
        scope: AbstractContextManager[object]
        if tenant_id is not None:
            # The bypass (a tenant's events are read by its owners and admins only; on
            # Citus it is set on the workers too), logged once by audit_seal itself: each
            # statement is filtered on the tenant, so it reads and writes one shard.
            scope = system_context("audit_seal", level=logging.DEBUG)
            table, lock_key = TENANT_EVENTS, f"{TENANT_CHAIN_LOCK_PREFIX}{tenant_id}"
        else:
            # audit_events_global has no row-level security (nor tenant): a plain
            # transaction of the owner's (on Citus, a coordinator-local table).
            scope = transaction.atomic()
            table, lock_key = GLOBAL_EVENTS, GLOBAL_CHAIN_LOCK
        with scope, connection.cursor() as cursor:
            count = _seal_batch(cursor, table, tenant_id, lock_key)
        sealed += count
        if count < SEAL_BATCH:
            return sealed


def audit_seal(*, tenant_slug: str | None = None) -> AuditSeal:
    """Seal the committed unsealed events of every chain (`tenant_slug`'s only, if given).

    As the owner (the only role with UPDATE on the event tables; the append-only trigger
    lets the seal of an unsealed event through, nothing else), outside any transaction:
    each batch is a short transaction of its own, holding the chain's advisory lock, so
    two sealers take turns per chain and the writers never wait. The chain's order is
    the seal's: a batch takes the unsealed events in (created_at, id) order after the
    chain's sealed head. An event of a transaction still open is not seen; the next seal
    takes it. An unknown slug is a ValidationError naming `tenant`.
    """
    result = AuditSeal()
    with owner_connection():
        with system_context("audit_seal", level=logging.INFO), connection.cursor() as cursor:
            tenants = _tenants(cursor, tenant_slug, unsealed_only=True)
        for tenant_id, slug in tenants:
            count = _seal_chain(tenant_id)
            if count:
                result.sealed[f"tenant {slug}"] = count
        if tenant_slug is None:
            count = _seal_chain(None)
            if count:
                result.sealed["global"] = count
    return result


# --- Redaction ----------------------------------------------------------------------------


def _require_uuid(value: object, field: str) -> None:
    if not isinstance(value, uuid.UUID):
        raise ValidationError({field: f"A UUID, not {value!r}."})


def redact_events(
    *,
    rows: Iterable[tuple[str, uuid.UUID]] = (),
    actor_user_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
) -> int:
    """Redact the audit events of the given rows ((table name, row id) pairs) and every
    event acted by `actor_user_id`, in both event tables; how many events were redacted
    (those redacted already are left as they are).

    A redacted event keeps its row, seq, hash, prev_hash and changes_sha256 (the digest
    the trigger stored with it, so an unsealed event is sealed later over its original
    changes); its changes become REDACTED_CHANGES and redacted_at is set, the one change
    the append-only trigger lets through besides a seal. The chains still verify.

    In the caller's transaction (RuntimeError outside one), so that an erasure and the
    redaction of its events commit together, the events its own deletes just wrote
    included; as the owner with the system bypass (tenancy.context.system_context,
    which connects as the owner and opens the transaction; ImproperlyConfigured
    otherwise). `tenant_id`
    limits the tenant events to that tenant (one shard on Citus); the events of the
    global tables (GLOBAL_AUDITED_TABLES: users, tenants, shared templates) are in the
    global chain, which has no tenant. Bad input is a ValidationError naming the
    argument; nothing is written.
    """
    rows = list(rows)
    for pair in rows:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], uuid.UUID)
        ):
            raise ValidationError({"rows": f"(table name, row UUID) pairs, not {pair!r}."})
    if actor_user_id is not None:
        _require_uuid(actor_user_id, "actor_user_id")
    if tenant_id is not None:
        _require_uuid(tenant_id, "tenant_id")
    if not connection.in_atomic_block:
        raise RuntimeError("redact_events runs inside the caller's transaction.")
    if not rows and actor_user_id is None:
        return 0
    require_sees_every_row(TENANT_EVENTS, job="redact_events")
    by_table: dict[str, list[uuid.UUID]] = {}
    for table_name, row_id in rows:
        by_table.setdefault(table_name, []).append(row_id)
    statements: list[tuple[str, str, list]] = []
    for table_name, row_ids in sorted(by_table.items()):
        target = GLOBAL_EVENTS if table_name in GLOBAL_AUDITED_TABLES else TENANT_EVENTS
        statements.append((target, "table_name = %s AND row_id = ANY(%s)", [table_name, row_ids]))
    if actor_user_id is not None:
        for target in (TENANT_EVENTS, GLOBAL_EVENTS):
            statements.append((target, "actor_user_id = %s", [actor_user_id]))
    redacted = 0
    with connection.cursor() as cursor:
        for target, condition, params in statements:
            tenant = "tenant_id = %s AND " if target == TENANT_EVENTS and tenant_id else ""
            cursor.execute(
                f"UPDATE {target} SET changes = %s::jsonb, redacted_at = now() "
                f"WHERE {tenant}{condition} AND redacted_at IS NULL",
                [REDACTED_CHANGES, *([tenant_id] if tenant else []), *params],
            )
            redacted += cursor.rowcount
    return redacted


# --- Anchors (retention) ------------------------------------------------------------------


def chain_cut(cursor, tenant_id: uuid.UUID, *, before: uuid.UUID) -> Anchor | None:
    """Where retention may cut the tenant's chain to remove its events made before
    `before` (an id: a UUIDv7, made when its event was): at the last event of the
    longest sealed prefix of the chain made before it all, or at the chain's anchor if
    that is further; None when the chain has neither.

    A prefix by seq, not every event older than `before`: an event committed late is
    sealed after younger ones, and removing it would leave a gap in the chain; it goes
    with a later cut. The events at or below the cut are the ones retention removes.
    In a system_context."""
    anchor = chain_anchor(cursor, tenant_id)
    cursor.execute(
        f"SELECT seq FROM {TENANT_EVENTS} WHERE tenant_id = %s AND seq IS NOT NULL "
        "AND id >= %s ORDER BY seq LIMIT 1",
        [tenant_id, before],
    )
    first_kept = cursor.fetchone()
    if first_kept:
        last = first_kept[0] - 1
    else:
        cursor.execute(
            _HEAD_SQL.format(table=TENANT_EVENTS, tenant="tenant_id = %s AND "), [tenant_id]
        )
        head = cursor.fetchone()
        last = head[0] if head else 0
    if anchor and anchor.seq >= last:
        return anchor
    if last == 0:
        return None
    cursor.execute(
        f"SELECT hash FROM {TENANT_EVENTS} WHERE tenant_id = %s AND seq = %s", [tenant_id, last]
    )
    return Anchor(last, cursor.fetchone()[0])


def chain_anchor_set(cursor, tenant_id: uuid.UUID, anchor: Anchor, *, cut_at: datetime) -> None:
    """Record the tenant chain's anchor before the events at or below it are removed
    (the append-only trigger lets those deletes through only then); an anchor only moves
    forward. The anchor's own write is audited, in the chain it anchors. In a
    system_context, as the owner."""
    cursor.execute(
        f"INSERT INTO {ANCHORS} (tenant_id, seq, hash, cut_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, "
        f"cut_at = EXCLUDED.cut_at WHERE {ANCHORS}.seq < EXCLUDED.seq",
        [tenant_id, anchor.seq, anchor.hash, cut_at],
    )
