"""The audit trail (docs/security.md, "Audit trail"): written by PostgreSQL, append-only,
hash-chained per tenant after commit by `manage.py audit_seal`, verified by
`manage.py audit_verify`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from core.db.audit import AUDIT_TRIGGER, GLOBAL_AUDITED_TABLES, GLOBAL_EVENTS, TENANT_EVENTS
from core.db.connections import owner_connection
from core.ops.distribution import read_tables
from documents.models import Chunk, Document, Project
from tenancy import audit
from tenancy.audit import audit_seal, audit_verify
from tenancy.context import system_context, tenant_context
from tenancy.models import AuditEvent, GlobalAuditEvent, Membership, Tenant, User
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_tenant_rows
from tests.locks import in_thread, run_together

EVENT_TABLES = {TENANT_EVENTS, GLOBAL_EVENTS}


def auditor() -> User:
    """Who reads a tenant's events here: an active superuser, who sees every tenant's
    (members other than owners and admins read none). A user, not a member: making one
    writes to the global chain, never to a tenant's."""
    email = "auditor@example.com"
    return User.objects.filter(email=email).first() or User.objects.create_superuser(email=email)


def events(tenant, **filters) -> list[AuditEvent]:
    """The tenant's events in the order they were written (sealed or not)."""
    with tenant_context(tenant, user=auditor()):
        return list(
            AuditEvent.objects.filter(tenant=tenant, **filters).order_by("created_at", "id")
        )


def sealed_chain(tenant) -> list[AuditEvent]:
    """The tenant's sealed events in chain order."""
    with tenant_context(tenant, user=auditor()):
        return list(AuditEvent.objects.filter(tenant=tenant, hash__isnull=False).order_by("seq"))


def assert_chain(recorded: list[AuditEvent], length: int) -> None:
    assert [event.seq for event in recorded] == list(range(1, length + 1))
    assert recorded[0].prev_hash is None
    assert all(b.prev_hash == a.hash for a, b in zip(recorded, recorded[1:], strict=False))


@contextmanager
def open_audited_transaction(tenant, name: str) -> Iterator[None]:
    """A project inserted by another connection in a transaction left open for the block
    (its event written, uncommitted), committed when the block ends."""
    written, release = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def write() -> None:
        with tenant_context(tenant):
            Project.objects.create(tenant=tenant, name=name)
            written.set()
            assert release.wait(60), "the test never released the open transaction"

    thread = in_thread(write, errors)
    try:
        assert written.wait(60), errors
        yield
    finally:
        release.set()
        thread.join()
    assert errors == []


def test_every_tenant_table_and_global_table_is_audited(db):
    """From the catalog: a new tenant table without AuditTable fails here."""
    with connection.cursor() as cursor:
        tables = read_tables(cursor)
        cursor.execute(
            "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = %s AND t.tgparentid = 0",
            [AUDIT_TRIGGER],
        )
        audited = {name for (name,) in cursor.fetchall()}
    tenant_tables = {name for name, table in tables.items() if table.tenant_column is not None}
    expected = (tenant_tables - EVENT_TABLES) | set(GLOBAL_AUDITED_TABLES)
    assert {"projects", "chunks", "memberships", "users"} <= expected
    assert expected - audited == set(), "tables whose writes are not audited"


def test_insert_update_delete_are_recorded_with_their_changes(tenant_a):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Atlas")
        pk = project.pk
        project.name = "Atlas 2"
        project.save(update_fields=["name"])
        # Only updated_at would change: nothing to record.
        Project.objects.filter(pk=project.pk).update(name="Atlas 2")
        project.delete()
    recorded = events(tenant_a, table_name="projects", row_id=pk)
    assert [event.action for event in recorded] == ["insert", "update", "delete"]
    assert recorded[0].changes["new"]["name"] == "Atlas"
    assert recorded[1].changes == {"old": {"name": "Atlas"}, "new": {"name": "Atlas 2"}}
    assert recorded[2].changes["old"]["name"] == "Atlas 2"
    # Written unsealed: the chain is extended after commit, by audit_seal.
    assert [(e.seq, e.prev_hash, e.hash) for e in recorded] == [(None, None, None)] * 3


def test_long_text_and_vectors_are_recorded_as_their_sha256(tenant_a):
    rows = make_tenant_rows(tenant_a)
    long_text = "word " * 1000
    with tenant_context(tenant_a):
        chunk = Chunk.objects.create(
            tenant=tenant_a,
            document=rows[Document],
            ordinal=42,
            content=long_text,
            embedding=[0.5] * 1536,
            embedding_model="test",
        )
    (event,) = events(tenant_a, table_name="chunks", row_id=chunk.pk)
    new = event.changes["new"]
    assert new["content"] == "sha256:" + hashlib.sha256(long_text.encode()).hexdigest()
    assert new["embedding"].startswith("sha256:")
    assert "search_vector" not in new
    assert new["ordinal"] == 42


