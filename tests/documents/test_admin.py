"""The documents admin: a version's diff with the previous one, and project templates.

Requests go through the tenant middleware (not wrapped in tenant_context); rows are made
through documents.services. Shared templates are written in system_context, so their
tests use transaction=True.
"""

import pytest
from django.urls import reverse

from documents.models import DocumentVersion, ProjectTemplate
from documents.services import document_version_create, project_create, project_template_create
from tenancy.context import system_context, tenant_context
from tests.conftest import make_member

REFUSED = (403, 404)


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def logged_in(client, user):
    client.force_login(user)
    return client


def listed(client, model, **params) -> list:
    response = client.get(admin_url(model, "changelist"), params)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


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
    assert '<pre class="version-diff">' in page
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
    assert f'href="{admin_url(DocumentVersion, "change", first.pk)}">plan v1</a>' in (
        response.content.decode()
    )


def test_first_version_page_says_so(client, alice, versions):
    first, _ = versions
    response = logged_in(client, alice).get(admin_url(DocumentVersion, "change", first.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "first version" in page
    assert "version-diff" not in page.split("</style>")[-1]


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
