"""The audit trail (docs/security.md, "Audit trail"): written by PostgreSQL, append-only,
hash-chained per tenant after commit by `manage.py audit_seal`, verified by
`manage.py audit_verify`."""

from __future__ import annotations

import hashlib
import importlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg import sql

from core.db.audit import (
    AUDIT_TRIGGER,
    GLOBAL_AUDITED_TABLES,
    GLOBAL_EVENTS,
    TENANT_EVENTS,
    UNAUDITED_TABLES,
)
from core.db.connections import owner_connection
from core.ops.distribution import read_tables
from documents.models import Chunk, Document, Project
from tenancy import audit
from tenancy.audit import audit_seal, audit_verify, changes_sha256, redact_events
from tenancy.context import system_context, tenant_context
from tenancy.models import (
    AuditChainAnchor,
    AuditEvent,
    GlobalAuditEvent,
    Membership,
    Tenant,
    User,
)
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
    expected = (tenant_tables - EVENT_TABLES - set(UNAUDITED_TABLES)) | set(GLOBAL_AUDITED_TABLES)
    assert {"projects", "chunks", "memberships", "users"} <= expected
    assert expected - audited == set(), "tables whose writes are not audited"
    assert set(UNAUDITED_TABLES) <= tenant_tables - audited, "an exemption that is not one"


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


# --- Redaction ------------------------------------------------------------------------------

REDACTED = {"redacted": True}


def tamper(statement: str, params: list) -> None:
    """A change made with the append-only trigger off, as the owner: what a superuser
    could do. The chain must still tell."""
    with owner_connection(), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.rls_bypass', 'on', true)")
        cursor.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_append_only")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_append_only")


def redacted_as_the_erasure_does(**arguments) -> int:
    """In a transaction of the owner's with the bypass, as the erasure services run."""
    with system_context("test: erasure"):
        return redact_events(**arguments)


@pytest.mark.django_db(transaction=True)
def test_an_event_stores_the_sha256_of_its_changes_text(tenant_a):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="digest")
    (event,) = events(tenant_a, row_id=project.pk)
    with system_context("test: read"), connection.cursor() as cursor:
        cursor.execute(
            "SELECT changes::text, changes_sha256 FROM audit_events WHERE tenant_id = %s "
            "AND id = %s",
            [tenant_a.pk, event.pk],
        )
        text, stored = cursor.fetchone()
    assert stored == changes_sha256(text) == hashlib.sha256(text.encode()).hexdigest()
    assert event.redacted_at is None


