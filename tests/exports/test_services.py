import hashlib
import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage, storages
from django.test import override_settings
from django.utils import timezone
from model_bakery import baker

from documents import selectors as document_selectors
from documents import services as documents
from exports import builders, services
from exports.models import Export
from tenancy.context import tenant_context
from tests.locks import run_together

KEY_PATTERN = re.compile(
    r"^exports/(?P<tenant>[0-9a-f-]{36})/(?P<export>[0-9a-f-]{36})/[0-9a-f-]{36}\.(zip|md|json)$"
)


def exports_storage_settings(
    location, backend: str = "django.core.files.storage.FileSystemStorage"
) -> dict:
    exports = {"BACKEND": backend, "OPTIONS": {"location": str(location)}}
    return {**settings.STORAGES, "exports": exports}


@pytest.fixture(autouse=True)
def export_root(file_storages):
    """Export files go to the test's own folder, never var/exports."""
    return file_storages.exports


def files_under(root) -> list:
    return sorted(path for path in root.rglob("*") if path.is_file())


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def project(tenant_a):
    project = documents.project_create(tenant=tenant_a, name="Apollo")
    for document_type, content in [
        ("about", "# About\n\nFirst draft."),
        ("about", "# About\n\nSecond draft, with ümlauts.\n"),
        ("plan", "1. Build\n2. Ship"),
        ("specification", "The system shall export."),
    ]:
        documents.document_version_create(
            tenant=tenant_a, project=project, document_type=document_type, content=content
        )
    return project


