"""Upload files without a document row: document_delete and documents_sweep_orphan_files.

The sweep checks rows in system_context, which switches the connection's role, so these
tests commit for real (transaction=True).
"""

import io
import os
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import transaction

from documents import services
from documents.models import Chunk, Document, Project
from tenancy.context import tenant_context

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]

TWO_HOURS = 2 * 3600


def age(media, key: str, seconds: int = TWO_HOURS) -> None:
    """Make a stored file (and its folder) look written `seconds` ago."""
    then = time.time() - seconds
    path = media / key
    os.utime(path, (then, then))
    os.utime(path.parent, (then, then))


def folder_of(key: str) -> str:
    return key.rsplit("/", 1)[0]


def orphan(tenant, media, seconds: int = TWO_HOURS) -> str:
    """The key of a file whose document row is gone, written `seconds` ago."""
    document = services.document_create(tenant=tenant, title="gone", text="bye")
    with tenant_context(tenant):
        Document.objects.filter(pk=document.pk).delete()
    age(media, document.storage_key, seconds)
    return document.storage_key


def live(tenant, media) -> Document:
    document = services.document_ingest(tenant=tenant, title="kept", text="hello world")
    age(media, document.storage_key)
    return document


def test_an_old_orphan_is_swept_and_a_live_file_kept(tenant_a, tenant_b, file_storages):
    gone = orphan(tenant_a, file_storages.media)
    kept = live(tenant_b, file_storages.media)
    summary = services.documents_sweep_orphan_files()
    assert summary.orphan_folders == (folder_of(gone),)
    assert (summary.folders_checked, summary.files_deleted, summary.recent_folders_kept) == (
        2,
        1,
        0,
    )
    assert not default_storage.exists(gone)
    assert not (file_storages.media / folder_of(gone)).exists()
    assert default_storage.exists(kept.storage_key)


def test_a_recent_orphan_is_kept_for_the_grace_period(tenant_a, file_storages):
    recent = orphan(tenant_a, file_storages.media, seconds=60)
    summary = services.documents_sweep_orphan_files()
    assert (summary.orphan_folders, summary.recent_folders_kept) == ((), 1)
    assert default_storage.exists(recent)
    later = services.documents_sweep_orphan_files(grace=timedelta(seconds=30))
    assert later.orphan_folders == (folder_of(recent),)
    assert not default_storage.exists(recent)


def test_the_sweep_is_idempotent(tenant_a, file_storages):
    orphan(tenant_a, file_storages.media)
    live(tenant_a, file_storages.media)
    assert services.documents_sweep_orphan_files().files_deleted == 1
    again = services.documents_sweep_orphan_files()
    assert (again.folders_checked, again.orphan_folders, again.files_deleted) == (1, (), 0)


def test_a_dry_run_reports_and_deletes_nothing(tenant_a, file_storages):
    gone = orphan(tenant_a, file_storages.media)
    summary = services.documents_sweep_orphan_files(dry_run=True)
    assert (summary.dry_run, summary.orphan_folders, summary.files_deleted) == (
        True,
        (folder_of(gone),),
        1,
    )
    assert default_storage.exists(gone)


def test_the_file_of_a_rolled_back_upload_is_swept(tenant_a, file_storages):
    with pytest.raises(RuntimeError), transaction.atomic():
        document = services.document_create(tenant=tenant_a, title="x", text="never committed")
        raise RuntimeError("the caller's transaction fails")
    assert default_storage.exists(document.storage_key)
    age(file_storages.media, document.storage_key)
    assert services.documents_sweep_orphan_files().orphan_folders == (
        folder_of(document.storage_key),
    )
    assert not default_storage.exists(document.storage_key)


def test_files_outside_the_documents_layout_are_never_touched(tenant_a, file_storages):
    for name in ("documents/readme.txt", "documents/not-a-uuid/x/file", "avatars/a.png"):
        (file_storages.media / name).parent.mkdir(parents=True, exist_ok=True)
        (file_storages.media / name).write_bytes(b"x")
        age(file_storages.media, name)
    summary = services.documents_sweep_orphan_files()
    assert (summary.folders_checked, summary.files_deleted) == (0, 0)
    assert all(
        (file_storages.media / name).exists() for name in ("documents/readme.txt", "avatars/a.png")
    )
    assert (file_storages.media / "documents/not-a-uuid/x/file").exists()


def test_a_storage_without_documents_has_nothing_to_sweep(db):
    assert services.documents_sweep_orphan_files().folders_checked == 0


def test_document_delete_removes_the_row_its_chunks_and_then_its_file(tenant_a, file_storages):
    document = live(tenant_a, file_storages.media)
    services.document_delete(tenant=tenant_a, document=document)
    with tenant_context(tenant_a):
        assert not Document.objects.filter(pk=document.pk).exists()
        assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert not default_storage.exists(document.storage_key)
    assert not (file_storages.media / folder_of(document.storage_key)).exists()
    # Already gone: nothing to do.
    services.document_delete(tenant=tenant_a, document=document)


def test_document_delete_rolled_back_keeps_the_row_and_the_file(tenant_a, file_storages):
    document = live(tenant_a, file_storages.media)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.document_delete(tenant=tenant_a, document=document)
        raise RuntimeError("the caller's transaction fails")
    with tenant_context(tenant_a):
        assert Document.objects.filter(pk=document.pk).exists()
    assert default_storage.exists(document.storage_key)


def test_document_delete_refuses_another_tenants_document(tenant_a, tenant_b, file_storages):
    document = live(tenant_a, file_storages.media)
    with pytest.raises(ValidationError) as error:
        services.document_delete(tenant=tenant_b, document=document)
    assert "document" in error.value.message_dict
    assert default_storage.exists(document.storage_key)


def test_purge_deleted_reports_and_sweeps_orphans(tenant_a, file_storages):
    gone = orphan(tenant_a, file_storages.media)
    out = io.StringIO()
    call_command("purge_deleted", "--dry-run", stdout=out)
    assert "Would delete 1 file(s) in 1 folder(s) of documents/ whose row is gone" in (
        out.getvalue()
    )
    assert default_storage.exists(gone)
    out = io.StringIO()
    call_command("purge_deleted", "--verbosity", "2", stdout=out)
    assert "Deleted 1 file(s) in 1 folder(s) of documents/ whose row is gone" in out.getvalue()
    assert folder_of(gone) in out.getvalue()
    assert not default_storage.exists(gone)


def test_without_the_owner_role_the_sweep_refuses_and_deletes_nothing(
    tenant_a, file_storages, owner_is_runtime_role
):
    kept = live(tenant_a, file_storages.media)
    with pytest.raises(ImproperlyConfigured, match="DATABASE_OWNER_URL"):
        services.documents_sweep_orphan_files()
    assert default_storage.exists(kept.storage_key)


def test_purge_deleted_without_the_owner_role_exits_with_the_reason_and_changes_nothing(
    tenant_a, file_storages, owner_is_runtime_role
):
    kept = live(tenant_a, file_storages.media)
    doomed = services.project_create(tenant=tenant_a, name="Doomed")
    services.project_soft_delete(tenant=tenant_a, project=doomed)
    with pytest.raises(CommandError, match="DATABASE_OWNER_URL.*Nothing was changed"):
        call_command("purge_deleted", "--days", "0")
    assert default_storage.exists(kept.storage_key)
    with tenant_context(tenant_a):
        assert Project.all_objects.filter(pk=doomed.pk).exists()