@pytest.mark.django_db(transaction=True)
def test_redacted_events_keep_their_row_digest_and_hash_and_the_chains_verify(
    tenant_a, tenant_b, alice
):
    """A row's events and a user's events, sealed and unsealed, in both chains; the other
    tenant's events and the user's other rows' are left as they are."""
    with tenant_context(tenant_a, user=alice):
        erased = Project.objects.create(tenant=tenant_a, name="Erase me")
        kept = Project.objects.create(tenant=tenant_a, name="Keep me")
    with tenant_context(tenant_b):
        other = Project.objects.create(tenant=tenant_b, name="Erase me")
    audit_seal()
    before = {e.pk: e for e in sealed_chain(tenant_a)}
    with tenant_context(tenant_a, user=alice):
        erased.name = "Erase me too"
        erased.save(update_fields=["name"])  # unsealed when redacted
    unsealed = [e for e in events(tenant_a, row_id=erased.pk) if not e.sealed]
    assert len(unsealed) == 1
    count = redacted_as_the_erasure_does(
        rows=[("projects", erased.pk), ("users", alice.pk)], tenant_id=tenant_a.pk
    )
    assert count == 2 + GlobalAuditEvent.objects.filter(row_id=alice.pk).count()
    recorded = events(tenant_a, row_id=erased.pk)
    assert all(e.changes == REDACTED and e.redacted_at is not None for e in recorded)
    for event in recorded:
        if event.pk in before:
            original = before[event.pk]
            assert (event.seq, event.prev_hash, event.hash, event.changes_sha256) == (
                original.seq, original.prev_hash, original.hash, original.changes_sha256,
            )  # fmt: skip
    assert events(tenant_a, row_id=kept.pk)[0].changes["new"]["name"] == "Keep me"
    assert events(tenant_b, row_id=other.pk)[0].changes["new"]["name"] == "Erase me"
    assert all(e.changes == REDACTED for e in GlobalAuditEvent.objects.filter(row_id=alice.pk))
    # The unsealed one is sealed over its original changes' digest, stored at its write.
    assert unsealed[0].changes_sha256 == recorded[-1].changes_sha256
    assert audit_seal().sealed[f"tenant {tenant_a.slug}"] == 1
    assert audit_verify().ok
    # By actor: every event alice acted, in tenant a's chain; twice changes nothing more.
    assert redacted_as_the_erasure_does(actor_user_id=alice.pk) == 1
    assert events(tenant_a, row_id=kept.pk)[0].changes == REDACTED
    assert redacted_as_the_erasure_does(actor_user_id=alice.pk, rows=[("projects", kept.pk)]) == 0
    assert audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_an_erasures_own_delete_events_are_redacted_in_its_transaction(tenant_a):
    """The delete trigger records the old values; redacted before the commit, they are
    never readable in audit_events. Rolled back with the erasure, nothing changes."""
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Canary 7f3a")
    for commit in (False, True):
        with system_context("test: erasure"):
            savepoint = transaction.savepoint()
            Project.objects.filter(tenant=tenant_a, pk=project.pk).delete()
            assert redact_events(rows=[("projects", project.pk)], tenant_id=tenant_a.pk) == 2
            if not commit:
                transaction.savepoint_rollback(savepoint)
        recorded = events(tenant_a, row_id=project.pk)
        if not commit:
            assert [e.action for e in recorded] == ["insert"]
            assert recorded[0].changes["new"]["name"] == "Canary 7f3a"
    assert [e.action for e in recorded] == ["insert", "delete"]
    assert all(e.changes == REDACTED for e in recorded)
    with system_context("test: scan"), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM audit_events WHERE changes::text LIKE '%%Canary 7f3a%%'"
        )
        assert cursor.fetchone()[0] == 0
    assert audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_tampering_with_a_redacted_event_is_still_detected(tenant_a):
    with tenant_context(tenant_a):
        for name in ("one", "two", "three"):
            Project.objects.create(tenant=tenant_a, name=name)
    audit_seal()
    victim = sealed_chain(tenant_a)[1]
    redacted_as_the_erasure_does(rows=[("projects", victim.row_id)], tenant_id=tenant_a.pk)
    assert audit_verify().ok
    where = f"event {victim.pk} (seq {victim.seq}"
    changes = [
        # Another digest: the hash covers it.
        ("changes_sha256 = repeat('0', 64)", "hash does not match its content"),
        # Another hash.
        ("hash = repeat('0', 64)", "hash does not match its content"),
        # Values put back behind the redaction mark.
        ("""changes = '{"new": {"name": "forged"}}'""", "not the redaction marker"),
        # Unredacted again with other values: the digest tells.
        (
            """redacted_at = NULL, changes = '{"new": {"name": "forged"}}'""",
            "changes do not match their changes_sha256",
        ),
    ]
    with system_context("test: read"), connection.cursor() as cursor:
        cursor.execute(
            "SELECT changes_sha256, hash, redacted_at FROM audit_events WHERE tenant_id = %s "
            "AND id = %s",
            [tenant_a.pk, victim.pk],
        )
        stored = cursor.fetchone()
    restore = (
        "UPDATE audit_events SET changes = '{\"redacted\": true}', changes_sha256 = %s, "
        "hash = %s, redacted_at = %s WHERE tenant_id = %s AND id = %s"
    )
    for assignment, problem in changes:
        tamper(
            f"UPDATE audit_events SET {assignment} WHERE tenant_id = %s AND id = %s",
            [tenant_a.pk, victim.pk],
        )
        (chain,) = audit_verify(tenant_slug=tenant_a.slug, seal=False).chains
        tamper(restore, [*stored, tenant_a.pk, victim.pk])
        assert chain.broken is not None and chain.broken.startswith(where), assignment
        assert problem in chain.broken, assignment
    assert audit_verify(tenant_slug=tenant_a.slug, seal=False).ok