def read_zip(data: bytes) -> tuple[dict, dict[str, str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(builders.MANIFEST_FILENAME))
        texts = {
            name.removesuffix(".md"): archive.read(name).decode()
            for name in names
            if name != builders.MANIFEST_FILENAME
        }
    assert names == [*(f"{kind}.md" for kind in texts), builders.MANIFEST_FILENAME]
    return manifest, texts


def read_markdown(data: bytes) -> tuple[dict, dict[str, str]]:
    text = data.decode()
    front_matter = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    sections = re.findall(
        r"<!-- document: (\w+) -->\n(.*?)\n<!-- /document: \1 -->\n", text, re.DOTALL
    )
    return json.loads(front_matter.group(1)), dict(sections)


def read_json(data: bytes) -> tuple[dict, dict[str, str]]:
    body = json.loads(data)
    return body["manifest"], {doc["type"]: doc["content"] for doc in body["documents"]}


READERS = {"zip": read_zip, "markdown": read_markdown, "json": read_json}


def read_export_file(export: Export) -> bytes:
    with storages["exports"].open(export.storage_key, "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("export_format", ["zip", "markdown", "json"])
def test_export_file_matches_its_manifest_and_its_row(tenant_a, alice, project, export_format):
    export = services.export_create(
        tenant=tenant_a, project=project, format=export_format, by=alice
    )

    assert export.status == Export.Status.COMPLETED, export.error_message
    data = read_export_file(export)
    assert (export.sha256, export.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    manifest, texts = READERS[export_format](data)
    assert manifest == export.manifest
    assert [(d["type"], d["version"]) for d in manifest["documents"]] == [
        ("about", 2),
        ("specification", 1),
        ("plan", 1),
    ]
    assert list(texts) == ["about", "specification", "plan"]
    for document in manifest["documents"]:
        assert sha(texts[document["type"]]) == document["content_sha256"]
    assert texts["about"] == "# About\n\nSecond draft, with ümlauts.\n"


def test_manifest_names_the_project_the_export_and_the_format(tenant_a, project):
    export = services.export_create(tenant=tenant_a, project=project, format="json")

    assert export.manifest | {"documents": None} == {
        "manifest_version": 1,
        "export_id": str(export.pk),
        "format": "json",
        "created_at": export.created_at.isoformat(),
        "project_id": str(project.pk),
        "project_name": "Apollo",
        "documents": None,
    }


def test_row_records_completion(tenant_a, alice, project):
    export = services.export_create(tenant=tenant_a, project=project, by=alice)

    with tenant_context(tenant_a):
        stored = Export.objects.get(pk=export.pk)
    assert stored.status == Export.Status.COMPLETED
    assert stored.completed_at is not None
    assert stored.created_by == alice
    assert stored.error_message == ""
    # The database default: now() + 24 hours.
    assert abs(stored.expires_at - stored.created_at - timedelta(hours=24)) < timedelta(minutes=1)


def test_ttl_sets_the_expiry(tenant_a, project):
    before = timezone.now()
    export = services.export_create(tenant=tenant_a, project=project, ttl=timedelta(hours=2))

    assert before + timedelta(hours=2) <= export.expires_at <= timezone.now() + timedelta(hours=2)


def test_zip_is_deterministic_for_the_same_inputs(tenant_a, project):
    export = services.export_create(tenant=tenant_a, project=project, format="zip")
    versions = builders.ordered_versions(
        document_selectors.latest_versions(tenant=tenant_a, project=project)
    )

    rebuilt = builders.build_zip(manifest=export.manifest, versions=versions)

    assert rebuilt == read_export_file(export)
    with zipfile.ZipFile(io.BytesIO(rebuilt)) as archive:
        assert {info.date_time for info in archive.infolist()} == {builders.ZIP_TIMESTAMP}


def test_project_without_versions_fails_with_an_error_and_no_file(tenant_a, export_root):
    empty = documents.project_create(tenant=tenant_a, name="Empty")

    export = services.export_create(tenant=tenant_a, project=empty)

    assert export.status == Export.Status.FAILED
    assert "no document versions" in export.error_message
    assert (export.storage_key, export.sha256, export.size_bytes) == ("", "", 0)
    assert files_under(export_root) == []
    with tenant_context(tenant_a):
        assert Export.objects.get(pk=export.pk).status == Export.Status.FAILED


class FailingStorage(FileSystemStorage):
    """Writes part of the file, then fails like a full disk."""

    def _save(self, name, content):
        super()._save(name, type(content)(content.read()[:10]))
        raise OSError(28, "No space left on device")


def test_storage_error_fails_the_export_and_leaves_no_partial_file(tenant_a, project, tmp_path):
    root = tmp_path / "failing"
    storage_settings = exports_storage_settings(root, f"{__name__}.FailingStorage")
    with override_settings(STORAGES=storage_settings):
        export = services.export_create(tenant=tenant_a, project=project)

    assert export.status == Export.Status.FAILED
    assert "No space left on device" in export.error_message
    assert export.storage_key == ""
    assert files_under(root) == []


class StorageExpiringTheExport(FileSystemStorage):
    """Writes the file, then lets a purge expire the export before it completes."""

    def _save(self, name, content):
        saved = super()._save(name, content)
        ids = KEY_PATTERN.match(name)
        with tenant_context(ids["tenant"]):
            Export.objects.filter(pk=ids["export"]).update(status=Export.Status.EXPIRED)
        return saved


def test_a_build_that_loses_its_row_removes_its_file(tenant_a, project, tmp_path):
    root = tmp_path / "racing"
    storage_settings = exports_storage_settings(root, f"{__name__}.StorageExpiringTheExport")
    with override_settings(STORAGES=storage_settings):
        export = services.export_create(tenant=tenant_a, project=project)

    assert export.status == Export.Status.EXPIRED
    assert files_under(root) == []


def test_storage_key_is_generated_never_from_user_input(tenant_a, export_root):
    name = "../../etc/passwd"
    hostile = documents.project_create(tenant=tenant_a, name=name)
    documents.document_version_create(
        tenant=tenant_a, project=hostile, document_type="about", content="x"
    )

    export = services.export_create(tenant=tenant_a, project=hostile, format="markdown")

    match = KEY_PATTERN.match(export.storage_key)
    assert match, export.storage_key
    assert (match["tenant"], match["export"]) == (str(tenant_a.pk), str(export.pk))
    assert ".." not in export.storage_key and "passwd" not in export.storage_key
    assert [p.relative_to(export_root).as_posix() for p in files_under(export_root)] == [
        export.storage_key
    ]


def test_unknown_format_is_refused_naming_the_field(tenant_a, project):
    with pytest.raises(ValidationError) as error:
        services.export_create(tenant=tenant_a, project=project, format="pdf")

    assert "format" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Export.objects.exists()


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(days=366), timedelta(days=2_912_103)])
def test_a_ttl_not_positive_or_past_a_year_is_refused(tenant_a, project, ttl):
    with pytest.raises(ValidationError) as error:
        services.export_create(tenant=tenant_a, project=project, ttl=ttl)

    assert "ttl" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Export.objects.exists()


def test_another_tenants_project_is_refused(tenant_b, project):
    with pytest.raises(ValidationError) as error:
        services.export_create(tenant=tenant_b, project=project)

    assert "project" in error.value.message_dict


def test_deleted_project_is_refused(tenant_a, project):
    documents.project_soft_delete(tenant=tenant_a, project=project)

    with pytest.raises(ValidationError) as error:
        services.export_create(tenant=tenant_a, project=project)

    assert "project" in error.value.message_dict


@pytest.fixture
def completed(tenant_a, project) -> Export:
    return services.export_create(tenant=tenant_a, project=project, format="markdown")


def download_count(tenant, export: Export) -> int:
    with tenant_context(tenant):
        return Export.objects.get(pk=export.pk).download_count


def test_download_returns_the_file_and_counts_it(tenant_a, completed):
    handle, filename, content_type = services.export_download(tenant=tenant_a, export=completed)
    with handle:
        data = handle.read()

    assert hashlib.sha256(data).hexdigest() == completed.sha256
    assert re.fullmatch(r"apollo-\d{8}-\d{6}\.md", filename)
    assert content_type == "text/markdown; charset=utf-8"
    assert completed.download_count == 1
    assert download_count(tenant_a, completed) == 1


def test_download_of_another_tenants_export_is_refused(tenant_b, completed):
    with pytest.raises(ValidationError) as error:
        services.export_download(tenant=tenant_b, export=completed)

    assert "export" in error.value.message_dict


def test_expired_download_is_refused_naming_expires_at(tenant_a, completed):
    with tenant_context(tenant_a):
        Export.objects.filter(pk=completed.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )

    with pytest.raises(ValidationError) as error:
        services.export_download(tenant=tenant_a, export=completed)

    assert "expires_at" in error.value.message_dict
    assert download_count(tenant_a, completed) == 0


def test_expired_status_download_is_refused_naming_status(tenant_a, completed):
    with tenant_context(tenant_a):
        Export.objects.filter(pk=completed.pk).update(status=Export.Status.EXPIRED)

    with pytest.raises(ValidationError) as error:
        services.export_download(tenant=tenant_a, export=completed)

    assert "status" in error.value.message_dict


def test_pending_download_is_refused_naming_status(tenant_a, project):
    with tenant_context(tenant_a):
        pending = baker.make(Export, tenant=tenant_a, project=project)

    with pytest.raises(ValidationError) as error:
        services.export_download(tenant=tenant_a, export=pending)

    assert "status" in error.value.message_dict
    assert download_count(tenant_a, pending) == 0


def test_failed_download_is_refused_naming_status(tenant_a):
    empty = documents.project_create(tenant=tenant_a, name="Empty")
    failed = services.export_create(tenant=tenant_a, project=empty)

    with pytest.raises(ValidationError) as error:
        services.export_download(tenant=tenant_a, export=failed)

    assert "status" in error.value.message_dict


def test_download_of_a_missing_file_raises_and_is_not_counted(tenant_a, completed):
    storages["exports"].delete(completed.storage_key)

    with pytest.raises(FileNotFoundError):
        services.export_download(tenant=tenant_a, export=completed)

    assert download_count(tenant_a, completed) == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_downloads_are_counted_exactly(tenant_a, completed):
    downloads = 20

    def download() -> None:
        handle, _, _ = services.export_download(tenant=tenant_a, export=completed)
        handle.close()

    errors = run_together([download] * downloads)

    assert errors == []
    assert download_count(tenant_a, completed) == downloads
