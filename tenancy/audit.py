"""The audit trail's hash chains: sealed (`manage.py audit_seal`) and verified
(`manage.py audit_verify`) here (docs/security.md, "The hash chain").

The events are written by triggers only (core.db.audit), unsealed: seq, prev_hash and
hash NULL, so a tenant's writers never wait for each other. `audit_seal` gives the
committed unsealed events of each chain their place after the fact, as the owner, in
short transactions of its own; `canonical_content` and `event_hash` are the one
definition of an event's hash, used by the seal to write it and by the verification to
check it.

Verifying a chain rebuilds each sealed event's hash from its stored columns, and checks
that seq counts from 1 with no gap and that each prev_hash is the previous event's hash.
The first event that fails is named; the chains' last hashes are returned so an operator
can keep them elsewhere: a chain proves nothing was changed or removed before its head,
and a head kept elsewhere proves nothing was cut off after it. An event is
tamper-evident from its seal on, not before.
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

from core.db.audit import GLOBAL_EVENTS, TENANT_EVENTS
from core.db.connections import owner_connection
from tenancy.context import system_context
from tenancy.models import Tenant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The columns the canonical content is built from; changes as jsonb's own text (its
# output is canonical: keys sorted, one spacing).
_COLUMNS = (
    "id, seq, table_name, row_id, action, actor_user_id, actor, request_id, "
    "created_at, changes::text, prev_hash, hash"
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
    changes_text: str,
) -> str:
    micros = (created_at - _EPOCH) // _MICROSECOND
    values = (
        id, tenant_id, seq, table_name, row_id, action, actor_user_id, actor, request_id,
        micros, changes_text,
    )  # fmt: skip
    return "|".join(_field(value) for value in values)


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
                lines.append(f"ok      {chain.chain}: {chain.events} events, head {chain.head}")
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


def _verify_rows(chain: str, batches: Iterable[list[tuple]], tenant_id) -> ChainResult:
    previous_hash, expected_seq, count = None, 1, 0
    for rows in batches:
        for row in rows:
            (
                id, seq, table_name, row_id, action, actor_user_id, actor, request_id,
                created_at, changes_text, prev_hash, stored_hash,
            ) = row  # fmt: skip
            where = f"event {id} (seq {seq}, {action} {table_name} {row_id})"
            if seq != expected_seq:
                return ChainResult(
                    chain, count, previous_hash, f"{where}: seq {expected_seq} expected"
                )
            if prev_hash != previous_hash:
                return ChainResult(
                    chain, count, previous_hash, f"{where}: prev_hash is not the previous hash"
                )
            content = canonical_content(
                id=id, tenant_id=tenant_id, seq=seq, table_name=table_name, row_id=row_id,
                action=action, actor_user_id=actor_user_id, actor=actor, request_id=request_id,
                created_at=created_at, changes_text=changes_text,
            )  # fmt: skip
            if event_hash(prev_hash, content) != stored_hash:
                return ChainResult(
                    chain, count, previous_hash, f"{where}: hash does not match its content"
                )
            previous_hash, expected_seq, count = stored_hash, expected_seq + 1, count + 1
    return ChainResult(chain, count, previous_hash)


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
            batches = _batches(cursor, TENANT_EVENTS, tenant_id)
            chain = _verify_rows(f"tenant {slug}", batches, tenant_id)
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
    "changes::text FROM {table} WHERE {tenant}hash IS NULL ORDER BY created_at, id LIMIT %s"
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
    seq, prev_hash = (head[0], head[1]) if head else (0, None)
    cursor.execute(_UNSEALED_SQL.format(table=table, tenant=tenant), [*tenant_params, SEAL_BATCH])
    rows = cursor.fetchall()
    if not rows:
        return 0
    values: list[object] = []
    for row in rows:
        id, table_name, row_id, action, actor_user_id, actor, request_id, created_at, changes = row
        seq += 1
        content = canonical_content(
            id=id, tenant_id=tenant_id, seq=seq, table_name=table_name, row_id=row_id,
            action=action, actor_user_id=actor_user_id, actor=actor, request_id=request_id,
            created_at=created_at, changes_text=changes,
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