def test_bulk_updates_and_raw_sql_are_recorded(tenant_a):
    with tenant_context(tenant_a):
        projects = Project.objects.bulk_create(
            [Project(tenant=tenant_a, name=f"p{n}") for n in range(3)]
        )
        Project.objects.filter(tenant=tenant_a).update(status="in_progress")
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE projects SET name = 'raw' WHERE tenant_id = %s AND id = %s",
                [tenant_a.pk, projects[0].pk],
            )
    recorded = events(tenant_a, table_name="projects")
    assert sum(event.action == "insert" for event in recorded) == 3
    bulk = [e for e in recorded if e.changes.get("new", {}).get("status") == "in_progress"]
    assert len(bulk) == 3 and all(e.action == "update" for e in bulk)
    raw = [e for e in recorded if e.changes.get("new") == {"name": "raw"}]
    assert [e.row_id for e in raw] == [projects[0].pk]


def test_users_and_tenants_go_to_the_global_chain_without_the_password(db):
    from tenancy.models import User

    user = User.objects.create_user(email="dora@example.com", password="x" * 12, name="Dora")
    (event,) = GlobalAuditEvent.objects.filter(table_name="users", row_id=user.pk)
    assert event.changes["new"]["email"] == "dora@example.com"
    assert event.changes["new"]["password"].startswith("sha256:")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_the_runtime_role_cannot_update_delete_or_truncate_events(table, tenant_a):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="kept")
    name = sql.Identifier(table)
    statements = [
        sql.SQL("UPDATE {} SET actor = 'forged'").format(name),
        sql.SQL("DELETE FROM {}").format(name),
        sql.SQL("TRUNCATE {}").format(name),
    ]
    for statement in statements:
        with pytest.raises(DatabaseError, match="permission denied"):
            with tenant_context(tenant_a), connection.cursor() as cursor:
                cursor.execute(statement)
    assert events(tenant_a)


@pytest.mark.django_db(transaction=True)
def test_not_even_the_owner_updates_or_deletes_an_event(tenant_a):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="kept")
    for statement in ("UPDATE audit_events SET actor = 'forged'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"):
            with system_context("test: tamper"), connection.cursor() as cursor:
                cursor.execute(statement)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_the_owner_may_seal_an_unsealed_event_once_and_change_nothing_else(table, tenant_a):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="sealed once")
    target = sql.SQL(
        "(SELECT id FROM {} WHERE hash IS NULL ORDER BY created_at DESC, id DESC LIMIT 1)"
    ).format(sql.Identifier(table))

    def update(assignments: str) -> None:
        with system_context("test: seal by hand"), connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("UPDATE {} SET {} WHERE id = {}").format(
                    sql.Identifier(table), sql.SQL(assignments), target
                )
            )

    refused = [
        # Not a seal: another column changes with the chain's.
        "seq = 1, hash = repeat('a', 64), actor = 'forged'",
        # Half a seal: a hash without its place in the chain.
        "hash = repeat('a', 64)",
        # A first event (seq 1) has no previous hash; a later one has one.
        "seq = 2, hash = repeat('a', 64)",
    ]
    for assignments in refused:
        with pytest.raises(DatabaseError, match="append-only"):
            update(assignments)
    # What audit_seal does, done by hand: let through.
    update("seq = 1, hash = repeat('a', 64)")
    with system_context("test: read"), connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT id FROM {} WHERE hash = repeat('a', 64)").format(sql.Identifier(table))
        )
        (sealed_id,) = cursor.fetchone()
    # A second seal of a sealed event is refused, even one that changes nothing else.
    with pytest.raises(DatabaseError, match="append-only"):
        with system_context("test: reseal"), connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("UPDATE {} SET seq = 1, hash = repeat('b', 64) WHERE id = %s").format(
                    sql.Identifier(table)
                ),
                [sealed_id],
            )


