"""purge_deleted: projects soft-deleted long ago go, with their rows; others stay.

The purge runs in system_context, which switches the connection's role, so these
tests commit for real (transaction=True).
"""

import io
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import AgentExecution
from documents import services
from documents.models import Document, DocumentVersion, Project
from exports.models import Export
from tenancy.context import tenant_context

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]


def project_deleted(tenant, name, days_ago=None):
    """A project with a version, an execution and an export, soft-deleted days_ago."""
    project = services.project_create(tenant=tenant, name=name)
    services.document_version_create(
        tenant=tenant, project=project, document_type="about", content=name
    )
    with tenant_context(tenant):
        AgentExecution.objects.create(
            tenant=tenant, project=project, agent_type="writer", correlation_id=uuid.uuid4()
        )
        Export.objects.create(tenant=tenant, project=project)
        if days_ago is not None:
            Project.all_objects.filter(pk=project.pk).update(
                deleted_at=timezone.now() - timedelta(days=days_ago)
            )
    return project


@pytest.fixture
def projects(tenant_a, tenant_b):
    return {
        "a_old": project_deleted(tenant_a, "a old", days_ago=40),
        "a_old_2": project_deleted(tenant_a, "a old 2", days_ago=31),
        "a_recent": project_deleted(tenant_a, "a recent", days_ago=5),
        "a_live": project_deleted(tenant_a, "a live"),
        "b_old": project_deleted(tenant_b, "b old", days_ago=100),
    }


def remaining(*tenants):
    names = set()
    for tenant in tenants:
        with tenant_context(tenant):
            names |= set(Project.all_objects.values_list("name", flat=True))
    return names


def test_dry_run_lists_counts_per_tenant_and_deletes_nothing(tenant_a, tenant_b, projects):
    summary = services.projects_purge_deleted(older_than=timedelta(days=30), dry_run=True)
    assert summary.dry_run
    assert summary.projects_by_tenant == {"tenant-a": 2, "tenant-b": 1}
    assert summary.rows_by_model == {
        "documents.Project": 3,
        "documents.DocumentVersion": 3,
        "agents.AgentExecution": 3,
        "exports.Export": 3,
    }
    assert len(remaining(tenant_a, tenant_b)) == 5


def test_apply_deletes_only_projects_deleted_before_the_cutoff(tenant_a, tenant_b, projects):
    # Uploaded while its project was live: a deleted project takes no new upload.
    with_knowledge = services.project_create(tenant=tenant_a, name="a old 3")
    knowledge = services.document_create(
        tenant=tenant_a, title="kept", text="x", project=with_knowledge
    )
    with tenant_context(tenant_a):
        Project.all_objects.filter(pk=with_knowledge.pk).update(
            deleted_at=timezone.now() - timedelta(days=40)
        )
    summary = services.projects_purge_deleted(older_than=timedelta(days=30))
    assert not summary.dry_run and summary.total_projects == 4
    assert remaining(tenant_a, tenant_b) == {"a recent", "a live"}
    with tenant_context(tenant_a):
        assert DocumentVersion.objects.count() == 2
        assert AgentExecution.objects.count() == 2
        assert Export.objects.count() == 2
        # Knowledge documents belong to the tenant and outlive the project.
        assert Document.objects.get(pk=knowledge.pk).project_id is None


def test_a_second_apply_deletes_nothing(tenant_a, tenant_b, projects):
    services.projects_purge_deleted(older_than=timedelta(days=30))
    again = services.projects_purge_deleted(older_than=timedelta(days=30))
    assert (again.total_projects, again.rows_by_model) == (0, {})
    assert remaining(tenant_a, tenant_b) == {"a recent", "a live"}


def test_days_zero_purges_every_deleted_project(tenant_a, tenant_b, projects):
    services.projects_purge_deleted(older_than=timedelta(0))
    assert remaining(tenant_a, tenant_b) == {"a live"}


def test_command_with_dry_run_lists_and_deletes_nothing(tenant_a, tenant_b, projects):
    out = io.StringIO()
    call_command("purge_deleted", "--dry-run", stdout=out)
    output = out.getvalue()
    assert "Would delete 3 project(s)" in output
    assert "tenant tenant-a: 2 project(s)" in output
    assert "tenant tenant-b: 1 project(s)" in output
    assert "Run again without --dry-run" in output
    assert len(remaining(tenant_a, tenant_b)) == 5


def test_command_acts_by_default_after_the_setting_days(tenant_a, tenant_b, projects, settings):
    settings.PURGE_DELETED_PROJECTS_AFTER_DAYS = 35
    out = io.StringIO()
    call_command("purge_deleted", stdout=out)
    assert "Deleted 2 project(s)" in out.getvalue()
    assert remaining(tenant_a, tenant_b) == {"a old 2", "a recent", "a live"}


def test_command_applies_with_days(tenant_a, tenant_b, projects):
    out = io.StringIO()
    call_command("purge_deleted", "--days", "35", stdout=out)
    assert "Deleted 2 project(s)" in out.getvalue()
    assert remaining(tenant_a, tenant_b) == {"a old 2", "a recent", "a live"}


def test_command_refuses_negative_days(tenant_a):
    with pytest.raises(CommandError, match="--days: must be 0 or more"):
        call_command("purge_deleted", "--days", "-1", stdout=io.StringIO())


@pytest.mark.parametrize("days", ["1000000", "999999999", "10000000000", "1e3", "thirty"])
def test_command_refuses_days_no_date_can_reach_saying_what_to_fix(tenant_a, projects, days):
    with pytest.raises(CommandError, match="--days") as error:
        call_command("purge_deleted", "--days", days, stdout=io.StringIO())
    assert "give at most" in str(error.value) or "whole number of days" in str(error.value)
    assert len(remaining(tenant_a)) == 4


@pytest.mark.parametrize("older_than", [timedelta(days=999_999_999), timedelta.max])
def test_the_service_refuses_an_age_before_the_year_1_naming_it(tenant_a, projects, older_than):
    with pytest.raises(ValidationError) as error:
        services.projects_purge_deleted(older_than=older_than)
    assert "at most" in error.value.message_dict["older_than"][0]
    assert len(remaining(tenant_a)) == 4
