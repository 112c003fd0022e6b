"""The audit trail's verification (`manage.py audit_verify`) and its reads (docs/security.md).

The events are written by triggers only (core.db.audit). Verifying a chain rebuilds each
event's hash here, in Python, from its stored columns (`canonical_content` is the
Python twin of core.db.audit.CANONICAL_FIELDS), and checks that seq counts from 1 with
no gap and that each prev_hash is the previous event's hash. The first event that fails
is named; the chains' last hashes are returned so an operator can keep them elsewhere:
a chain proves nothing was changed or removed before its head, and a head kept
elsewhere proves nothing was cut off after it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db import connection

from core.db.audit import GLOBAL_EVENTS, TENANT_EVENTS
from tenancy.context import system_context
from tenancy.models import Tenant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The columns the canonical content is built from, in core.db.audit.CANONICAL_FIELDS'
# order; changes as jsonb's own text (its output is canonical: keys sorted, one spacing).
_COLUMNS = (
    "id, seq, table_name, row_id, action, actor_user_id, actor, request_id, "
    "created_at, changes::text, prev_hash, hash"
)
# Events read per round trip: a chain of millions is verified in constant memory.
BATCH = 5000


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
    """One chain's verification: its name, how many events, its head, the first break."""

    chain: str
    events: int
    head: str | None
    broken: str | None = None

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
    """The chain's events in seq order, BATCH at a time (keyset on seq, by its index)."""
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


def audit_verify(*, tenant_slug: str | None = None) -> AuditVerification:
    """Verify every tenant's chain and the global one, or `tenant_slug`'s only.

    Runs as the owner with the explicit bypass (system_context): every event is read,
    none written. An unknown slug is a ValidationError naming `tenant`.
    """
    result = AuditVerification()
    with system_context("audit_verify"), connection.cursor() as cursor:
        if tenant_slug is not None:
            tenants = list(Tenant.objects.filter(slug=tenant_slug).values_list("id", "slug"))
            if not tenants:
                raise ValidationError({"tenant": f"No tenant with the slug {tenant_slug!r}."})
        else:
            # Every tenant with events, also one deleted since (named by its id).
            cursor.execute(f"SELECT DISTINCT tenant_id FROM {TENANT_EVENTS}")
            ids = [row[0] for row in cursor.fetchall()]
            slugs = dict(Tenant.objects.filter(id__in=ids).values_list("id", "slug"))
            tenants = sorted(((pk, slugs.get(pk, str(pk))) for pk in ids), key=lambda t: t[1])
        for tenant_id, slug in tenants:
            batches = _batches(cursor, TENANT_EVENTS, tenant_id)
            result.chains.append(_verify_rows(f"tenant {slug}", batches, tenant_id))
        if tenant_slug is None:
            result.chains.append(
                _verify_rows("global", _batches(cursor, GLOBAL_EVENTS, None), None)
            )
    return result