@pytest.mark.django_db(transaction=True)
def test_an_admin_request_records_its_user_actor_and_request_id(client, tenant_a, alice):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Before")
    logged_in(client, alice)
    response = client.post(
        admin_url(Project, "change", project.pk),
        {"name": "After", "status": "draft", "current_step": 1, "language": "en",
         "metadata": "{}"},
        headers={"X-Request-ID": "req-test-1"},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    assert response["X-Request-ID"] == "req-test-1"
    (event,) = [e for e in events(tenant_a, row_id=project.pk) if e.action == "update"]
    assert event.changes["new"]["name"] == "After"
    assert (event.actor, event.actor_user_id, event.request_id) == ("admin", alice.pk, "req-test-1")


@pytest.mark.django_db(transaction=True)
def test_a_system_job_is_recorded_as_job_with_its_reason(tenant_a):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Old")
    with system_context("purge test"):
        Project.objects.filter(tenant=tenant_a, pk=project.pk).update(name="Purged")
    (event,) = [e for e in events(tenant_a, row_id=project.pk) if e.action == "update"]
    assert (event.actor, event.actor_user_id) == ("job:purge test", None)
    service = events(tenant_a, row_id=project.pk, action="insert")[0]
    assert service.actor == "service"


@pytest.mark.django_db(transaction=True)
def test_audit_verify_passes_then_names_the_event_tampered_with(tenant_a, tenant_b, capsys):
    make_tenant_rows(tenant_a)
    make_tenant_rows(tenant_b)
    # Sealed first, by the command itself.
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert f"ok      tenant {tenant_a.slug}: {len(events(tenant_a))} events" in out
    assert "0 broken" in out and "unsealed" not in out
    victim = sealed_chain(tenant_a)[2]
    # As the owner, the trigger that refuses updates turned off for the change: what a
    # superuser could do. The chain still tells.
    with owner_connection(), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.rls_bypass', 'on', true)")
        cursor.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_append_only")
        cursor.execute(
            "UPDATE audit_events SET actor = 'someone else' WHERE tenant_id = %s AND id = %s",
            [tenant_a.pk, victim.pk],
        )
        cursor.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_append_only")
    with pytest.raises(CommandError, match="does not verify"):
        call_command("audit_verify")
    err = capsys.readouterr().err
    assert f"BROKEN  tenant {tenant_a.slug}: event {victim.pk} (seq {victim.seq}" in err
    assert "hash does not match" in err
    call_command("audit_verify", "--tenant", tenant_b.slug)
    with pytest.raises(CommandError, match="--tenant: No tenant"):
        call_command("audit_verify", "--tenant", "nobody")


@pytest.mark.django_db(transaction=True)
def test_the_chain_holds_under_eight_concurrent_writers(tenant_a):
    writes_each = 5

    def writer(n: int):
        def write() -> None:
            for i in range(writes_each):
                with tenant_context(tenant_a):
                    Project.objects.create(tenant=tenant_a, name=f"w{n}-{i}")

        return write

    assert run_together([writer(n) for n in range(8)]) == []
    assert audit_seal().sealed[f"tenant {tenant_a.slug}"] == 8 * writes_each
    assert_chain(sealed_chain(tenant_a), 8 * writes_each)
    call_command("audit_verify", "--tenant", tenant_a.slug)


def write_while_blocked_fails(tenant, name: str) -> None:
    """A project written with short timeouts: a lock wait fails instead of hanging."""
    with tenant_context(tenant), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'")
        Project.objects.create(tenant=tenant, name=name)


@pytest.mark.django_db(transaction=True)
def test_a_writer_commits_while_another_of_its_tenant_holds_an_open_audited_transaction(
    tenant_a,
):
    with open_audited_transaction(tenant_a, "still open"):
        # Before sealing moved out of the trigger, this waited for the open
        # transaction's advisory lock on the tenant until its commit.
        write_while_blocked_fails(tenant_a, "committed meanwhile")
        assert [e.changes["new"]["name"] for e in events(tenant_a)] == ["committed meanwhile"]
    assert {e.changes["new"]["name"] for e in events(tenant_a)} == {
        "committed meanwhile",
        "still open",
    }


@pytest.mark.django_db(transaction=True)
def test_an_event_uncommitted_during_a_seal_is_sealed_by_the_next_one(tenant_a, capsys):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="first")
    with open_audited_transaction(tenant_a, "in flight"):
        write_while_blocked_fails(tenant_a, "second")
        assert audit_seal(tenant_slug=tenant_a.slug).sealed == {f"tenant {tenant_a.slug}": 2}
    # Committed since that seal: verified as far as sealed, the rest counted and named.
    report = audit_verify(tenant_slug=tenant_a.slug, seal=False).report()
    assert report[0].startswith(f"ok      tenant {tenant_a.slug}: 2 events, head ")
    assert report[1].startswith(f"unsealed tenant {tenant_a.slug}: 1 events not verified yet")
    assert audit_seal(tenant_slug=tenant_a.slug).sealed == {f"tenant {tenant_a.slug}": 1}
    recorded = sealed_chain(tenant_a)
    assert_chain(recorded, 3)
    assert recorded[-1].changes["new"]["name"] == "in flight"
    call_command("audit_verify", "--tenant", tenant_a.slug)
    assert "unsealed" not in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_sealing_is_idempotent_and_leaves_seq_gapless_across_seals(tenant_a, tenant_b):
    auditor()  # the reader, made (and its global event written) before the seals
    for round, count in enumerate((3, 2)):
        with tenant_context(tenant_a):
            for n in range(count):
                Project.objects.create(tenant=tenant_a, name=f"r{round}-{n}")
        assert audit_seal().sealed[f"tenant {tenant_a.slug}"] == count
    again = audit_seal()
    assert again.sealed == {} and again.report() == ["nothing to seal"]
    assert_chain(sealed_chain(tenant_a), 5)
    assert [e.changes["new"]["name"] for e in sealed_chain(tenant_a)] == [
        "r0-0", "r0-1", "r0-2", "r1-0", "r1-1",
    ]  # fmt: skip
    assert all(e.sealed for e in events(tenant_a))
    assert GlobalAuditEvent.objects.filter(hash__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_sealers_leave_one_unbroken_chain(tenant_a, monkeypatch):
    monkeypatch.setattr(audit, "SEAL_BATCH", 3)
    with tenant_context(tenant_a):
        Project.objects.bulk_create([Project(tenant=tenant_a, name=f"p{n}") for n in range(20)])
    sealed: list[int] = []

    def sealer() -> None:
        sealed.append(audit_seal().sealed.get(f"tenant {tenant_a.slug}", 0))

    # Process-wide, as the command runs: each thread's own connection logs in as the
    # owner, and their audit_seal's owner_connection is then a no-op.
    with owner_connection():
        assert run_together([sealer] * 4) == []
    assert sum(sealed) == 20
    assert_chain(sealed_chain(tenant_a), 20)
    call_command("audit_verify", "--tenant", tenant_a.slug)


@pytest.mark.django_db(transaction=True)
def test_the_seal_command_reports_each_chain_and_refuses_an_unknown_tenant(tenant_a, capsys):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="one")
    call_command("audit_seal", "--tenant", tenant_a.slug)
    assert capsys.readouterr().out.splitlines() == [
        f"sealed  tenant {tenant_a.slug}: 1 events",
        "1 events sealed in 1 chains",
    ]
    call_command("audit_seal")
    assert capsys.readouterr().out.splitlines()[-1].endswith("chains")
    call_command("audit_seal")
    assert capsys.readouterr().out.splitlines() == ["nothing to seal"]
    with pytest.raises(CommandError, match="--tenant: No tenant"):
        call_command("audit_seal", "--tenant", "nobody")


