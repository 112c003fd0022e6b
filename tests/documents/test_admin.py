"""The documents admin: a version's diff with the previous one, project templates, which
rows may change or go, who created a row, and live projects only as choices.

Requests go through the tenant middleware (not wrapped in tenant_context); rows are made
through documents.services. Shared templates are written in system_context, so their
tests use transaction=True.
"""

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core.ids import uuid7
from documents.models import Chunk, Document, DocumentVersion, Project, ProjectTemplate
from documents.services import (
    document_version_create,
    project_create,
    project_soft_delete,
    project_template_create,
)
from tenancy.context import system_context, tenant_context
from tests.admin_helpers import REFUSED, admin_url, listed, logged_in
from tests.factories import make_member

# --- A version's diff with the previous one ---------------------------------------------


@pytest.fixture
def versions(tenant_a, alice) -> tuple[DocumentVersion, DocumentVersion]:
    project = project_create(tenant=tenant_a, name="Apollo", by=alice)
    first = document_version_create(
        tenant=tenant_a,
        project=project,
        document_type="plan",
        content="Build the rocket\nFuel <it>\nLaunch",
        metadata={"owner": "alice", "draft": True},
    )
    second = document_version_create(
        tenant=tenant_a,
        project=project,
        document_type="plan",
        content="Build the rocket\nLaunch\nLand on the Moon",
        metadata={"owner": "bob", "reviewed": True},
    )
    return first, second


