"""core.services.model_update: the plain update behind the admin's change forms."""

import pytest
from django.core.exceptions import ValidationError

from core.services import model_update
from documents.models import Project
from documents.services import project_create
from tenancy.context import tenant_context


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


def test_only_the_given_fields_are_written(tenant_a, project):
    with tenant_context(tenant_a):
        # Another writer changed another column since `project` was read.
        Project.objects.filter(pk=project.pk).update(language="de")
        model_update(instance=project, data={"name": "Apollo 2"})
        stored = Project.objects.get(pk=project.pk)
    assert (stored.name, stored.language) == ("Apollo 2", "de")


def test_a_value_the_model_refuses_is_refused_naming_the_field(tenant_a, project):
    with tenant_context(tenant_a), pytest.raises(ValidationError) as error:
        model_update(instance=project, data={"current_step": 9})
    assert "current_step" in error.value.message_dict
    with tenant_context(tenant_a):
        assert Project.objects.get(pk=project.pk).current_step == 1
