"""The purge is a system job (system_context switches to the owner role), so these
tests run with transaction=True."""

import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from documents import services as documents
from exports import services
from exports.models import Export
from tenancy.context import system_context, tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def export_root(file_storages):
    """Export files go to the test's own folder, never var/exports."""
    return file_storages.exports


def files_under(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def project(tenant_a):
    project = documents.project_create(tenant=tenant_a, name="Apollo")
    documents.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo."
    )
    return project


def make_export(tenant, project) -> Export:
    export = services.export_create(tenant=tenant, project=project)
    assert export.status == Export.Status.COMPLETED, export.error_message
    return export


def expire(tenant, *exports: Export) -> None:
    with tenant_context(tenant):
        Export.objects.filter(pk__in=[e.pk for e in exports]).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )


def status_of(tenant, export: Export) -> str:
    with tenant_context(tenant):
        return Export.objects.get(pk=export.pk).status


def test_purge_expires_past_due_exports_and_deletes_their_files(tenant_a, project, export_root):
    old, live = make_export(tenant_a, project), make_export(tenant_a, project)
    expire(tenant_a, old)

    summary = services.exports_purge_expired()

    assert (summary.expired, summary.files_deleted, summary.files_missing) == (1, 1, 0)
    assert status_of(tenant_a, old) == Export.Status.EXPIRED
    assert status_of(tenant_a, live) == Export.Status.COMPLETED
    assert files_under(export_root) == [live.storage_key]


def test_purge_covers_every_tenant(tenant_a, tenant_b, project, export_root):
    other_project = documents.project_create(tenant=tenant_b, name="Zeus")
    documents.document_version_create(
        tenant=tenant_b, project=other_project, document_type="plan", content="Plan."
    )
    mine, theirs = make_export(tenant_a, project), make_export(tenant_b, other_project)
    expire(tenant_a, mine)
    expire(tenant_b, theirs)

    assert services.exports_purge_expired().expired == 2
    assert files_under(export_root) == []


def test_purge_is_idempotent(tenant_a, project, export_root):
    old = make_export(tenant_a, project)
    expire(tenant_a, old)

    first = services.exports_purge_expired()
    second = services.exports_purge_expired()

    assert (first.expired, first.files_deleted) == (1, 1)
    assert second == services.PurgeSummary(dry_run=False)
    assert status_of(tenant_a, old) == Export.Status.EXPIRED


def test_purge_never_deletes_a_file_a_live_export_points_at(tenant_a, project, export_root):
    old, live = make_export(tenant_a, project), make_export(tenant_a, project)
    with tenant_context(tenant_a):
        # Only a copied row can share a key; the live export keeps it.
        Export.objects.filter(pk=live.pk).update(storage_key=old.storage_key)
    expire(tenant_a, old)

    summary = services.exports_purge_expired()

    assert (summary.expired, summary.files_deleted, summary.files_kept) == (1, 0, 1)
    assert status_of(tenant_a, old) == Export.Status.EXPIRED
    assert old.storage_key in files_under(export_root)
    handle, _, _ = services.export_download(tenant=tenant_a, export=live)
    handle.close()


def test_purge_tolerates_an_already_missing_file(tenant_a, project, export_root):
    old = make_export(tenant_a, project)
    expire(tenant_a, old)
    storages["exports"].delete(old.storage_key)

    summary = services.exports_purge_expired()

    assert (summary.expired, summary.files_deleted, summary.files_missing) == (1, 0, 1)
    assert status_of(tenant_a, old) == Export.Status.EXPIRED


def test_purge_leaves_failed_exports_failed(tenant_a, export_root):
    empty = documents.project_create(tenant=tenant_a, name="Empty")
    failed = services.export_create(tenant=tenant_a, project=empty)
    expire(tenant_a, failed)

    assert services.exports_purge_expired().expired == 0
    assert status_of(tenant_a, failed) == Export.Status.FAILED


def test_purge_removes_the_file_a_build_left_behind(tenant_a, project, export_root):
    stale = make_export(tenant_a, project)
    with tenant_context(tenant_a):
        # As if the build died after writing its file, before completing.
        Export.objects.filter(pk=stale.pk).update(
            status=Export.Status.RUNNING, sha256="", completed_at=None
        )
    expire(tenant_a, stale)

    summary = services.exports_purge_expired()

    assert (summary.expired, summary.files_deleted) == (1, 1)
    assert files_under(export_root) == []