def test_a_tenant_cannot_see_another_tenants_events(tenant_a, tenant_b):
    make_tenant_rows(tenant_a)
    with tenant_context(tenant_b):
        assert not AuditEvent.objects.filter(tenant=tenant_a).exists()
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()


def test_a_change_pages_history_opens_the_rows_audit_events(client, tenant_a, tenant_b, alice):
    rows = make_tenant_rows(tenant_a, by=alice)
    make_tenant_rows(tenant_b)
    project = rows[Project]
    logged_in(client, alice)
    response = client.get(admin_url(Project, "history", project.pk))
    assert response.status_code == 302
    assert "table_name=projects" in response["Location"]
    listed = client.get(response["Location"]).context["cl"].result_list
    assert {(e.table_name, e.row_id) for e in listed} == {("projects", project.pk)}
    # The whole log: tenant A's events only, for its owner.
    log = client.get(admin_url(AuditEvent, "changelist")).context["cl"].result_list
    assert log and {event.tenant_id for event in log} == {tenant_a.pk}
    assert client.get(admin_url(GlobalAuditEvent, "changelist")).status_code == 403


def test_editors_do_not_see_the_audit_log(client, tenant_a):
    from tests.factories import make_member

    editor = make_member(tenant_a, "ed@example.com", role="editor", is_staff=True)
    make_tenant_rows(tenant_a)
    logged_in(client, editor)
    response = client.get(admin_url(AuditEvent, "changelist"))
    assert response.status_code == 403
    assert b"auditevent" not in client.get("/admin/").content


@pytest.mark.django_db(transaction=True)
def test_going_back_to_the_chain_in_the_trigger_waits_for_every_event_sealed(tenant_a):
    """tenancy.0006 backwards: refused while an event is unsealed; after a seal, the
    functions of tenancy.0004 extend the sealed chain again, with the same hashes."""
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="unsealed")
    try:
        with pytest.raises(DatabaseError, match="unsealed events: run manage.py audit_seal"):
            call_command("migrate", "tenancy", "0005", verbosity=0)
        audit_seal()
        call_command("migrate", "tenancy", "0005", verbosity=0)
        # A membership, whose table the later migrations leave as it is (going back
        # past tenancy.0006 also takes projects back before their access columns).
        with tenant_context(tenant_a):
            Membership.objects.create(
                tenant=tenant_a, user=User.objects.create_user(email="back@example.com")
            )
        assert_chain(sealed_chain(tenant_a), 2)
        assert audit_verify(tenant_slug=tenant_a.slug, seal=False).ok
    finally:
        call_command("migrate", verbosity=0)
