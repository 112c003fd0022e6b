"""Offboarding a tenant (issue 21, point 2 and 4; erasure.services.erase_tenant and
`manage.py erase_tenant`).

transaction=True throughout: the erasure runs as the owner under system_context, which
opens its own transaction, and its files go only after that commits.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, OperationalError, connection
from django.utils import timezone

from core.db.audit import ERASING_TENANT_SETTING
from core.hashing import sha256_hex
from documents.models import Project
from documents.services import documents_sweep_orphan_files, project_create
from erasure.models import ErasureReceipt
from erasure.services import erase_tenant
from exports.services import exports_purge_expired
from tenancy.context import system_context, tenant_context
from tenancy.models import AuditEvent, Membership, Tenant, User
from tests.erasure.canary import find_canary, put_canary
from tests.factories import make_member, tenant_id_on_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]

# How long the crash test waits for the erasure to block, and for the recovery.
DEADLINE_SECONDS = 120


def _tenant(label: str, worker: int = 0) -> Tenant:
    tenant_id = tenant_id_on_worker(worker)
    slug = f"{label}-{tenant_id.hex[-12:]}"
    return Tenant.objects.create(id=tenant_id, name=slug, slug=slug)


def _canary() -> str:
    return f"canary{uuid.uuid4().hex}"


@pytest.fixture
def two_filled_tenants():
    """Tenants A and B (on different Citus workers where there are), each with its own
    canary in a row of every kind and in its files, and an owner."""
    made = []
    for label, worker in (("erased", 0), ("kept", 1)):
        tenant = _tenant(label, worker)
        owner = make_member(tenant, f"owner-{uuid.uuid4().hex[:8]}@example.com", "owner")
        canary = _canary()
        made.append((tenant, canary, owner, put_canary(tenant, canary, by=owner)))
    return made


def _counts(tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows of the tenant in every table with a tenant_id, read under the bypass."""
    with system_context("test: count a tenant's rows"), connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition AND a.attname = 'tenant_id' ORDER BY 1"
        )
        tables = [row[0] for row in cursor.fetchall()]
        counts = {}
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE tenant_id = %s', [tenant_id])
            counts[table] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM tenants WHERE id = %s", [tenant_id])
        counts["tenants"] = cursor.fetchone()[0]
    return counts


def _files_of(folders, tenant_id: uuid.UUID) -> list[str]:
    found = []
    for root in (folders.media, folders.exports):
        if root.exists():
            found += [
                str(path.relative_to(root))
                for path in root.rglob("*")
                if path.is_file() and str(tenant_id) in path.parts
            ]
    return sorted(found)


def test_erasing_a_tenant_removes_every_canary_of_it_and_none_of_the_other(
    two_filled_tenants, file_storages, capsys
):
    (erased, canary_a, _, made_a), (kept, canary_b, _, _) = two_filled_tenants
    before_a, before_b = find_canary(canary_a), find_canary(canary_b)
    kept_counts, erased_counts = _counts(kept.pk), _counts(erased.pk)
    assert erased_counts["embedding_cache"] > 0, "its ingestion cached its chunks' vectors"
    with capsys.disabled():
        print(
            f"\ncanary scan before, tenant A: {before_a}\ncanary scan before, tenant B: {before_b}"
        )
    assert "chunks.content" in before_a and "conversation_messages.content" in before_a
    assert any(place.startswith("file:exports:") for place in before_a)
    assert any(place.startswith("chunk_search:") for place in before_a)

    receipt = erase_tenant(slug=erased.slug, requested_by="ticket 4711")

    after_a, after_b = find_canary(canary_a), find_canary(canary_b)
    with capsys.disabled():
        print(f"canary scan after, tenant A: {after_a}\ncanary scan after, tenant B: {after_b}")
    # Its own templates' and its tenants row's events stay in the global chain, which is
    # never cut, without their values.
    assert after_a == []
    assert after_b == before_b
    assert _counts(kept.pk) == kept_counts
    left = {table: count for table, count in _counts(erased.pk).items() if count}
    # Its receipts, the row builder's and this erasure's: the proof outlives its tenant.
    assert left == {"erasure_receipts": 2}
    assert _files_of(file_storages, erased.pk) == []
    # The owner stays a user: people may belong to other tenants.
    assert User.objects.filter(pk=made_a["rows"][Membership].user_id).exists()

    with system_context("test: read the receipt"):
        stored = ErasureReceipt.objects.get(pk=receipt.pk)
    assert (stored.tenant_id, stored.subject_id, stored.subject_type) == (
        erased.pk,
        erased.pk,
        "tenant",
    )
    assert stored.subject_sha256 == sha256_hex(erased.slug)
    assert stored.requested_by == "ticket 4711"
    touched = dict(stored.rows_touched)
    assert touched.pop("files") == 2  # the ingested document's, the export's
    assert touched.pop("django_admin_log") == 1  # the project's change in the admin
    # Its rows were made without the worker's queue: no job (test_the_tenants_jobs_...).
    assert touched.pop("procrastinate_jobs") == 0
    # Every table with the tenant's rows, as many as there were; the audit events with
    # those the erasure's own deletes wrote.
    assert touched.pop("audit_events") > erased_counts.pop("audit_events")
    assert touched == {
        table: count for table, count in erased_counts.items() if table != "erasure_receipts"
    }
    assert stored.removed_sha256 == {
        "files": sorted([made_a["document"].sha256, made_a["export"].sha256])
    }


