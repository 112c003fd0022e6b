"""The exports admin: status, expiry, size, a counted download of the file, and adding one.

Requests go through the tenant middleware, whose transaction the download count commits
with; rows are made through the services, files in a temporary storage.
"""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.files.storage import storages
from django.urls import reverse
from django.utils import timezone

from documents.services import document_version_create, project_create, project_soft_delete
from exports.models import Export
from exports.services import export_create
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_member


@pytest.fixture
def export_storage(file_storages):
    """The exports storage, writing in the test's own folder."""
    return storages["exports"]


@pytest.fixture
def project(tenant_a, alice):
    project = project_create(tenant=tenant_a, name="Apollo Program", by=alice)
    document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="Go to the Moon."
    )
    return project


@pytest.fixture
def completed(tenant_a, alice, project, export_storage) -> Export:
    export = export_create(tenant=tenant_a, project=project, format="markdown", by=alice)
    assert export.status == Export.Status.COMPLETED
    return export


@pytest.fixture
def pending(tenant_a, project) -> Export:
    # The services build an export at once; a pending row is what a crashed build leaves.
    with tenant_context(tenant_a):
        return Export.objects.create(tenant=tenant_a, project=project)


def download_count(export: Export) -> int:
    with tenant_context(export.tenant_id):
        return Export.objects.values_list("download_count", flat=True).get(pk=export.pk)


def body(response) -> bytes:
    # Reading a streamed response to the end closes it (and its file) the way the test
    # client expects; closing it again would end the test's database connection.
    return b"".join(response.streaming_content)


def error_messages(response) -> list[str]:
    return [m.message for m in get_messages(response.wsgi_request) if m.level_tag == "error"]


def test_changelist_shows_size_expiry_and_a_download_link(client, alice, completed, pending):
    page = logged_in(client, alice).get(admin_url(Export, "changelist")).content.decode()
    download = admin_url(Export, "download", completed.pk)
    assert f'<a href="{download}">Download</a>' in page
    assert admin_url(Export, "download", pending.pk) not in page
    assert f"{completed.size_bytes}\xa0bytes" in page


def test_change_page_has_the_download_link(client, alice, completed):
    page = logged_in(client, alice).get(admin_url(Export, "change", completed.pk)).content.decode()
    assert f'<a href="{admin_url(Export, "download", completed.pk)}">Download</a>' in page


def test_alice_downloads_a_completed_export(client, alice, completed, export_storage):
    response = logged_in(client, alice).get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="apollo-program-' in disposition
    assert disposition.endswith('.md"')
    assert response["Content-Type"].startswith("text/markdown")
    with export_storage.open(completed.storage_key, "rb") as stored:
        assert body(response) == stored.read()
    assert download_count(completed) == 1


def test_each_download_is_counted(client, alice, completed):
    client = logged_in(client, alice)
    for _ in range(2):
        body(client.get(admin_url(Export, "download", completed.pk)))
    assert download_count(completed) == 2


def test_a_viewer_may_download(client, tenant_a, completed):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = logged_in(client, viewer).get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 200
    assert body(response)


def test_an_expired_export_is_refused(client, alice, completed):
    with tenant_context(completed.tenant_id):
        Export.objects.filter(pk=completed.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )
    # The admin does not judge expiry itself: the link stays until the purge expires
    # the row, and export_download (the one rule, on the database's clock) refuses it.
    page = logged_in(client, alice).get(admin_url(Export, "changelist")).content.decode()
    assert admin_url(Export, "download", completed.pk) in page
    response = client.get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 302
    assert response.url == admin_url(Export, "change", completed.pk)
    assert any("expired" in message for message in error_messages(response))
    assert download_count(completed) == 0


@pytest.mark.parametrize("status", ["failed", "expired"])
def test_only_a_completed_export_has_a_download_link(client, alice, completed, status):
    with tenant_context(completed.tenant_id):
        Export.objects.filter(pk=completed.pk).update(status=status)
    client = logged_in(client, alice)
    for view, args in (("changelist", ()), ("change", (completed.pk,))):
        page = client.get(admin_url(Export, view, *args)).content.decode()
        assert admin_url(Export, "download", completed.pk) not in page


def test_a_pending_export_is_refused(client, alice, pending):
    response = logged_in(client, alice).get(admin_url(Export, "download", pending.pk))
    assert response.status_code == 302
    assert response.url == admin_url(Export, "change", pending.pk)
    assert any("pending" in message for message in error_messages(response))
    assert download_count(pending) == 0


def test_bob_gets_404_for_alices_export(client, bob, completed):
    response = logged_in(client, bob).get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 404
    assert download_count(completed) == 0


def test_charlie_gets_404(client, charlie, completed):
    assert (
        logged_in(client, charlie).get(admin_url(Export, "download", completed.pk)).status_code
        == 404
    )


def test_an_unknown_id_is_404(client, alice, completed):
    assert (
        logged_in(client, alice).get(admin_url(Export, "download", "not-an-id")).status_code == 404
    )


def test_a_missing_file_is_404_and_not_counted(client, alice, completed, export_storage):
    export_storage.delete(completed.storage_key)
    response = logged_in(client, alice).get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 404
    assert download_count(completed) == 0


def test_anonymous_users_are_sent_to_the_login(client, completed):
    response = client.get(admin_url(Export, "download", completed.pk))
    assert response.status_code == 302
    assert reverse("admin:login") in response.url


# --- Adding an export ---------------------------------------------------------------------


def test_an_export_is_attributed_to_whoever_adds_it(
    client, tenant_a, alice, project, export_storage
):
    editor = make_member(tenant_a, "eddie@example.com", role="editor", is_staff=True)
    client = logged_in(client, editor)
    assert "created_by" not in client.get(admin_url(Export, "add")).context["adminform"].form.fields
    response = client.post(
        admin_url(Export, "add"),
        {
            "tenant": tenant_a.pk,
            "project": project.pk,
            "format": "markdown",
            "created_by": alice.pk,
        },
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        export = Export.objects.get(project=project)
    assert export.created_by_id == editor.pk
    page = client.get(admin_url(Export, "change", export.pk))
    assert "created_by" not in page.context["adminform"].form.fields


def test_a_deleted_project_is_not_offered_for_export(client, tenant_a, alice, project):
    project_soft_delete(tenant=tenant_a, project=project)
    client = logged_in(client, alice)
    choices = (
        client.get(admin_url(Export, "add")).context["adminform"].form.fields["project"].queryset
    )
    with tenant_context(tenant_a):
        assert not choices.exists()
    response = client.post(
        admin_url(Export, "add"),
        {"tenant": tenant_a.pk, "project": project.pk, "format": "markdown"},
    )
    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        assert not Export.objects.exists()


def test_the_expiry_date_and_time_inputs_have_labels(client, alice, completed):
    """Django's bare "Date:"/"Time:" text is the inputs' labels (core.admin_labels)."""
    response = logged_in(client, alice).get(admin_url(Export, "change", completed.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert '<label for="id_expires_at_0">Date:</label>' in page
    assert '<label for="id_expires_at_1">Time:</label>' in page
