"""Deleting knowledge documents by a metadata filter: the service and delete_documents.

The command runs in system_context, which switches the connection's role, so these
tests commit for real (transaction=True); the files go once the deletion commits.
"""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from documents import services
from documents.models import Chunk, Document
from tenancy.context import tenant_context
from tests.factories import make_member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]


@pytest.fixture
def documents(tenant_a, tenant_b):
    made = {}
    for name, tenant, metadata in [
        ("crawl-2019", tenant_a, {"source": "crawler", "year": 2019}),
        ("crawl-2023", tenant_a, {"source": "crawler", "year": 2023}),
        ("manual-2019", tenant_a, {"source": "upload", "year": 2019}),
        ("b-crawl-2019", tenant_b, {"source": "crawler", "year": 2019}),
    ]:
        made[name] = services.document_ingest(
            tenant=tenant, title=name, text=f"Notes of {name}.", metadata=metadata
        )
    return made


def titles(tenant) -> set[str]:
    with tenant_context(tenant):
        return set(Document.objects.values_list("title", flat=True))


OLD_CRAWLS = {"document.source": "crawler", "document.year": {"lt": 2020}}


def test_a_dry_run_reports_and_deletes_nothing(tenant_a, tenant_b, documents):
    summary = services.documents_delete_by_filter(tenant=tenant_a, filters=OLD_CRAWLS, dry_run=True)
    assert [title for _id, title, _chunks in summary.documents] == ["crawl-2019"]
    assert summary.chunks == 1
    assert summary.report()[0].startswith("Would delete 1 knowledge document(s) with 1 chunk(s)")
    assert titles(tenant_a) == {"crawl-2019", "crawl-2023", "manual-2019"}
    assert default_storage.exists(documents["crawl-2019"].storage_key)


def test_the_matching_documents_go_with_their_chunks_and_files(tenant_a, tenant_b, documents):
    summary = services.documents_delete_by_filter(tenant=tenant_a, filters=OLD_CRAWLS)
    assert summary.report()[0].startswith("Deleted 1 knowledge document(s)")
    assert titles(tenant_a) == {"crawl-2023", "manual-2019"}
    # Another tenant's document matching the same filter stays.
    assert titles(tenant_b) == {"b-crawl-2019"}
    with tenant_context(tenant_a):
        assert not Chunk.objects.filter(document_id=documents["crawl-2019"].pk).exists()
    assert not default_storage.exists(documents["crawl-2019"].storage_key)
    assert default_storage.exists(documents["crawl-2023"].storage_key)


def test_a_member_deletes_only_what_they_may_see(tenant_a, alice, documents):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer")
    services.document_restrict(tenant=tenant_a, document=documents["crawl-2019"], by=alice)
    summary = services.documents_delete_by_filter(
        tenant=tenant_a, filters={"document.source": "crawler"}, by=viewer
    )
    assert [title for _id, title, _chunks in summary.documents] == ["crawl-2023"]
    assert titles(tenant_a) == {"manual-2019"}  # without a user: the open ones
    with tenant_context(tenant_a, user=alice):
        assert set(Document.objects.values_list("title", flat=True)) == {
            "crawl-2019",
            "manual-2019",
        }


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({}, "at least one condition"),
        ({"chunk.page": 1}, "'chunk.page'"),
        ({"document.a'; DROP TABLE documents; --": 1}, "DROP TABLE"),
        ({"document.year": {"before": 2020}}, "'document.year'"),
    ],
)
def test_bad_filters_are_refused_naming_the_key(tenant_a, documents, filters, named):
    with pytest.raises(ValidationError) as refused:
        services.documents_delete_by_filter(tenant=tenant_a, filters=filters)
    assert named in " ".join(refused.value.message_dict["filters"])
    assert titles(tenant_a) == {"crawl-2019", "crawl-2023", "manual-2019"}


def test_the_command_dry_run_then_deletes(tenant_a, documents):
    out = io.StringIO()
    call_command(
        "delete_documents",
        "--tenant",
        "tenant-a",
        "--filter",
        '{"document.year": 2019}',
        "--dry-run",
        stdout=out,
    )
    assert "Would delete 2 knowledge document(s)" in out.getvalue()
    assert "crawl-2019" in out.getvalue() and "manual-2019" in out.getvalue()
    assert "Dry run: nothing was changed" in out.getvalue()
    assert titles(tenant_a) == {"crawl-2019", "crawl-2023", "manual-2019"}
    out = io.StringIO()
    call_command(
        "delete_documents",
        "--tenant",
        "tenant-a",
        "--filter",
        '{"document.year": 2019}',
        stdout=out,
    )
    assert "Deleted 2 knowledge document(s)" in out.getvalue()
    assert titles(tenant_a) == {"crawl-2023"}
    assert not default_storage.exists(documents["manual-2019"].storage_key)


def test_the_command_as_a_system_job_sees_restricted_documents(tenant_a, alice, documents):
    services.document_restrict(tenant=tenant_a, document=documents["crawl-2019"], by=alice)
    out = io.StringIO()
    call_command(
        "delete_documents",
        "--tenant",
        "tenant-a",
        "--filter",
        '{"document.year": 2019}',
        stdout=out,
    )
    assert "Deleted 2 knowledge document(s)" in out.getvalue()
    with tenant_context(tenant_a, user=alice):
        assert set(Document.objects.values_list("title", flat=True)) == {"crawl-2023"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--tenant", "tenant-a", "--filter", "{not json"], "--filter: not JSON"),
        (["--tenant", "tenant-a", "--filter", "[1]"], "--filter: give a JSON object"),
        (["--tenant", "nobody", "--filter", '{"document.year": 2019}'], "--tenant: No tenant"),
        (
            ["--tenant", "tenant-a", "--filter", '{"document.year": {"gte": "soon"}}'],
            "'document.year'",
        ),
        (["--tenant", "tenant-a", "--filter", "{}"], "--filter: Give at least one condition"),
        (
            ["--tenant", "tenant-a", "--filter", '{"document.year": 1}', "--project", "x"],
            "--project:",
        ),
    ],
)
def test_the_command_refuses_bad_input_with_a_message(tenant_a, documents, arguments, message):
    with pytest.raises(CommandError) as refused:
        call_command("delete_documents", *arguments, stdout=io.StringIO())
    assert message in str(refused.value)
    assert titles(tenant_a) == {"crawl-2019", "crawl-2023", "manual-2019"}