def test_the_command_erases_and_prints_the_receipt(two_filled_tenants, file_storages):
    (erased, canary_a, _, _), (kept, canary_b, _, _) = two_filled_tenants
    out = io.StringIO()
    call_command("erase_tenant", erased.slug, requested_by="ops", yes=True, stdout=out)
    text = out.getvalue()
    assert f"  tenant        {erased.pk}" in text
    assert "  chunks" in text and "  files" in text
    assert text.splitlines()[-1].startswith("Erased ")
    assert find_canary(canary_a) == []
    assert find_canary(canary_b) != []
    # The other tenants' chains and the global one still verify.
    call_command("audit_verify", stdout=io.StringIO())


def _everything() -> dict[uuid.UUID, dict[str, int]]:
    with system_context("test: every tenant"):
        ids = list(Tenant.objects.values_list("pk", flat=True))
    return {tenant_id: _counts(tenant_id) for tenant_id in ids}


def test_an_unknown_slug_is_refused_and_nothing_changes(two_filled_tenants):
    before = _everything()
    with pytest.raises(CommandError, match="SLUG: No tenant with the slug 'no-such-tenant'"):
        call_command("erase_tenant", "no-such-tenant", requested_by="ops", yes=True)
    assert _everything() == before
    with system_context("test: receipts"):
        assert not ErasureReceipt.objects.filter(subject_type="tenant").exists()


def test_without_yes_and_without_a_terminal_nothing_is_erased(two_filled_tenants, monkeypatch):
    (erased, *_), _ = two_filled_tenants
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    before = _everything()
    with pytest.raises(CommandError, match="Confirm with --yes"):
        call_command("erase_tenant", erased.slug, requested_by="ops")
    assert _everything() == before


