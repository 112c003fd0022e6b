"""Agent executions as the database enforces them: keys, idempotency, steps, provenance."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from agents.models import AgentExecution
from documents.models import DocumentVersion, Project
from tenancy.context import tenant_context


def constraint_name(error: IntegrityError) -> str | None:
    return error.__cause__.diag.constraint_name


@pytest.fixture
def project(in_tenant_a) -> Project:
    return Project.objects.create(tenant=in_tenant_a, name="Apollo")


def execute(project: Project, **fields) -> AgentExecution:
    fields.setdefault("correlation_id", uuid.uuid4())
    return AgentExecution.objects.create(
        tenant_id=project.tenant_id, project=project, agent_type="writer", **fields
    )


def test_an_idempotency_key_is_used_once_per_tenant(project):
    execute(project, idempotency_key="run-1")
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        AgentExecution.objects.bulk_create(
            [
                AgentExecution(
                    tenant_id=project.tenant_id,
                    project=project,
                    agent_type="writer",
                    correlation_id=uuid.uuid4(),
                    idempotency_key="run-1",
                )
            ]
        )
    assert constraint_name(excinfo.value) == "agent_executions_tenant_idempotency_uniq"


def test_executions_without_an_idempotency_key_do_not_collide(project):
    execute(project)
    execute(project)
    assert AgentExecution.objects.filter(idempotency_key__isnull=True).count() == 2


def test_the_same_idempotency_key_is_free_in_another_tenant(project, tenant_b):
    execute(project, idempotency_key="run-1")
    with tenant_context(tenant_b):
        other = execute(Project.objects.create(tenant=tenant_b, name="B"), idempotency_key="run-1")
    assert other.idempotency_key == "run-1"


def test_deleting_a_step_deletes_its_sub_steps(project):
    run = execute(project)
    step = execute(project, correlation_id=run.correlation_id, parent=run)
    execute(project, correlation_id=run.correlation_id, parent=step)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM agent_executions WHERE id = %s", [run.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert not AgentExecution.objects.filter(correlation_id=run.correlation_id).exists()


def test_deleting_the_produced_version_keeps_the_execution(project):
    content = "about v1"
    version = DocumentVersion.objects.create(
        tenant_id=project.tenant_id,
        project=project,
        document_type="about",
        version=1,
        content=content,
        content_sha256=hashlib.sha256(content.encode()).hexdigest(),
    )
    execution = execute(project, produced_version=version)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM document_versions WHERE id = %s", [version.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    execution.refresh_from_db()
    assert execution.produced_version_id is None
    assert execution.tenant_id == project.tenant_id  # SET NULL (produced_version_id) only
