"""Row locks and updates of many tenants' rows, one statement per tenant.

A system job (a purge) works across tenants. On a Citus cluster a row lock (FOR UPDATE)
or an UPDATE of a distributed table must be routed to one shard, which a filter on
tenant_id does: a lock across shards is refused, an UPDATE across shards locks every
shard of the table. So the job finds the tenants concerned first, then locks and
updates each tenant's rows with statements filtered on it. Tenants go in id order, rows
in the queryset's order, so two jobs (and the writers, which lock one tenant's rows)
take their locks in one order. On plain PostgreSQL this costs one statement per tenant
concerned, for jobs that run now and then.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet


def tenants_of(queryset: QuerySet) -> list[uuid.UUID]:
    """The tenants of the rows of `queryset`, in id order."""
    return sorted(queryset.order_by().values_list("tenant_id", flat=True).distinct())


def lock_by_tenant(queryset: QuerySet, *fields: str, skip_locked: bool = False) -> list[tuple]:
    """`(tenant_id, *fields)` of the rows of `queryset`, locked FOR UPDATE, tenant by tenant.

    `skip_locked` leaves out rows another transaction holds, as SKIP LOCKED does.
    """
    rows: list[tuple] = []
    for tenant_id in tenants_of(queryset):
        mine = queryset.filter(tenant_id=tenant_id).select_for_update(skip_locked=skip_locked)
        rows.extend(mine.values_list("tenant_id", *fields))
    return rows


def update_by_tenant(
    queryset: QuerySet, keys: Iterable[tuple[uuid.UUID, Any]], *, batch_size: int, **changes: Any
) -> int:
    """UPDATE the rows of `queryset` among `keys` ((tenant_id, id) pairs) with `changes`,
    one statement per tenant and `batch_size` ids; the number of rows updated."""
    ids_by_tenant: dict[uuid.UUID, list] = defaultdict(list)
    for tenant_id, pk in keys:
        ids_by_tenant[tenant_id].append(pk)
    updated = 0
    for tenant_id in sorted(ids_by_tenant):
        ids = ids_by_tenant[tenant_id]
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            updated += queryset.filter(tenant_id=tenant_id, pk__in=batch).update(**changes)
    return updated
