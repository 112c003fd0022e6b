"""The purge is a system job (system_context switches to the owner role), so these
tests run with transaction=True."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.storage import storages
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from documents import services as documents
from exports import services
from exports.models import Export
from tenancy.context import tenant_context

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def export_root(tmp_path):
    """Export files go to a temporary directory, never var/exports."""
    root = tmp_path / "exports"
    exports = {**settings.STORAGES["exports"], "OPTIONS": {"location": str(root)}}
    with override_settings(STORAGES={**settings.STORAGES, "exports": exports}):
        yield root


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
    old = make_export(tenant_a, project)
    expire(tenant_a, old)
    out = io.StringIO()

    call_command("purge_exports", stdout=out)

    assert out.getvalue().startswith("Expired 1 export(s); deleted 1 file(s), 0 already missing")
    assert files_under(export_root) == []


def test_command_dry_run_reports_without_deleting(tenant_a, project, export_root):
    old = make_export(tenant_a, project)
    expire(tenant_a, old)
    out = io.StringIO()

    call_command("purge_exports", "--dry-run", stdout=out)

    assert out.getvalue().startswith("Would expire 1 export(s); would delete 1 file(s)")
    assert files_under(export_root) == [old.storage_key]
