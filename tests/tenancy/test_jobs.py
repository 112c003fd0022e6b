"""tenancy.context.job_scope, under every tenant job (tenancy.jobs.tenant_task)."""

import pytest
from django.core.exceptions import PermissionDenied

from documents.models import Project
from tenancy.context import job_scope, tenant_context
from tests.tenancy.test_audit import events


@pytest.mark.django_db(transaction=True)
def test_a_jobs_writes_are_audited_as_the_job_in_each_of_its_transactions(tenant_a):
    with job_scope("test.rename", tenant_a):
        with tenant_context(tenant_a):
            project = Project.objects.create(tenant=tenant_a, name="First")
        # A second transaction of the same job says who acts too.
        with tenant_context(tenant_a):
            Project.objects.filter(tenant=tenant_a, pk=project.pk).update(name="Second")
    with tenant_context(tenant_a):
        Project.objects.filter(tenant=tenant_a, pk=project.pk).update(name="After the job")
    actors = [(e.action, e.actor) for e in events(tenant_a, row_id=project.pk)]
    assert actors == [
        ("insert", "job:test.rename"),
        ("update", "job:test.rename"),
        ("update", "service"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_job_cannot_open_another_tenants_context(tenant_a, tenant_b):
    with job_scope("test.reach", tenant_a):
        with pytest.raises(PermissionDenied, match="runs for tenant"):
            with tenant_context(tenant_b):
                pass
        with pytest.raises(PermissionDenied):
            with tenant_context(tenant_a, tenant_b):
                pass
        with tenant_context(tenant_a):
            Project.objects.create(tenant=tenant_a, name="Allowed")
    # Outside the job, the scope is gone.
    with tenant_context(tenant_b):
        assert not Project.objects.exists()