def test_dry_run_changes_nothing(tenant_a, project, export_root):
    old = make_export(tenant_a, project)
    expire(tenant_a, old)

    summary = services.exports_purge_expired(dry_run=True)

    assert summary == services.PurgeSummary(dry_run=True, expired=1, files_deleted=1)
    assert status_of(tenant_a, old) == Export.Status.COMPLETED
    assert files_under(export_root) == [old.storage_key]


def test_command_applies_and_reports_counts(tenant_a, project, export_root):
    old, gone = make_export(tenant_a, project), make_export(tenant_a, project)
    expire(tenant_a, old)
    delete_rows(tenant_a, gone)
    age(export_root, folder_of(gone))
    out = io.StringIO()

    call_command("purge_exports", stdout=out)

    first, second, done = out.getvalue().splitlines()
    assert first.startswith("Expired 1 export(s); failed 0 abandoned build(s)")
    assert "deleted 1 file(s), 0 already missing" in first
    assert second.startswith("Swept 1 orphaned folder(s) (1 file(s)) of exports that no longer")
    assert second.endswith("0 kept (changed within ORPHAN_FILE_GRACE_SECONDS).")
    assert done == "Done."
    assert files_under(export_root) == []


def test_command_dry_run_reports_without_deleting(tenant_a, project, export_root):
    old = make_export(tenant_a, project)
    expire(tenant_a, old)
    out = io.StringIO()

    call_command("purge_exports", "--dry-run", stdout=out)

    assert out.getvalue().startswith("Would expire 1 export(s); would fail 0 abandoned build(s)")
    assert "would delete 1 file(s)" in out.getvalue()
    assert "\nWould sweep 0 orphaned folder(s) (0 file(s))" in out.getvalue()
    assert files_under(export_root) == [old.storage_key]


# --- Builds that died: pending or running past the lease -----------------------------


def abandoned_builds(tenant, project, export_root) -> tuple[Export, Export]:
    """A pending export and a running one that wrote part of its file, as a crash of the
    process building them leaves them (nothing changes them any more)."""
    with tenant_context(tenant):
        pending = Export.objects.create(tenant=tenant, project=project)
        running = Export.objects.create(tenant=tenant, project=project)
        running.storage_key = f"exports/{tenant.pk}/{running.pk}/partial.zip"
        Export.objects.filter(pk=running.pk).update(
            status=Export.Status.RUNNING, storage_key=running.storage_key
        )
    (export_root / running.storage_key).parent.mkdir(parents=True)
    (export_root / running.storage_key).write_bytes(b"PK partial")
    return pending, running


def test_builds_left_unfinished_past_the_lease_are_failed_with_the_reason(
    tenant_a, project, export_root, settings
):
    settings.EXPORT_BUILD_LEASE_SECONDS = 600
    pending, running = abandoned_builds(tenant_a, project, export_root)

    within = services.exports_purge_expired()  # changed just now: a build may be running
    assert within.abandoned_failed == 0
    assert {status_of(tenant_a, e) for e in (pending, running)} == {"pending", "running"}

    summary = services.exports_purge_expired(now=timezone.now() + timedelta(minutes=11))

    assert (summary.abandoned_failed, summary.expired, summary.files_deleted) == (2, 0, 1)
    with tenant_context(tenant_a):
        failed = list(Export.objects.filter(pk__in=[pending.pk, running.pk]).order_by("id"))
    assert [e.status for e in failed] == ["failed", "failed"]
    assert "stayed pending longer than EXPORT_BUILD_LEASE_SECONDS (600 s)" in (
        failed[0].error_message
    )
    assert "stayed running" in failed[1].error_message
    assert [e.storage_key for e in failed] == ["", ""]
    assert files_under(export_root) == []


