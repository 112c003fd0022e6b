"""Tenant isolation behind a real PgBouncer in transaction mode (docs/security.md).

In transaction pooling consecutive transactions of one client run on different server
connections, and one server connection serves many clients in turn: a tenant setting
that outlived its transaction would show up in another tenant's next one. PgBouncer
runs with a pool of POOL_SIZE server connections for THREADS clients, so they share.
"""

import threading
from functools import partial

import pytest
from django.db import connection, transaction

from documents.models import Project
from tenancy.context import tenant_context
from tenancy.models import Tenant
from tests.locks import run_together
from tests.pgbouncer import POOL_SIZE

THREADS = 16
ROUNDS = 50


@pytest.mark.django_db(transaction=True)
def test_tenant_setting_never_leaks_between_clients_sharing_pgbouncer_servers(
    through_pgbouncer,
):
    tenants = [Tenant.objects.create(name=f"T{n}", slug=f"t{n}") for n in range(THREADS)]
    dbname = connection.settings_dict["NAME"]
    served_before = through_pgbouncer.transactions(dbname)
    failures, backends = [], set()
    lock = threading.Lock()

    def worker(tenant: Tenant) -> None:
        for round_ in range(ROUNDS):
            with tenant_context(tenant), connection.cursor() as cursor:
                Project.objects.create(tenant=tenant, name=f"{tenant.slug}/{round_}")
                seen = set(Project.objects.values_list("tenant_id", "name"))
                cursor.execute("SELECT pg_backend_pid()")
                inside = cursor.fetchone()[0]
            # Outside any tenant context: no setting, no rows, whatever ran before
            # on the server connection this transaction got.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce(current_setting('app.tenant_ids', true), ''), "
                    "(SELECT count(*) FROM projects), pg_backend_pid()"
                )
                leaked, visible, outside = cursor.fetchone()
            expected = {(tenant.pk, f"{tenant.slug}/{n}") for n in range(round_ + 1)}
            with lock:
                backends.update((inside, outside))
                if seen != expected:
                    failures.append(("wrong rows", tenant.slug, round_, seen ^ expected))
                if leaked or visible:
                    failures.append(("leaked outside a context", tenant.slug, leaked, visible))
            connection.close()  # back to Django's pool: the next round may get another

    assert run_together([partial(worker, tenant) for tenant in tenants]) == []
    assert failures == []
    # Every transaction went through PgBouncer, on no more server connections than its pool.
    assert through_pgbouncer.transactions(dbname) - served_before >= THREADS * ROUNDS * 2
    assert backends <= through_pgbouncer.server_pids(dbname)
    assert len(backends) <= POOL_SIZE
