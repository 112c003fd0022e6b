"""An upload on a full disk (issue 17): it left a 0-byte file and raised a raw OSError.
Now nothing is left, neither a file nor the row, and the error is a ValidationError
saying the storage is full. The uploads storage is a real tmpfs the test mounts and fills.
"""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files import File

from documents import services
from documents.models import Document
from tenancy.context import system_context
from tests.filesystems import fill, small_filesystem
from tests.storages import point_storages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.system_program]  # mount


@pytest.fixture
def uploads(tmp_path, settings):
    with small_filesystem(tmp_path / "media", size_kib=256) as folder:
        point_storages(settings, default=folder)
        yield folder


def files_in(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def no_documents() -> bool:
    with system_context("test: count documents"):
        return not Document.objects.exists()


def test_a_full_disk_refuses_the_upload_and_leaves_no_empty_file(tenant_a, uploads):
    fill(uploads)

    with pytest.raises(ValidationError) as error:
        services.document_create(tenant=tenant_a, title="Notes", text="a few words")

    assert error.value.message_dict["text"] == [
        "The file storage is full, so nothing was stored. An administrator must free space "
        "(or raise the quota) before files can be added."
    ]
    assert files_in(uploads) == ["filler"]
    assert no_documents()


def test_a_disk_filling_up_mid_write_leaves_no_partial_file(tenant_a, uploads):
    fill(uploads, leave_bytes=16 * 1024)
    upload = File(io.BytesIO(b"x" * 200_000), name="big.txt")

    with pytest.raises(ValidationError) as error:
        services.document_create(tenant=tenant_a, file=upload)

    assert "The file storage is full" in error.value.message_dict["file"][0]
    assert files_in(uploads) == ["filler"]
    assert no_documents()


def test_with_room_again_the_same_upload_is_stored(tenant_a, uploads):
    fill(uploads)
    with pytest.raises(ValidationError):
        services.document_create(tenant=tenant_a, title="Notes", text="a few words")
    (uploads / "filler").unlink()

    document = services.document_create(tenant=tenant_a, title="Notes", text="a few words")

    assert (uploads / document.storage_key).read_text() == "a few words"