@pytest.mark.django_db(transaction=True)
def test_only_a_whole_redaction_is_let_through_and_only_once(tenant_a):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="once")
    refused = [
        # Another value instead of the marker.
        """changes = '{"new": {"name": "other"}}', redacted_at = now()""",
        # The marker without redacted_at.
        """changes = '{"redacted": true}'""",
        # The marker with another column.
        """changes = '{"redacted": true}', redacted_at = now(), actor = 'forged'""",
        # The digest.
        """changes = '{"redacted": true}', redacted_at = now(), changes_sha256 = ''""",
    ]
    statement = "UPDATE audit_events SET {} WHERE tenant_id = %s AND row_id = %s"
    for assignments in refused:
        with pytest.raises(DatabaseError, match="append-only"):
            with system_context("test: redact by hand"), connection.cursor() as cursor:
                cursor.execute(statement.format(assignments), [tenant_a.pk, project.pk])
    assert redacted_as_the_erasure_does(rows=[("projects", project.pk)]) == 1
    with pytest.raises(DatabaseError, match="append-only"):
        with system_context("test: again"), connection.cursor() as cursor:
            cursor.execute(
                statement.format("""changes = '{"redacted": true}', redacted_at = now()"""),
                [tenant_a.pk, project.pk],
            )


@pytest.mark.django_db(transaction=True)
def test_redaction_refuses_bad_input_the_runtime_role_and_no_transaction(tenant_a):
    bad = [
        ({"rows": [("projects", "not a uuid")]}, "rows"),
        ({"rows": ["projects"]}, "rows"),
        ({"actor_user_id": "someone"}, "actor_user_id"),
        ({"rows": [("projects", uuid.uuid4())], "tenant_id": tenant_a.slug}, "tenant_id"),
    ]
    for arguments, field in bad:
        with pytest.raises(ValidationError) as refused, transaction.atomic():
            redact_events(**arguments)
        assert field in refused.value.message_dict
    with pytest.raises(RuntimeError, match="inside the caller's transaction"):
        redact_events(actor_user_id=uuid.uuid4())
    # A tenant's context, as the runtime role: it may not read every event, nor update one.
    with pytest.raises(ImproperlyConfigured, match="owner role"):
        with tenant_context(tenant_a):
            redact_events(actor_user_id=uuid.uuid4())


# --- The migration to digests (tenancy.0008) ---------------------------------------------

DIGESTS = importlib.import_module("tenancy.migrations.0008_audit_erasable_values_and_anchors")


def verified_by_changes_text(tenant) -> int:
    """The tenant's sealed chain checked by the rule before tenancy.0008 (the migration's
    frozen copy), where the tables have no changes_sha256; how many events."""
    with system_context("test: old rule"), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, seq, table_name, row_id, action, actor_user_id, actor, request_id, "
            "created_at, changes::text, prev_hash, hash FROM audit_events "
            "WHERE tenant_id = %s AND seq IS NOT NULL ORDER BY seq",
            [tenant.pk],
        )
        fields = [column.name for column in cursor.description]
        rows = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
    previous = None
    for seq, row in enumerate(rows, start=1):
        row["changes_text"] = row.pop("changes")
        assert (row["seq"], row["prev_hash"]) == (seq, previous)
        assert DIGESTS._hash(previous, DIGESTS.changes_text_rule(row, tenant.pk)) == row["hash"]
        previous = row["hash"]
    return len(rows)