def test_a_dry_run_reports_abandoned_builds_and_changes_nothing(
    tenant_a, project, export_root, settings
):
    settings.EXPORT_BUILD_LEASE_SECONDS = 600
    pending, running = abandoned_builds(tenant_a, project, export_root)

    summary = services.exports_purge_expired(
        now=timezone.now() + timedelta(minutes=11), dry_run=True
    )

    assert (summary.abandoned_failed, summary.files_deleted) == (2, 1)
    assert {status_of(tenant_a, e) for e in (pending, running)} == {"pending", "running"}
    assert files_under(export_root) == [running.storage_key]


def test_a_build_failed_by_the_purge_cannot_complete_afterwards(tenant_a, project, export_root):
    with tenant_context(tenant_a):
        export = Export.objects.create(tenant=tenant_a, project=project)
    services.exports_purge_expired(now=timezone.now() + timedelta(minutes=20))

    with pytest.raises(services.ExportBuildError, match="became failed"):
        services._transition(export, expected=(Export.Status.PENDING,), status="running")
    assert status_of(tenant_a, export) == Export.Status.FAILED


def test_a_now_no_lease_can_be_counted_back_from_is_refused_naming_it(tenant_a):
    with pytest.raises(ValidationError) as error:
        services.exports_purge_expired(now=datetime.min.replace(tzinfo=UTC))
    assert "before the year 1" in error.value.message_dict["now"][0]


# --- Orphans: export folders whose row is gone ----------------------------------------


class Rollback(Exception):
    """Raised to roll back a caller's transaction."""


def folder_of(export: Export) -> str:
    return str(PurePosixPath(export.storage_key).parent)


def delete_rows(tenant, *exports: Export) -> None:
    """As the admin's delete does: the row goes, the file is not the database's to remove."""
    with tenant_context(tenant):
        Export.objects.filter(pk__in=[e.pk for e in exports]).delete()


def age(root, folder: str, by: timedelta = timedelta(hours=2)) -> None:
    """Make everything in the folder, and the folder, look last changed `by` ago."""
    then = (timezone.now() - by).timestamp()
    for path in [*(root / folder).rglob("*"), root / folder]:
        os.utime(path, (then, then))


def test_purge_sweeps_the_folder_of_an_export_that_no_longer_exists(tenant_a, export_root):
    doomed = documents.project_create(tenant=tenant_a, name="Doomed")
    documents.document_version_create(
        tenant=tenant_a, project=doomed, document_type="plan", content="Plan."
    )
    gone = make_export(tenant_a, doomed)
    documents.project_soft_delete(tenant=tenant_a, project=doomed)
    documents.projects_purge_deleted(older_than=timedelta(0))  # cascades
    age(export_root, folder_of(gone))

    summary = services.exports_purge_expired()

    assert summary == services.PurgeSummary(
        dry_run=False, orphans_deleted=1, orphan_files_deleted=1
    )
    assert not (export_root / folder_of(gone)).exists()


def test_orphan_sweep_keeps_the_folders_of_existing_exports_of_every_tenant(
    tenant_a, tenant_b, project, export_root
):
    other_project = documents.project_create(tenant=tenant_b, name="Zeus")
    documents.document_version_create(
        tenant=tenant_b, project=other_project, document_type="plan", content="Plan."
    )
    mine, theirs = make_export(tenant_a, project), make_export(tenant_b, other_project)
    for export in (mine, theirs):
        age(export_root, folder_of(export))

    summary = services.exports_purge_expired()

    assert (summary.orphans_deleted, summary.orphans_kept) == (0, 0)
    assert files_under(export_root) == sorted([mine.storage_key, theirs.storage_key])


def test_a_rolled_back_export_leaves_its_file_for_the_orphan_sweep(tenant_a, project, export_root):
    with pytest.raises(Rollback), transaction.atomic():
        export = make_export(tenant_a, project)  # as the admin's add form and the seed do
        raise Rollback
    with tenant_context(tenant_a):
        assert not Export.objects.filter(pk=export.pk).exists()
    assert files_under(export_root) == [export.storage_key]
    age(export_root, folder_of(export))

    summary = services.exports_purge_expired()

    assert (summary.orphans_deleted, summary.orphan_files_deleted) == (1, 1)
    assert files_under(export_root) == []