def test_the_command_needs_who_asked(two_filled_tenants):
    (erased, *_), _ = two_filled_tenants
    with pytest.raises(CommandError, match="--requested-by"):
        call_command("erase_tenant", erased.slug, yes=True)
    with pytest.raises(CommandError, match="--requested-by: Who asked"):
        call_command("erase_tenant", erased.slug, requested_by="  ", yes=True)
    assert Tenant.objects.filter(pk=erased.pk).exists()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"requested_by": "ops"}, "slug"),
        ({"slug": "x", "tenant": uuid.uuid4(), "requested_by": "ops"}, "slug"),
        ({"slug": "", "requested_by": "ops"}, "slug"),
        ({"slug": "x", "requested_by": ""}, "requested_by"),
        ({"slug": "x", "requested_by": 7}, "requested_by"),
        ({"slug": "x", "requested_by": "x" * 201}, "requested_by"),
        ({"tenant": "not-an-id", "requested_by": "ops"}, "tenant"),
        ({"tenant": uuid.uuid4(), "requested_by": "ops"}, "tenant"),
        ({"slug": "no-such-tenant", "requested_by": "ops"}, "slug"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field(tenant_a, arguments, field):
    before = _everything()
    with pytest.raises(ValidationError) as raised:
        erase_tenant(**arguments)
    assert set(raised.value.message_dict) == {field}
    assert _everything() == before


def test_a_tenant_given_as_a_row_is_erased(tenant_a, tenant_b):
    receipt = erase_tenant(tenant=tenant_a, requested_by="ops")
    assert receipt.subject_id == tenant_a.pk
    assert not Tenant.objects.filter(pk=tenant_a.pk).exists()
    assert Tenant.objects.filter(pk=tenant_b.pk).exists()


def _delete_events_as_owner(tenant_id: uuid.UUID, erasing: uuid.UUID | None) -> None:
    with system_context("test: delete audit events"), connection.cursor() as cursor:
        if erasing is not None:
            cursor.execute(f"SET LOCAL {ERASING_TENANT_SETTING} TO '{erasing}'")
        cursor.execute("DELETE FROM audit_events WHERE tenant_id = %s", [tenant_id])


def test_the_audit_events_of_a_tenant_that_exists_stay_append_only(tenant_a, tenant_b):
    """The erasure's way through the append-only trigger needs the tenant gone: with the
    setting on (for this tenant or another) the owner still cannot delete an event of a
    tenant that exists."""
    make_member(tenant_a, "member-a@example.com", "owner")
    for erasing in (None, tenant_a.pk, tenant_b.pk):
        with pytest.raises(DatabaseError, match="audit_events is append-only: DELETE refused"):
            _delete_events_as_owner(tenant_a.pk, erasing)
    with system_context("test: count events"):
        assert AuditEvent.objects.filter(tenant=tenant_a).exists()


def test_the_runtime_role_cannot_delete_audit_events_even_with_the_setting(tenant_a):
    make_member(tenant_a, "member-a@example.com", "owner")
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL {ERASING_TENANT_SETTING} TO '{tenant_a.pk}'")
        with pytest.raises(DatabaseError, match="permission denied"):
            cursor.execute("DELETE FROM audit_events WHERE tenant_id = %s", [tenant_a.pk])


def test_files_left_by_a_crash_after_the_commit_are_removed_by_the_orphan_sweeps(
    two_filled_tenants, file_storages, settings, monkeypatch
):
    """The files go after the commit: a process that dies in between (here: the removal
    never runs) leaves folders without rows, which both sweeps remove; tenant B's stay."""
    from erasure.services import tenants

    (erased, *_), (kept, *_) = two_filled_tenants
    monkeypatch.setattr(tenants, "_remove_folders_after_commit", lambda *args: None)
    kept_files = _files_of(file_storages, kept.pk)
    erase_tenant(slug=erased.slug, requested_by="ops")
    assert len(_files_of(file_storages, erased.pk)) == 2

    later = timezone.now() + timedelta(seconds=settings.ORPHAN_FILE_GRACE_SECONDS + 60)
    documents = documents_sweep_orphan_files(now=later)
    exports = exports_purge_expired(now=later)

    assert documents.files_deleted == 1 and exports.orphan_files_deleted == 1
    assert _files_of(file_storages, erased.pk) == []
    assert _files_of(file_storages, kept.pk) == kept_files


# The erasure in a process of its own, on the test database and the test's storages.
ERASER = """
import sys

import django

django.setup()
from django.conf import settings

settings.DATABASES["default"]["NAME"] = sys.argv[1]
settings.STORAGES = {
    **settings.STORAGES,
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": sys.argv[3]}},
    "exports": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": sys.argv[4]}},
}
from erasure.services import erase_tenant

erase_tenant(slug=sys.argv[2], requested_by="crash test")
print("erased", flush=True)
"""


def _owner_session(*, autocommit: bool = False) -> psycopg.Connection:
    """A session of the owner role of its own, outside Django (which the erasure's
    process logs in as too, so this one sees its queries in pg_stat_activity)."""
    owner = django_settings.DATABASE_OWNER
    session = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        user=owner["USER"],
        password=owner["PASSWORD"] or None,
        host=owner["HOST"] or None,
        port=owner["PORT"] or None,
        autocommit=autocommit,
    )
    session.execute("SET idle_in_transaction_session_timeout = 0")
    return session


def _wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if found := condition():
                return found
        except OperationalError:
            connection.close()  # the server is still recovering
        time.sleep(0.2)
    pytest.fail(f"waited {DEADLINE_SECONDS} s for {what}")


def _start_eraser(tmp_path, slug: str, file_storages) -> subprocess.Popen:
    (tmp_path / "eraser.py").write_text(ERASER)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(django_settings.BASE_DIR),
    }
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "eraser.py"), connection.settings_dict["NAME"],
         slug, str(file_storages.media), str(file_storages.exports)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# The statement the erasure is caught waiting at: its last, the receipt's insert.
