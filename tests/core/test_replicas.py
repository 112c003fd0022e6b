"""Reads on a real streaming replica through core.db.replicas.ReplicaRouter (issue 13, 1-2).

The pair is a throwaway primary, migrated, and hot standbys made from it with
`pg_basebackup -R` (tests/streaming_replica.py), so these tests need no set-up with the
embedded default or with DATABASE_URL. Every read that must come from a standby says
so itself: it selects pg_is_in_recovery() in the same statement.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.models.expressions import RawSQL
from django.test import Client
from django.test.utils import CaptureQueriesContext
from health_check.exceptions import ServiceUnavailable

from core.db import replicas
from core.ops.health import ReplicasLag
from documents.models import Project, SearchQuery
from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User
from tests.factories import PASSWORD, make_member
from tests.streaming_replica import (
    django_on,
    extra_replica,
    replay_lag_after_write,
    standby_of,
    superuser_connection,
    throwaway_primary,
)

pytestmark = [pytest.mark.system_program, pytest.mark.slow]  # a standby from pg_basebackup
# A standby that replays as it receives: behind by less than a second (the health check
# waits out WAL received but not replayed yet, core.db.replicas.SETTLE_SECONDS).
KEEPING_UP = r"0\.\d s behind"


@pytest.fixture(scope="module")
def pair(django_db_blocker):
    """The primary and one standby (replica_1) for the module, Django pointed at them."""
    with (
        django_db_blocker.unblock(),
        throwaway_primary() as primary,
        standby_of(primary) as standby,
        django_on(primary, {"replica_1": standby.socket_dir}),
    ):
        call_command("migrate", verbosity=0)
        yield primary, standby.socket_dir


@pytest.fixture(autouse=True)
def fresh_measurements(pair, file_storages):
    replicas.forget_measurements()
    yield
    replicas.forget_measurements()


def replayed(pair) -> float:
    lag = replay_lag_after_write(*pair)
    print(f"standby replayed the primary's writes after {lag * 1000:.0f} ms")
    return lag


def make_tenant_with_projects(*names: str) -> Tenant:
    tenant = Tenant.objects.create(name="T", slug=f"t-{uuid.uuid4().hex[:10]}")
    with tenant_context(tenant):
        for name in names:
            Project.objects.create(tenant=tenant, name=name)
    return tenant


def names_and_where(tenant_ids=None) -> tuple[set[str], set[bool]]:
    """Project names visible now, and pg_is_in_recovery() of the server that served them."""
    projects = Project.objects.annotate(standby=RawSQL("pg_is_in_recovery()", []))
    if tenant_ids:
        projects = projects.filter(tenant_id__in=tenant_ids)
    rows = list(projects.values_list("name", "standby"))
    return {name for name, _ in rows}, {standby for _, standby in rows}


def read_on_standby() -> bool:
    """pg_is_in_recovery() of the server a plain read is routed to now."""
    return (
        Tenant.objects.annotate(standby=RawSQL("pg_is_in_recovery()", []))
        .values_list("standby", flat=True)[:1]
        .get()
    )


def test_a_replayed_write_is_read_on_the_standby(pair):
    tenant = make_tenant_with_projects("written on the primary")
    replayed(pair)
    with replicas.unit_of_work(read_only=True), tenant_context(tenant):
        assert names_and_where() == ({"written on the primary"}, {True})


def test_row_level_security_isolates_tenants_on_the_standby(pair):
    tenant_a = make_tenant_with_projects("a-1", "a-2")
    tenant_b = make_tenant_with_projects("b-1")
    replayed(pair)
    with replicas.unit_of_work(read_only=True):
        with tenant_context(tenant_a):
            assert names_and_where() == ({"a-1", "a-2"}, {True})
        with tenant_context(tenant_a, tenant_b):
            with tenant_context(tenant_b):  # a nested context narrows on the standby too
                assert names_and_where() == ({"b-1"}, {True})
            assert names_and_where([tenant_a.pk, tenant_b.pk]) == ({"a-1", "a-2", "b-1"}, {True})
        # No tenant context: the standby, like the primary, shows no tenant row at all.
        assert read_on_standby() is True
        assert Project.objects.filter(tenant_id__in=[tenant_a.pk, tenant_b.pk]).count() == 0


def test_a_read_after_a_write_stays_on_the_primary(pair):
    tenant = make_tenant_with_projects()
    replayed(pair)
    with replicas.unit_of_work(read_only=True), tenant_context(tenant):
        assert read_on_standby() is True
        Project.objects.create(tenant=tenant, name="just written")
        # In the same transaction: only the primary has it, and the unit stays there.
        assert names_and_where() == ({"just written"}, {False})
    with replicas.unit_of_work(read_only=True):
        assert read_on_standby() is True  # the next unit starts on the standby again


def test_a_job_reads_on_the_primary_inside_transactions_and_after_writing(pair):
    tenant = make_tenant_with_projects()
    replayed(pair)
    with replicas.unit_of_work():
        assert read_on_standby() is True
        with transaction.atomic():  # a service's transaction: its reads may precede a write
            assert read_on_standby() is False
        assert read_on_standby() is True
        with tenant_context(tenant):  # a tenant context alone is no such transaction
            assert names_and_where() == (set(), set())
            assert read_on_standby() is True
            Project.objects.create(tenant=tenant, name="written by the job")
        assert read_on_standby() is False  # after the write's commit, too
    with replicas.unit_of_work(on_primary=True):
        assert read_on_standby() is False


def make_staff_member(tenant: Tenant) -> User:
    user = User.objects.create_user(
        email=f"{uuid.uuid4().hex[:8]}@example.com", password=PASSWORD, name="Staff", is_staff=True
    )
    with tenant_context(tenant):
        Membership.objects.create(tenant=tenant, user=user, role="owner")
    return user


def test_admin_pages_read_on_the_standby_until_a_form_is_posted(pair):
    tenant = make_tenant_with_projects("admin-visible")
    user = make_staff_member(tenant)
    client = Client()
    client.force_login(user)
    with tenant_context(tenant):
        project = Project.objects.get(tenant=tenant, name="admin-visible")
    replayed(pair)
    standby, primary = connections["replica_1"], connections["default"]
    for url in ("/admin/documents/project/", f"/admin/documents/project/{project.pk}/change/"):
        with CaptureQueriesContext(standby) as on_standby:
            response = client.get(url)
        assert response.status_code == 200, url
        assert b"admin-visible" in response.content
        assert any('"projects"' in query["sql"] for query in on_standby.captured_queries), url
    with CaptureQueriesContext(standby) as on_standby, CaptureQueriesContext(primary) as on_primary:
        response = client.post("/admin/documents/project/", {})
    assert response.status_code == 200
    assert b"admin-visible" in response.content
    assert on_standby.captured_queries == []
    assert any('"projects"' in query["sql"] for query in on_primary.captured_queries)


def test_chunk_search_runs_on_the_standby_with_its_search_settings(pair, file_storages):
    from documents import search, services

    tenant, other = make_tenant_with_projects(), make_tenant_with_projects()
    for owner, text in ((tenant, "replicated harbour cranes"), (other, "harbour cranes of B")):
        services.document_ingest(tenant=owner, title="knowledge", text=text)
    replayed(pair)
    standby = connections["replica_1"]
    with replicas.unit_of_work(read_only=True), CaptureQueriesContext(standby) as on_standby:
        results = search.chunk_search(tenant=tenant, query="harbour cranes", k=5)
        # The search log's row, written on the primary, pins no read after it there.
        assert read_on_standby()
    assert [result.content for result in results] == ["replicated harbour cranes"]
    sent = [query["sql"] for query in on_standby.captured_queries]
    # The HNSW settings went to the transaction the search ran in, on the standby.
    assert any("hnsw.ef_search" in sql for sql in sent)
    assert any('FROM "chunks"' in sql for sql in sent)
    # The log went to the primary (a standby's read-only transaction would refuse it).
    assert not any("search_queries" in sql for sql in sent)
    # Read as an owner: a search without a user is read by owners and admins only.
    with tenant_context(tenant, user=make_member(tenant, "log-reader@example.com")):
        [logged] = SearchQuery.objects.using("default").values_list("query", "chunk_ids")
    assert logged == ("harbour cranes", [results[0].chunk_id])


def wait_for_state(alias: str, wanted, seconds: float = 15) -> replicas.ReplicaState:
    deadline = time.monotonic() + seconds
    while True:
        state = replicas.replica_state(alias, fresh=True)
        if wanted(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_a_standby_lagging_past_the_bound_is_skipped(pair, settings):
    primary, standby = pair
    settings.DATABASE_REPLICA_MAX_LAG = 0.5
    tenant = make_tenant_with_projects("before the pause")
    replayed(pair)
    assert wait_for_state("replica_1", lambda s: s.usable).lag < 0.5  # idle: not lagging
    with superuser_connection(standby) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            with tenant_context(tenant):
                Project.objects.create(tenant=tenant, name="not replayed yet")
            state = wait_for_state("replica_1", lambda s: not s.usable)
            print(f"paused replay: {state.describe()}")
            assert state.lag > 0.5 and "DATABASE_REPLICA_MAX_LAG" in state.problem
            with replicas.unit_of_work(read_only=True), tenant_context(tenant):
                assert names_and_where() == ({"before the pause", "not replayed yet"}, {False})
            with pytest.raises(ServiceUnavailable, match="replica_1: .* s behind"):
                ReplicasLag().run()
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    replayed(pair)
    assert wait_for_state("replica_1", lambda s: s.usable).usable
    with replicas.unit_of_work(read_only=True), tenant_context(tenant):
        assert names_and_where()[1] == {True}


def test_a_fresh_measurement_waits_out_wal_received_but_not_yet_replayed(pair):
    """After a quiet spell, new WAL reads as "behind by the age of the last replayed
    commit" until it is replayed; the health check's measurement waits that moment out
    instead of reporting a standby that keeps up as seconds behind."""
    primary, standby = pair
    make_tenant_with_projects("a while ago")
    replayed(pair)
    time.sleep(1.5)  # the last commit the standby replayed is now 1.5 s old
    with superuser_connection(standby) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
                time.sleep(0.01)
            make_tenant_with_projects("just now")
            with superuser_connection(primary) as on_primary:
                (written,) = on_primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            while not conn.execute(
                "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", [written]
            ).fetchone()[0]:
                time.sleep(0.01)
            # Received, not replayed: replay resumes while the measurement waits.
            resume = threading.Timer(0.1, resume_replay, [standby])
            resume.start()
            state = replicas.replica_state("replica_1", fresh=True)
            resume.join()
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    print(f"received, replayed after the pause: {state.describe()}")
    assert state.usable and state.lag < 1.0, state.describe()


def resume_replay(standby: str) -> None:
    with superuser_connection(standby) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")


def test_a_stopped_standby_leaves_reads_to_the_primary_and_the_other_standby(pair):
    primary, _ = pair
    tenant = make_tenant_with_projects("seen everywhere")
    with standby_of(primary) as second, extra_replica("replica_2", second.socket_dir):
        replayed((primary, second.socket_dir))
        check = ReplicasLag()
        check.run()
        assert re.fullmatch(
            f"OK: replica_1: {KEEPING_UP}; replica_2: {KEEPING_UP}", check.pretty_status()
        )
        second.stop()
        state = wait_for_state("replica_2", lambda s: not s.usable)
        assert state.problem == "unreachable"
        check.run()  # one of two down: reported, still healthy
        assert re.fullmatch(
            f"OK: replica_1: {KEEPING_UP}; replica_2: unreachable", check.pretty_status()
        )
        print(f"one standby stopped: {check.pretty_status()}")
        with override_aliases(["replica_2"]):
            started = time.monotonic()
            with replicas.unit_of_work(read_only=True), tenant_context(tenant):
                assert names_and_where() == ({"seen everywhere"}, {False})
            print(f"fell back to the primary in {time.monotonic() - started:.2f} s")
            with pytest.raises(ServiceUnavailable, match="no replica can take reads"):
                ReplicasLag().run()


def override_aliases(aliases: list[str]):
    from django.test import override_settings

    return override_settings(DATABASE_REPLICA_ALIASES=aliases)


def test_health_json_reports_each_replicas_lag_and_no_host(pair):
    primary, standby = pair
    replayed(pair)
    response = Client().get("/health/", {"format": "json"})
    body = response.json()
    print(f"/health/ ReplicasLag: {body['replicas_lag']}")
    assert re.fullmatch(f"OK: replica_1: {KEEPING_UP}", body["replicas_lag"])
    for secret in (primary, standby):
        assert secret not in json.dumps(body)
