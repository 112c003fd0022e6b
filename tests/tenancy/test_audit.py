"""The audit trail (docs/security.md, "Audit trail"): written by PostgreSQL, append-only,
hash-chained per tenant, verified by `manage.py audit_verify`."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from core.db.audit import AUDIT_TRIGGER, GLOBAL_AUDITED_TABLES, GLOBAL_EVENTS, TENANT_EVENTS
from core.db.connections import owner_connection
from core.ops.distribution import read_tables
from documents.models import Chunk, Document, Project
from tenancy.context import system_context, tenant_context
from tenancy.models import AuditEvent, GlobalAuditEvent, Tenant
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_tenant_rows
from tests.locks import run_together

EVENT_TABLES = {TENANT_EVENTS, GLOBAL_EVENTS}


def events(tenant, **filters) -> list[AuditEvent]:
    with tenant_context(tenant):
        return list(AuditEvent.objects.filter(tenant=tenant, **filters).order_by("seq"))


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
    assert [event.seq for event in recorded] == sorted(event.seq for event in recorded)


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
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert f"ok      tenant {tenant_a.slug}" in out and "0 broken" in out
    victim = events(tenant_a)[2]
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
    recorded = events(tenant_a)
    assert [event.seq for event in recorded] == list(range(1, 8 * writes_each + 1))
    assert all(b.prev_hash == a.hash for a, b in zip(recorded, recorded[1:], strict=False))
    call_command("audit_verify", "--tenant", tenant_a.slug)


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