def test_orphan_changed_within_the_grace_period_is_kept(tenant_a, project, export_root):
    # A build inside a transaction not yet committed: its file exists, its row not yet.
    with pytest.raises(Rollback), transaction.atomic():
        export = make_export(tenant_a, project)
        raise Rollback
    grace = timedelta(seconds=settings.ORPHAN_FILE_GRACE_SECONDS)
    age(export_root, folder_of(export), by=grace - timedelta(minutes=5))

    summary = services.exports_purge_expired()

    assert summary == services.PurgeSummary(dry_run=False, orphans_kept=1)
    assert files_under(export_root) == [export.storage_key]


def test_orphan_sweep_is_idempotent(tenant_a, project, export_root):
    gone = make_export(tenant_a, project)
    delete_rows(tenant_a, gone)
    age(export_root, folder_of(gone))

    first = services.exports_purge_expired()
    second = services.exports_purge_expired()

    assert (first.orphans_deleted, first.orphan_files_deleted) == (1, 1)
    assert second == services.PurgeSummary(dry_run=False)


def test_orphan_sweep_removes_an_empty_orphaned_folder(tenant_a, export_root):
    folder = f"exports/{tenant_a.pk}/{uuid.uuid4()}"
    (export_root / folder).mkdir(parents=True)
    age(export_root, folder)

    summary = services.exports_purge_expired()

    assert (summary.orphans_deleted, summary.orphan_files_deleted) == (1, 0)
    assert not (export_root / folder).exists()


def test_orphan_sweep_leaves_what_export_create_did_not_make(tenant_a, export_root):
    strangers = [
        "exports/not-a-tenant/notes.txt",
        f"exports/{tenant_a.pk}/notes.txt",
        f"exports/{tenant_a.pk}/{str(uuid.uuid4()).upper()}/file.zip",
        "elsewhere/file.zip",
    ]
    for name in strangers:
        (export_root / name).parent.mkdir(parents=True, exist_ok=True)
        (export_root / name).write_text("not an export")
    age(export_root, ".")

    summary = services.exports_purge_expired()

    assert (summary.orphans_deleted, summary.orphans_kept) == (0, 0)
    assert files_under(export_root) == sorted(strangers)


def test_dry_run_reports_orphans_without_deleting(tenant_a, project, export_root):
    gone = make_export(tenant_a, project)
    delete_rows(tenant_a, gone)
    age(export_root, folder_of(gone))

    summary = services.exports_purge_expired(dry_run=True)

    assert summary == services.PurgeSummary(dry_run=True, orphans_deleted=1, orphan_files_deleted=1)
    assert files_under(export_root) == [gone.storage_key]


def test_purge_without_the_owner_role_refuses_and_deletes_nothing(
    tenant_a, project, export_root, owner_is_runtime_role
):
    live, old = make_export(tenant_a, project), make_export(tenant_a, project)
    expire(tenant_a, old)
    age(export_root, folder_of(live))

    with pytest.raises(ImproperlyConfigured, match="DATABASE_OWNER_URL"):
        services.exports_purge_expired()
    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("purge_exports")

    assert status_of(tenant_a, old) == Export.Status.COMPLETED
    assert files_under(export_root) == sorted([live.storage_key, old.storage_key])


# --- The purge's own query and its partial indexes ------------------------------------


def test_the_purge_reads_due_exports_through_their_partial_indexes(tenant_a, export_root):
    with CaptureQueriesContext(connection) as queries:
        services.exports_purge_expired()
    # The statements that find the due rows and the abandoned builds (their tenants, whose
    # rows are then locked tenant by tenant), as the service sent them (parameters inlined).
    locking, abandoned = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT DISTINCT "exports"."tenant_id"')
    ]

    # As the purge runs it: the owner with the bypass on. Seq scans are priced out because
    # on a test-sized table a seq scan is rightly cheaper: the question here is whether the
    # query can use the indexes at all, which a predicate that does not imply an index's
    # WHERE clause never can, whatever the table's size.
    with system_context("test: explain the purge's query"), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {locking}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
        cursor.execute(f"EXPLAIN {abandoned}")
        abandoned_plan = "\n".join(line for (line,) in cursor.fetchall())

    assert "exports_completed_expiry_idx" in plan
    assert "exports_unfinished_expiry_idx" in plan
    assert "exports_unfinished_expiry_idx" in abandoned_plan
