"""Project templates: shared and per-tenant, found by tags and stack, rendered into projects."""

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from documents import selectors, services
from documents.models import DocumentVersion, Project, ProjectTemplate
from tenancy.context import system_context, tenant_context

FILES = {
    "about.md": "# {project_name}\n\nA {domain} service owned by {team}.",
    "plan.md": "1. Build {project_name}{suffix}",
    "README.md": "{project_name} for {team}",
}


def make_template(tenant, name="API service", **overrides):
    fields = {
        "files": FILES,
        "required_variables": ["domain", "team"],
        "optional_variables": ["suffix"],
        "tech_stack": ["python", "django"],
        "tags": ["backend", "api"],
        "complexity": "moderate",
        "setup_minutes": 30,
        **overrides,
    }
    return services.project_template_create(tenant=tenant, name=name, **fields)


def test_project_from_template_renders_files_into_versions(tenant_a, alice):
    template = make_template(tenant_a)
    project = services.project_create_from_template(
        tenant=tenant_a,
        template=template,
        name="Billing",
        variables={"domain": "payments", "team": "Core"},
        by=alice,
    )
    latest = selectors.latest_versions(tenant=tenant_a, project=project)
    assert latest["about"].content == "# Billing\n\nA payments service owned by Core."
    assert latest["plan"].content == "1. Build Billing"
    assert {v.version for v in latest.values()} == {1}
    assert latest["about"].created_by == alice
    assert project.metadata["template"] == {
        "id": str(template.pk),
        "name": "API service",
        "variables": {"domain": "payments", "suffix": "", "team": "Core"},
        "files": {"README.md": "Billing for Core"},
    }


def test_missing_required_variables_are_refused_and_named(tenant_a):
    template = make_template(tenant_a)
    with pytest.raises(ValidationError) as error:
        services.project_create_from_template(
            tenant=tenant_a, template=template, name="Billing", variables={"team": ""}
        )
    assert error.value.message_dict["variables"] == ["Missing required variables: domain, team."]
    with tenant_context(tenant_a):
        assert not Project.objects.exists()
        assert not DocumentVersion.objects.exists()


def test_unknown_variables_are_refused(tenant_a):
    template = make_template(tenant_a)
    with pytest.raises(ValidationError) as error:
        services.project_create_from_template(
            tenant=tenant_a,
            template=template,
            name="Billing",
            variables={"domain": "d", "team": "t", "colour": "red"},
        )
    assert error.value.message_dict["variables"] == ["Unknown variables: colour."]


def test_braces_render_literally_and_values_are_not_reinterpreted(tenant_a):
    template = make_template(tenant_a, files={"about.md": "{{literal}} {domain}"})
    project = services.project_create_from_template(
        tenant=tenant_a,
        template=template,
        name="X",
        variables={"domain": "{team.__class__}", "team": "t"},
    )
    about = selectors.latest_versions(tenant=tenant_a, project=project)["about"]
    assert about.content == "{literal} {team.__class__}"


@pytest.mark.parametrize(
    "files",
    [
        {"about.md": "{undeclared}"},
        {"about.md": "{domain.__class__}"},
        {"about.md": "{domain!r}"},
        {"about.md": "{unclosed"},
        {"about.md": "a", "About.txt": "b"},
        {"about.md": 3},
    ],
)
def test_bad_template_files_are_refused(tenant_a, files):
    with pytest.raises(ValidationError) as error:
        make_template(tenant_a, files=files)
    assert "files" in error.value.message_dict


def test_a_variable_cannot_be_both_required_and_optional(tenant_a):
    with pytest.raises(ValidationError) as error:
        make_template(tenant_a, optional_variables=["domain", "suffix"])
    assert "optional_variables" in error.value.message_dict


def test_complexity_and_setup_minutes_are_checked(tenant_a):
    with pytest.raises(ValidationError) as error:
        make_template(tenant_a, complexity="epic", setup_minutes=-1)
    assert {"complexity", "setup_minutes"} <= error.value.message_dict.keys()


def test_a_tenant_cannot_have_two_templates_of_one_name(tenant_a, tenant_b):
    make_template(tenant_a)
    make_template(tenant_b)
    with pytest.raises(ValidationError) as error:
        make_template(tenant_a)
    assert "__all__" in error.value.message_dict


def test_another_tenants_template_is_refused(tenant_a, tenant_b):
    template = make_template(tenant_a)
    with pytest.raises(ValidationError) as error:
        services.project_create_from_template(
            tenant=tenant_b, template=template, name="X", variables={"domain": "d", "team": "t"}
        )
    assert "template" in error.value.message_dict


def test_templates_find_by_tags_and_tech_stack(tenant_a):
    api = make_template(tenant_a)
    make_template(tenant_a, name="Web app", tech_stack=["typescript"], tags=["frontend"])
    find = selectors.templates_find
    assert find(tenant=tenant_a, tags=["api", "backend"]) == [api]
    assert find(tenant=tenant_a, tags=["api", "frontend"]) == []
    assert find(tenant=tenant_a, tech_stack=["go", "django"]) == [api]
    assert [t.name for t in find(tenant=tenant_a)] == ["API service", "Web app"]


# --- Shared templates and row-level security (system_context: transaction=True) ----


@pytest.fixture
def shared(transactional_db):
    return make_template(None, name="Shared starter", tags=["starter"])


@pytest.mark.django_db(transaction=True)
def test_shared_templates_are_found_by_every_tenant_own_ones_only_by_theirs(
    tenant_a, tenant_b, shared
):
    own = make_template(tenant_a, name="A only", tags=["starter"])
    assert selectors.templates_find(tenant=tenant_a, tags=["starter"]) == [own, shared]
    assert selectors.templates_find(tenant=tenant_b, tags=["starter"]) == [shared]


@pytest.mark.django_db(transaction=True)
def test_shared_template_names_are_unique_too(shared):
    with pytest.raises(ValidationError):
        make_template(None, name="Shared starter")


@pytest.mark.django_db(transaction=True)
def test_a_tenant_builds_a_project_from_a_shared_template(tenant_b, shared):
    project = services.project_create_from_template(
        tenant=tenant_b, template=shared, name="Mine", variables={"domain": "d", "team": "t"}
    )
    assert project.tenant_id == tenant_b.pk
    assert set(selectors.latest_versions(tenant=tenant_b, project=project)) == {"about", "plan"}


@pytest.mark.django_db(transaction=True)
def test_a_tenant_can_neither_change_nor_delete_a_shared_template(tenant_a, shared):
    with tenant_context(tenant_a):
        assert ProjectTemplate.objects.filter(pk=shared.pk).update(tenant=tenant_a) == 0
        assert ProjectTemplate.objects.filter(pk=shared.pk).delete()[0] == 0
    with system_context("test: shared template untouched"):
        assert ProjectTemplate.objects.get(pk=shared.pk).tenant_id is None


@pytest.mark.django_db(transaction=True)
def test_a_tenant_cannot_write_a_shared_template(tenant_a):
    with pytest.raises(DatabaseError, match="row-level security"):
        with tenant_context(tenant_a), transaction.atomic():
            ProjectTemplate.objects.create(name="Sneaky", tenant=None)