RECEIPT_INSERT = 'INSERT INTO "erasure_receipts"%%'


def _erasure_waiting(watcher: psycopg.Connection, eraser, statement: str) -> int | None:
    """The server pid of the erasure once it waits for a lock at `statement`."""
    assert eraser.poll() is None, eraser.communicate()
    row = watcher.execute(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        [statement],
    ).fetchone()
    return row[0] if row else None


@pytest.mark.slow
def test_a_kill_9_of_postgresql_mid_erasure_leaves_every_row_and_file(
    two_filled_tenants, file_storages, tmp_path
):
    """The erasure waits at its last statement (its receipt's insert, behind a lock the
    test holds), every delete done but not committed; its server process is killed with
    SIGKILL, which makes PostgreSQL end every session and recover from its WAL. Then
    every row of the tenant is there, no receipt, every file; a second run erases all."""
    (erased, canary_a, _, _), (kept, canary_b, _, _) = two_filled_tenants
    before = _everything()
    before_files = _files_of(file_storages, erased.pk)
    places_a = find_canary(canary_a)
    blocker = _owner_session()
    blocker.execute("LOCK TABLE erasure_receipts IN ACCESS EXCLUSIVE MODE")
    eraser = _start_eraser(tmp_path, erased.slug, file_storages)
    watcher = _owner_session(autocommit=True)
    try:
        pid = _wait_for(
            lambda: _erasure_waiting(watcher, eraser, RECEIPT_INSERT),
            "the erasure to wait for its receipt",
        )
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = eraser.communicate(timeout=DEADLINE_SECONDS)
    finally:
        if eraser.poll() is None:
            eraser.kill()
        for session in (blocker, watcher):
            try:
                session.close()
            except psycopg.Error:
                pass  # ended by the crash
    assert eraser.returncode != 0 and "erased" not in stdout, stderr
    connection.close()
    _wait_for(lambda: _everything() == before, "the rows of before, after the recovery")
    with system_context("test: receipts"):
        assert not ErasureReceipt.objects.filter(subject_type="tenant").exists()
    assert _files_of(file_storages, erased.pk) == before_files
    assert find_canary(canary_a) == places_a

    erase_tenant(slug=erased.slug, requested_by="after the crash")
    assert find_canary(canary_a) == []
    assert find_canary(canary_b) != []


def test_a_writer_of_the_tenant_that_commits_after_the_erasure_is_refused(
    tenant_a, tenant_b, file_storages, tmp_path
):
    """A transaction of the tenant's open across the erasure: its keys to the tenant are
    checked at its commit (Django's keys are deferred), which the erased tenant fails, so
    nothing it wrote stays."""
    with pytest.raises(IntegrityError, match="tenants"):
        with tenant_context(tenant_a):
            project = project_create(tenant=tenant_a, name="written meanwhile")
            eraser = _start_eraser(tmp_path, tenant_a.slug, file_storages)
            stdout, stderr = eraser.communicate(timeout=DEADLINE_SECONDS)
            assert eraser.returncode == 0 and "erased" in stdout, stderr
    with system_context("test: the project"):
        assert not Project.objects.filter(pk=project.pk).exists()
        assert not Tenant.objects.filter(pk=tenant_a.pk).exists()
    assert Tenant.objects.filter(pk=tenant_b.pk).exists()


def test_the_tenants_jobs_in_the_queue_are_erased_and_counted(tenant_a, tenant_b):
    from documents.services import INGEST_TASK, document_create
    from tests.worker import clear_queue, jobs

    clear_queue()
    for number, tenant in enumerate((tenant_a, tenant_a, tenant_b)):
        document_create(tenant=tenant, title="Queued", text=f"some words {number}")
    done = jobs(INGEST_TASK)[0]
    with connection.cursor() as cursor:
        # A finished job (with its events) goes as well as the waiting ones.
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", [done["id"]]
        )
    receipt = erase_tenant(tenant=tenant_a, requested_by="ops")
    assert receipt.rows_touched["procrastinate_jobs"] == 2
    assert [job["args"]["tenant_id"] for job in jobs()] == [str(tenant_b.pk)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_events WHERE job_id = %s", [done["id"]])
        assert cursor.fetchone()[0] == 0
    clear_queue()
