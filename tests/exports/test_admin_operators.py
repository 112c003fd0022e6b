"""The exports admin for operators (issue 11): the projects' "export" action, the manifest
as a table, and which exports may be deleted on their own.

Requests go through the tenant middleware; rows are made through the services, export
files in a temporary storage.
"""

import pytest
from django.contrib.messages import get_messages

from documents.models import DocumentVersion, Project
from documents.services import document_version_create, project_create, project_soft_delete
from exports.models import Export
from exports.services import BUILD_TASK, export_build, export_create
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_member
from tests.worker import jobs

pytestmark = pytest.mark.usefixtures("file_storages")


@pytest.fixture
def project(tenant_a, alice) -> Project:
    project = project_create(tenant=tenant_a, name="Apollo", by=alice)
    document_version_create(tenant=tenant_a, project=project, document_type="about", content="A")
    return project


@pytest.fixture
def empty_project(tenant_a, alice) -> Project:
    return project_create(tenant=tenant_a, name="Empty", by=alice)


def exports_of(project: Project) -> list[Export]:
    with tenant_context(project.tenant_id):
        return list(Export.objects.filter(project=project))


def export_action(client, *projects):
    return client.post(
        admin_url(Project, "changelist"),
        {"action": "export_projects", "_selected_action": [p.pk for p in projects]},
        follow=True,
    )


# --- The projects' "export" action ----------------------------------------------------------


def test_the_action_queues_an_export_that_the_worker_builds(client, alice, project):
    response = export_action(logged_in(client, alice), project)
    assert response.status_code == 200
    [export] = exports_of(project)
    assert (export.status, export.format, export.created_by_id) == ("pending", "zip", alice.pk)
    assert "Exports queued: 1." in [str(m) for m in get_messages(response.wsgi_request)]
    [job] = jobs(BUILD_TASK)
    assert job["args"] == {"tenant_id": str(project.tenant_id), "export_id": str(export.pk)}
    # What the worker's job runs (a real worker: tests/exports/test_export_worker.py).
    built = export_build(tenant=project.tenant_id, export_id=export.pk)
    assert built.status == "completed"
    assert built.manifest["project_name"] == "Apollo"


def test_the_action_reports_a_project_that_cannot_be_exported(
    client, alice, tenant_a, project, empty_project
):
    project_soft_delete(tenant=tenant_a, project=project)
    response = export_action(logged_in(client, alice), project, empty_project)
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Exports queued: 1." in messages
    refused = next(message for message in messages if message.startswith("Refused: "))
    assert 'Apollo: The project "Apollo" was deleted; it takes no new exports.' in refused
    assert exports_of(project) == []
    # The empty project's export is queued, and its build fails saying why.
    [export] = exports_of(empty_project)
    failed = export_build(tenant=tenant_a, export_id=export.pk)
    assert (failed.status, failed.error_message) == (
        "failed",
        "The project has no document versions to export.",
    )


def test_a_viewer_is_not_offered_the_action(client, tenant_a, project):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    client = logged_in(client, viewer)
    actions = client.get(admin_url(Project, "changelist")).context["action_form"]
    assert actions is None or "export_projects" not in dict(actions.fields["action"].choices)
    export_action(client, project)
    assert exports_of(project) == []


# --- The manifest as a table ----------------------------------------------------------------


def test_the_manifest_is_a_table_linking_to_its_versions(client, alice, tenant_a, project):
    export = export_create(tenant=tenant_a, project=project, by=alice)
    page = logged_in(client, alice).get(admin_url(Export, "change", export.pk)).content.decode()
    assert '<table class="export-manifest">' in page
    assert '<tr><th scope="row">project_name</th><td>Apollo</td></tr>' in page
    [document] = export.manifest["documents"]
    version_url = admin_url(DocumentVersion, "change", document["version_id"])
    assert f'<td><a href="{version_url}">v1</a></td>' in page
    assert f"<td><code>{document['content_sha256']}</code></td>" in page
    # Not the JSON paragraph any more.
    assert '"manifest_version"' not in page


def test_a_failed_export_says_it_has_no_manifest(client, alice, tenant_a, empty_project):
    export = export_create(tenant=tenant_a, project=empty_project, by=alice)
    page = logged_in(client, alice).get(admin_url(Export, "change", export.pk)).content.decode()
    assert "No manifest: the export has no file." in page


# --- What may be deleted ------------------------------------------------------------------


def test_a_completed_export_is_not_deleted_on_its_own(client, alice, tenant_a, project):
    export = export_create(tenant=tenant_a, project=project, by=alice)
    client = logged_in(client, alice)
    page = client.get(admin_url(Export, "change", export.pk))
    assert not page.context["has_delete_permission"]
    assert client.post(admin_url(Export, "delete", export.pk), {"post": "yes"}).status_code == 403
    assert exports_of(project) == [export]


def test_a_failed_export_may_be_deleted(client, alice, tenant_a, empty_project):
    export = export_create(tenant=tenant_a, project=empty_project, by=alice)
    response = logged_in(client, alice).post(
        admin_url(Export, "delete", export.pk), {"post": "yes"}
    )
    assert response.status_code == 302
    assert exports_of(empty_project) == []


def test_a_completed_export_goes_with_its_project(client, superuser, alice, tenant_a, project):
    export_create(tenant=tenant_a, project=project, by=alice)
    client = logged_in(client, superuser)
    confirm = client.get(admin_url(Project, "delete", project.pk))
    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]
    assert client.post(admin_url(Project, "delete", project.pk), {"post": "yes"}).status_code == 302
    assert exports_of(project) == []