def test_second_version_page_shows_the_diff(client, alice, versions):
    first, second = versions
    response = logged_in(client, alice).get(admin_url(DocumentVersion, "change", second.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert '<pre class="version-diff" tabindex="0">' in page
    assert '<span class="diff-add">+Land on the Moon</span>' in page
    # Deletions too, escaped: the diff is text, never markup.
    assert '<span class="diff-del">-Fuel &lt;it&gt;</span>' in page
    assert '<span class="diff-hunk">@@' in page


def test_diff_shows_metadata_changes(client, alice, versions):
    _, second = versions
    page = logged_in(client, alice).get(admin_url(DocumentVersion, "change", second.pk))
    html = page.content.decode()
    assert '<tr class="diff-add"><td>added</td><td>reviewed</td><td>true</td></tr>' in html
    assert '<tr class="diff-del"><td>removed</td><td>draft</td><td>true</td></tr>' in html
    assert "<td>owner</td><td>&quot;alice&quot; → &quot;bob&quot;</td>" in html


def test_second_version_links_to_the_first(client, alice, versions):
    first, second = versions
    response = logged_in(client, alice).get(admin_url(DocumentVersion, "change", second.pk))
    assert f'href="{admin_url(DocumentVersion, "change", first.pk)}">open plan v1</a>' in (
        response.content.decode()
    )


def test_first_version_page_says_so(client, alice, versions):
    first, _ = versions
    response = logged_in(client, alice).get(admin_url(DocumentVersion, "change", first.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "first version" in page
    assert '<pre class="version-diff"' not in page.split("</style>")[-1]


def test_diff_page_has_its_colours(client, alice, versions):
    _, second = versions
    response = logged_in(client, alice).get(admin_url(DocumentVersion, "change", second.pk))
    assert ".version-diff .diff-add" in response.content.decode()


def test_a_viewer_sees_the_diff_read_only(client, tenant_a, versions):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    _, second = versions
    response = logged_in(client, viewer).get(admin_url(DocumentVersion, "change", second.pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]
    assert "+Land on the Moon" in response.content.decode()


def test_bob_cannot_open_alices_version(client, bob, versions):
    _, second = versions
    response = logged_in(client, bob).get(admin_url(DocumentVersion, "change", second.pk))
    assert response.status_code in REFUSED


# --- Project templates ------------------------------------------------------------------

FILES = {"about.md": "# {project_name}\n\nA {domain} service."}


def make_template(tenant, name: str) -> ProjectTemplate:
    return project_template_create(
        tenant=tenant,
        name=name,
        files=FILES,
        required_variables=["domain"],
        tags=["backend", "api"],
        tech_stack=["python"],
        complexity="moderate",
        setup_minutes=15,
    )


@pytest.fixture
def own_templates(tenant_a, tenant_b) -> dict:
    return {"A": make_template(tenant_a, "A service"), "B": make_template(tenant_b, "B service")}


@pytest.fixture
def shared(transactional_db) -> ProjectTemplate:
    return make_template(None, "Shared starter")


def add_form(owner, **overrides) -> dict:
    return {
        "tenant": owner.pk,
        "name": "Worker",
        "description": "A queue worker",
        "files": '{"about.md": "{project_name} consumes {queue}"}',
        "required_variables": "queue",
        "optional_variables": "",
        "tech_stack": "python,celery",
        "tags": "backend",
        "complexity": "simple",
        "setup_minutes": 5,
        **overrides,
    }


def test_alice_lists_her_templates_not_bobs(client, alice, own_templates):
    assert listed(logged_in(client, alice), ProjectTemplate) == [own_templates["A"].pk]


def test_alice_cannot_open_bobs_template(client, alice, own_templates):
    url = admin_url(ProjectTemplate, "change", own_templates["B"].pk)
    assert logged_in(client, alice).get(url).status_code in REFUSED


def test_changelist_shows_tags_stack_and_tenant(client, alice, own_templates):
    page = logged_in(client, alice).get(admin_url(ProjectTemplate, "changelist")).content
    assert b"backend, api" in page
    assert b"Tenant A" in page


@pytest.mark.django_db(transaction=True)
def test_shared_template_is_visible_to_alice(client, alice, shared, own_templates):
    client = logged_in(client, alice)
    assert set(listed(client, ProjectTemplate)) == {shared.pk, own_templates["A"].pk}
    assert listed(client, ProjectTemplate, scope="shared") == [shared.pk]
    assert listed(client, ProjectTemplate, scope="own") == [own_templates["A"].pk]
    page = client.get(admin_url(ProjectTemplate, "changelist")).content.decode()
    assert '<td class="field-tenant_or_shared">shared</td>' in page


@pytest.mark.django_db(transaction=True)
def test_shared_template_is_read_only_for_alice(client, alice, shared):
    client = logged_in(client, alice)
    url = admin_url(ProjectTemplate, "change", shared.pk)
    response = client.get(url)
    assert response.status_code == 200
    assert not response.context["has_change_permission"]
    assert not response.context["has_delete_permission"]
    assert "project_template_create(tenant=None, ...)" in response.content.decode()
    refused = client.post(url, {"name": "Taken over", "complexity": "simple", "setup_minutes": 0})
    assert refused.status_code == 403
    assert client.get(admin_url(ProjectTemplate, "delete", shared.pk)).status_code == 403
    with system_context("test: shared template unchanged"):
        assert ProjectTemplate.objects.get(pk=shared.pk).name == "Shared starter"


@pytest.mark.django_db(transaction=True)
def test_shared_template_is_read_only_for_superusers_too(client, superuser, shared):
    response = logged_in(client, superuser).get(admin_url(ProjectTemplate, "change", shared.pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]


@pytest.mark.django_db(transaction=True)
def test_staff_without_a_tenant_do_not_see_shared_templates(client, charlie, shared):
    client = logged_in(client, charlie)
    assert listed(client, ProjectTemplate) == []
    assert client.get(admin_url(ProjectTemplate, "change", shared.pk)).status_code in REFUSED


def test_alice_changes_her_template(client, alice, own_templates):
    template = own_templates["A"]
    response = logged_in(client, alice).post(
        admin_url(ProjectTemplate, "change", template.pk),
        {
            "name": "A service, renamed",
            "description": "",
            "tech_stack": "python",
            "tags": "api",
            "complexity": "complex",
            "setup_minutes": 60,
        },
    )
    assert response.status_code == 302
    with tenant_context(template.tenant_id):
        template.refresh_from_db()
    assert (template.name, template.complexity, template.tags) == (
        "A service, renamed",
        "complex",
        ["api"],
    )
    assert template.files == FILES


def test_a_template_name_is_unique_within_the_tenant(client, alice, tenant_a, own_templates):
    make_template(tenant_a, "Other")
    response = logged_in(client, alice).post(
        admin_url(ProjectTemplate, "change", own_templates["A"].pk),
        {"name": "Other", "complexity": "simple", "setup_minutes": 0},
    )
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors


def test_alice_adds_a_template_through_the_service(client, alice, tenant_a):
    response = logged_in(client, alice).post(admin_url(ProjectTemplate, "add"), add_form(tenant_a))
    assert response.status_code == 302
    with tenant_context(tenant_a):
        template = ProjectTemplate.objects.get(name="Worker")
    assert template.tenant_id == tenant_a.pk
    assert template.required_variables == ["queue"]
    assert template.tech_stack == ["python", "celery"]


def test_undeclared_placeholders_come_back_as_form_errors(client, alice, tenant_a):
    response = logged_in(client, alice).post(
        admin_url(ProjectTemplate, "add"), add_form(tenant_a, required_variables="")
    )
    assert response.status_code == 200
    assert "files" in response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        assert not ProjectTemplate.objects.filter(name="Worker").exists()


def test_a_template_needs_a_tenant_in_the_admin(client, superuser, tenant_a):
    response = logged_in(client, superuser).post(
        admin_url(ProjectTemplate, "add"), add_form(tenant_a, tenant="")
    )
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors


# --- Versions never change nor disappear; projects are soft-deleted ------------------------


@pytest.mark.parametrize("user", ["alice", "superuser"])
def test_nobody_deletes_a_version_on_its_own_pages(client, request, versions, user):
    client = logged_in(client, request.getfixturevalue(user))
    _, second = versions
    assert client.get(admin_url(DocumentVersion, "delete", second.pk)).status_code == 403
    assert (
        client.post(admin_url(DocumentVersion, "delete", second.pk), {"post": "yes"}).status_code
        == 403
    )
    changelist = client.get(admin_url(DocumentVersion, "changelist"))
    assert changelist.context["action_form"] is None  # delete_selected is its only action
    bulk = client.post(
        admin_url(DocumentVersion, "changelist"),
        {"action": "delete_selected", "_selected_action": [second.pk], "post": "yes"},
    )
    assert bulk.status_code == 200  # no such action: the changelist again
    with tenant_context(second.tenant_id):
        assert DocumentVersion.objects.filter(pk__in=[v.pk for v in versions]).count() == 2


def test_a_superuser_deletes_a_project_with_its_versions(client, superuser, versions):
    project_id = versions[0].project_id
    client = logged_in(client, superuser)
    confirm = client.get(admin_url(Project, "delete", project_id))
    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]  # the cascade to the versions is allowed
    assert client.post(admin_url(Project, "delete", project_id), {"post": "yes"}).status_code == 302
    with tenant_context(versions[0].tenant_id):
        assert not Project.all_objects.filter(pk=project_id).exists()
        assert not DocumentVersion.objects.filter(project_id=project_id).exists()


@pytest.mark.parametrize("role", ["owner", "editor"])
def test_members_soft_delete_projects_but_never_hard_delete(client, tenant_a, versions, role):
    user = make_member(tenant_a, f"{role}@example.com", role=role, is_staff=True)
    project_id = versions[0].project_id
    client = logged_in(client, user)
    assert client.get(admin_url(Project, "delete", project_id)).status_code == 403
    changelist = client.get(admin_url(Project, "changelist"))
    actions = [name for name, _ in changelist.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert "soft_delete" in actions
    client.post(
        admin_url(Project, "changelist"),
        {"action": "delete_selected", "_selected_action": [project_id], "post": "yes"},
    )
    client.post(
        admin_url(Project, "changelist"),
        {"action": "soft_delete", "_selected_action": [project_id]},
    )
    with tenant_context(tenant_a):
        assert Project.all_objects.get(pk=project_id).deleted_at is not None
        assert DocumentVersion.objects.filter(project_id=project_id).count() == 2


# --- Chunks come from ingestion: no add, only metadata changes ------------------------------


@pytest.fixture
def chunk(tenant_a) -> Chunk:
    with tenant_context(tenant_a):
        document = Document.objects.create(
            tenant=tenant_a, title="Handbook", storage_key=f"documents/{tenant_a.pk}/{uuid7()}"
        )
        return Chunk.objects.create(
            tenant=tenant_a,
            document=document,
            ordinal=0,
            content="Rockets need fuel.",
            token_count=3,
            embedding_model="hashing",
        )


@pytest.mark.parametrize("user", ["alice", "superuser"])
def test_nobody_adds_chunks_in_the_admin(client, request, user):
    client = logged_in(client, request.getfixturevalue(user))
    assert client.get(admin_url(Chunk, "add")).status_code == 403


def test_only_a_chunks_metadata_changes(client, alice, chunk):
    client = logged_in(client, alice)
    page = client.get(admin_url(Chunk, "change", chunk.pk))
    assert set(page.context["adminform"].form.fields) == {"metadata"}
    response = client.post(
        admin_url(Chunk, "change", chunk.pk),
        {
            "document": uuid7(),
            "ordinal": 5,
            "content": "Rewritten",
            "token_count": 99,
            "embedding_model": "other",
            "metadata": '{"reviewed": true}',
        },
    )
    assert response.status_code == 302
    with tenant_context(chunk.tenant_id):
        stored = Chunk.objects.get(pk=chunk.pk)
    assert (stored.document_id, stored.ordinal, stored.content) == (
        chunk.document_id,
        0,
        "Rockets need fuel.",
    )
    assert (stored.token_count, stored.embedding_model) == (3, "hashing")
    assert stored.metadata == {"reviewed": True}


# --- created_by is whoever adds the row ---------------------------------------------------


@pytest.fixture
def editor(tenant_a):
    return make_member(tenant_a, "eddie@example.com", role="editor", is_staff=True)


def project_form(tenant, **overrides) -> dict:
    return {
        "tenant": tenant.pk,
        "name": "Gemini",
        "status": "draft",
        "current_step": 1,
        "language": "en",
        "metadata": "{}",
        **overrides,
    }


@pytest.mark.parametrize("model", [Project, DocumentVersion, Document])
def test_add_forms_do_not_ask_who_created_the_row(client, editor, model):
    response = logged_in(client, editor).get(admin_url(model, "add"))
    assert "created_by" not in response.context["adminform"].form.fields
    assert "created_by" not in response.content.decode()


def test_an_editor_cannot_attribute_a_project_to_someone_else(client, tenant_a, alice, editor):
    response = logged_in(client, editor).post(
        admin_url(Project, "add"), project_form(tenant_a, created_by=alice.pk)
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert Project.objects.get(name="Gemini").created_by_id == editor.pk


def test_an_editor_cannot_attribute_a_version_to_someone_else(
    client, tenant_a, alice, editor, versions
):
    project_id = versions[0].project_id
    response = logged_in(client, editor).post(
        admin_url(DocumentVersion, "add"),
        {
            "tenant": tenant_a.pk,
            "project": project_id,
            "document_type": "plan",
            "content": "Launch twice",
            "metadata": "{}",
            "created_by": alice.pk,
        },
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        added = DocumentVersion.objects.get(project_id=project_id, document_type="plan", version=3)
    assert added.created_by_id == editor.pk


def test_an_editor_cannot_attribute_a_document_to_someone_else(
    client, tenant_a, alice, editor, file_storages
):
    upload = SimpleUploadedFile("notes.txt", b"Fuel first.", "text/plain")
    response = logged_in(client, editor).post(
        admin_url(Document, "add"),
        {"tenant": tenant_a.pk, "file": upload, "metadata": "{}", "created_by": alice.pk},
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert Document.objects.get(title="notes.txt").created_by_id == editor.pk


def test_created_by_is_read_only_on_change(client, tenant_a, alice, editor, versions):
    project_id = versions[0].project_id
    client = logged_in(client, editor)
    page = client.get(admin_url(Project, "change", project_id))
    assert "created_by" not in page.context["adminform"].form.fields
    response = client.post(
        admin_url(Project, "change", project_id),
        project_form(tenant_a, name="Apollo 2", created_by=editor.pk),
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        project = Project.objects.get(pk=project_id)
    assert (project.name, project.created_by_id) == ("Apollo 2", alice.pk)


# --- Nothing new points at a soft-deleted project -------------------------------------------


@pytest.fixture
def deleted_project(tenant_a, alice) -> Project:
    project = project_create(tenant=tenant_a, name="Cancelled", by=alice)
    document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="Never flown"
    )
    return project_soft_delete(tenant=tenant_a, project=project)


def autocomplete(client, app_label: str, model_name: str, field_name: str) -> list[str]:
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": app_label, "model_name": model_name, "field_name": field_name},
    )
    assert response.status_code == 200
    return [result["id"] for result in response.json()["results"]]


@pytest.mark.parametrize("model", [DocumentVersion, Document])
def test_project_choices_leave_out_deleted_projects(
    client, tenant_a, alice, versions, deleted_project, model
):
    response = logged_in(client, alice).get(admin_url(model, "add"))
    choices = response.context["adminform"].form.fields["project"].queryset
    with tenant_context(tenant_a):
        assert list(choices) == [versions[0].project]


@pytest.mark.parametrize("user", ["alice", "superuser"])
def test_project_autocomplete_leaves_out_deleted_projects(
    client, request, versions, deleted_project, user
):
    client = logged_in(client, request.getfixturevalue(user))
    live = str(versions[0].project_id)
    assert autocomplete(client, "documents", "documentversion", "project") == [live]
    assert autocomplete(client, "documents", "document", "project") == [live]


def test_the_project_changelist_still_lists_deleted_projects(
    client, alice, versions, deleted_project
):
    assert set(listed(logged_in(client, alice), Project)) == {
        versions[0].project_id,
        deleted_project.pk,
    }


def test_a_version_cannot_be_added_to_a_deleted_project(client, superuser, deleted_project):
    response = logged_in(client, superuser).post(
        admin_url(DocumentVersion, "add"),
        {
            "tenant": deleted_project.tenant_id,
            "project": deleted_project.pk,
            "document_type": "about",
            "content": "Flown after all",
            "metadata": "{}",
        },
    )
    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors
    with tenant_context(deleted_project.tenant_id):
        assert DocumentVersion.objects.filter(project=deleted_project).count() == 1


def test_a_document_keeps_its_deleted_project_when_changed(client, tenant_a, alice):
    # Uploaded while the project was live: a deleted project takes no new upload.
    deleted_project = project_create(tenant=tenant_a, name="Cancelled", by=alice)
    with tenant_context(tenant_a):
        document = Document.objects.create(
            tenant=tenant_a,
            project=deleted_project,
            title="Old notes",
            storage_key=f"documents/{tenant_a.pk}/{uuid7()}",
        )
    project_soft_delete(tenant=tenant_a, project=deleted_project)
    client = logged_in(client, alice)
    url = admin_url(Document, "change", document.pk)
    choices = client.get(url).context["adminform"].form.fields["project"].queryset
    with tenant_context(tenant_a):
        assert list(choices) == [deleted_project]
    response = client.post(
        url, {"project": deleted_project.pk, "title": "Older notes", "metadata": "{}"}
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        document.refresh_from_db()
    assert (document.title, document.project_id) == ("Older notes", deleted_project.pk)


# --- Adding a version with the latest's content keeps that version ---------------------------


def version_form(version: DocumentVersion, content: str) -> dict:
    return {
        "tenant": version.tenant_id,
        "project": version.project_id,
        "document_type": version.document_type,
        "content": content,
        "metadata": "{}",
    }


def additions(obj) -> int:
    return LogEntry.objects.filter(
        object_id=str(obj.pk), action_flag=ADDITION, content_type__model=obj._meta.model_name
    ).count()


def test_the_latest_content_again_keeps_that_version(client, alice, versions):
    _, second = versions
    response = logged_in(client, alice).post(
        admin_url(DocumentVersion, "add"), version_form(second, second.content)
    )
    assert response.status_code == 302
    assert response.url == admin_url(DocumentVersion, "change", second.pk)
    notes = [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]
    assert notes == [("info", "unchanged: version 2 kept")]
    assert additions(second) == 0
    with tenant_context(second.tenant_id):
        assert DocumentVersion.objects.filter(project_id=second.project_id).count() == 2


def test_new_content_is_added_and_logged(client, alice, versions):
    _, second = versions
    response = logged_in(client, alice).post(
        admin_url(DocumentVersion, "add"), version_form(second, "Land twice")
    )
    assert response.status_code == 302
    with tenant_context(second.tenant_id):
        added = DocumentVersion.objects.get(project_id=second.project_id, version=3)
    assert additions(added) == 1
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["success"]