@pytest.mark.django_db(transaction=True)
def test_the_migration_reseals_verified_chains_by_their_digest_and_back(tenant_a):
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="sealed")
    audit_seal()
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="unsealed")
    by_digest = {event.pk: event.hash for event in sealed_chain(tenant_a)}
    try:
        call_command("migrate", "tenancy", "0007", verbosity=0)
        assert verified_by_changes_text(tenant_a) == 1
        with system_context("test: read"), connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, hash FROM audit_events WHERE tenant_id = %s AND seq = 1", [tenant_a.pk]
            )
            first, old_hash = cursor.fetchone()
        assert old_hash != by_digest[first]
        # A chain that does not verify by the old rule: refused, nothing changed.
        tamper("UPDATE audit_events SET actor = 'forged' WHERE id = %s", [first])
        with pytest.raises(RuntimeError, match=f"does not verify at event {first} \\(seq 1"):
            call_command("migrate", "tenancy", "0008", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('audit_chain_anchors')")
            assert cursor.fetchone() == (None,)
        tamper("UPDATE audit_events SET actor = 'service' WHERE id = %s", [first])
        call_command("migrate", "tenancy", "0008", verbosity=0)
        # The same hashes as sealed by digest in the first place; the unsealed one too.
        assert {e.pk: e.hash for e in sealed_chain(tenant_a)} == by_digest
        assert audit_verify().ok
        assert_chain(sealed_chain(tenant_a), 2)
        assert all(e.changes_sha256 for e in events(tenant_a))
    finally:
        call_command("migrate", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_going_back_to_the_chain_in_the_trigger_waits_for_every_event_sealed(tenant_a):
    """tenancy.0006 backwards: refused while an event is unsealed; after a seal, the
    functions of tenancy.0004 extend the sealed chain again, by the rule of then."""
    with tenant_context(tenant_a):
        Project.objects.create(tenant=tenant_a, name="unsealed")
    try:
        call_command("migrate", "tenancy", "0007", verbosity=0)
        with pytest.raises(DatabaseError, match="unsealed events: run manage.py audit_seal"):
            call_command("migrate", "tenancy", "0005", verbosity=0)
        call_command("migrate", "tenancy", verbosity=0)
        audit_seal()
        call_command("migrate", "tenancy", "0005", verbosity=0)
        # A membership, whose table the later migrations leave as it is (going back
        # past tenancy.0006 also takes projects back before their access columns).
        with tenant_context(tenant_a):
            Membership.objects.create(
                tenant=tenant_a, user=User.objects.create_user(email="back@example.com")
            )
        assert verified_by_changes_text(tenant_a) == 2
    finally:
        call_command("migrate", verbosity=0)
    assert audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_redacted_event_stops_the_migration_going_back(tenant_a):
    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="redacted")
    redacted_as_the_erasure_does(rows=[("projects", project.pk)])
    try:
        with pytest.raises(RuntimeError, match="1 audit events are redacted .* cannot be undone"):
            call_command("migrate", "tenancy", "0007", verbosity=0)
    finally:
        # The later migrations that depend on tenancy.0008 (the search log's) were
        # unapplied before it refused: put them back for the tests that follow.
        call_command("migrate", verbosity=0)
    assert audit_verify().ok


# --- Anchors (retention's cuts, tests/retention/test_audit_retention.py) ------------------


@pytest.mark.django_db(transaction=True)
def test_a_chain_is_verified_through_its_anchor_while_a_cut_is_under_way(tenant_a):
    """The anchor written and the events below it not all deleted yet (a run stopped half
    way): the events left are verified from the first, through the anchor's event; an
    anchor whose hash is not its event's is a break."""
    with tenant_context(tenant_a):
        for name in ("one", "two", "three", "four"):
            Project.objects.create(tenant=tenant_a, name=name)
    audit_seal()
    chain = sealed_chain(tenant_a)
    with system_context("test: anchor"), connection.cursor() as cursor:
        anchor = AuditChainAnchor.objects.create(
            tenant=tenant_a, seq=3, hash=chain[2].hash, cut_at=timezone.now()
        )
        cursor.execute("DELETE FROM audit_events WHERE tenant_id = %s AND seq = 1", [tenant_a.pk])
    (result,) = audit_verify(tenant_slug=tenant_a.slug, seal=False).chains
    assert (result.ok, result.first_seq, result.events) == (True, 2, 3)
    with system_context("test: forged anchor"):
        AuditChainAnchor.objects.filter(pk=anchor.pk).update(hash="0" * 64)
    (result,) = audit_verify(tenant_slug=tenant_a.slug, seal=False).chains
    assert result.broken.startswith(f"event {chain[2].pk} (seq 3")
    assert "not the one the chain's anchor holds" in result.broken
