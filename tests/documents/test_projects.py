"""project_soft_delete and project_restore: validated saves, updated_at from the trigger."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from documents import services
from documents.models import Project
from tenancy.context import tenant_context


@pytest.fixture
def project(tenant_a) -> Project:
    return services.project_create(tenant=tenant_a, name="Apollo")


def stored(tenant, project) -> Project:
    with tenant_context(tenant):
        return Project.all_objects.get(pk=project.pk)


def test_soft_delete_then_restore(tenant_a, project):
    services.project_soft_delete(tenant=tenant_a, project=project)
    assert stored(tenant_a, project).deleted_at == project.deleted_at is not None
    services.project_restore(tenant=tenant_a, project=project)
    assert stored(tenant_a, project).deleted_at is project.deleted_at is None


@pytest.mark.parametrize("service", [services.project_soft_delete, services.project_restore])
def test_the_instance_gets_the_updated_at_the_trigger_stored(tenant_a, project, service):
    if service is services.project_restore:
        services.project_soft_delete(tenant=tenant_a, project=project)
    project.updated_at -= timedelta(days=1)
    service(tenant=tenant_a, project=project)
    assert project.updated_at == stored(tenant_a, project).updated_at


def test_soft_delete_validates_the_project_before_saving(tenant_a, project):
    project.current_step = 9
    with pytest.raises(ValidationError) as error:
        services.project_soft_delete(tenant=tenant_a, project=project)
    assert "current_step" in error.value.message_dict
    assert stored(tenant_a, project).deleted_at is None


def test_creating_a_row_reads_nothing_by_its_id_alone(tenant_a):
    """full_clean() skips Django's primary-key check: the id is a new UUIDv7 and the key
    is the database's, and on Citus a read by id alone asks every shard."""
    with CaptureQueriesContext(connection) as queries:
        project = services.project_create(tenant=tenant_a, name="routed")
    by_id_alone = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT")
        and project.pk.hex in query["sql"]
        and '"tenant_id"' not in query["sql"]
    ]
    assert by_id_alone == []
