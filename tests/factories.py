"""Rows for tests: a tenant's member, and one valid row of every tenant-owned model.

`TENANT_ROW_BUILDERS` must cover every model with a tenant field:
tests/tenancy/test_rls.py fails when a new tenant-owned model has no builder here.
"""

from __future__ import annotations

import uuid

from django.apps import apps
from django.db import models

from core.hashing import sha256_hex
from documents.embedding import get_embedder
from documents.models import Chunk, Document, DocumentVersion, Project
from tenancy.context import tenant_context
from tenancy.models import Membership, Tenant, User

PASSWORD = "correct-horse-battery-staple"


def make_member(tenant: Tenant, email: str, role: str = "owner", **fields) -> User:
    """A user with `PASSWORD` and a membership of `tenant` in `role`."""
    user = User.objects.create_user(email=email, password=PASSWORD, name=email, **fields)
    with tenant_context(tenant):
        Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


def tenant_owned_models() -> list[type[models.Model]]:
    return sorted(
        (
            model
            for model in apps.get_models()
            if any(field.name == "tenant" for field in model._meta.concrete_fields)
        ),
        key=lambda model: model._meta.label,
    )


def _project(tenant, rows):
    return Project.objects.create(tenant=tenant, name=f"Project of {tenant.slug}")


def _version(tenant, rows):
    content = f"About {tenant.slug}"
    return DocumentVersion.objects.create(
        tenant=tenant,
        project=rows[Project],
        document_type="about",
        version=1,
        content=content,
        content_sha256=sha256_hex(content),
    )


def _document(tenant, rows):
    return Document.objects.create(
        tenant=tenant,
        project=rows[Project],
        title="Handbook",
        storage_key=f"documents/{tenant.pk}/{uuid.uuid4()}",
    )


def _chunk(tenant, rows):
    content = f"knowledge of {tenant.slug}"
    embedder = get_embedder()
    return Chunk.objects.create(
        tenant=tenant,
        document=rows[Document],
        ordinal=0,
        content=content,
        embedding=embedder.embed([content])[0],
        embedding_model=embedder.model,
    )


def _membership(tenant, rows):
    user = User.objects.create_user(email=f"member-{uuid.uuid4().hex[:8]}@example.com")
    return Membership.objects.create(tenant=tenant, user=user, role="viewer")


def _execution(tenant, rows):
    from agents.models import AgentExecution

    return AgentExecution.objects.create(
        tenant=tenant,
        project=rows[Project],
        agent_type="writer",
        correlation_id=uuid.uuid4(),
        produced_version=rows[DocumentVersion],
    )


def _idempotency_key(tenant, rows):
    from agents.models import AgentExecution, ExecutionIdempotencyKey

    # Written by the execution's insert trigger, never on its own.
    execution = AgentExecution.objects.create(
        tenant=tenant,
        project=rows[Project],
        agent_type="writer",
        correlation_id=uuid.uuid4(),
        idempotency_key=f"job-{uuid.uuid4().hex[:8]}",
    )
    return ExecutionIdempotencyKey.objects.get(tenant=tenant, execution=execution)


def _source(tenant, rows):
    from agents.models import AgentExecution
    from agents.services import execution_record_sources

    [source] = execution_record_sources(
        tenant=tenant,
        execution=rows[AgentExecution],
        results=[{"chunk": rows[Chunk], "score": 0.9}],
    )
    return source


def _message(tenant, rows):
    from agents.services import message_add

    return message_add(tenant=tenant, project=rows[Project], role="user", content="hello")


def _evaluation(tenant, rows):
    from agents.services import evaluation_record

    return evaluation_record(tenant=tenant, score=80, document_version=rows[DocumentVersion])


def _proposal(tenant, rows):
    from agents.models import AgentExecution
    from agents.services import change_proposal_propose

    return change_proposal_propose(
        tenant=tenant,
        base_version=rows[DocumentVersion],
        content=f"About {tenant.slug}, revised",
        execution=rows[AgentExecution],
        impact={"risk": "low"},
    )


def _decision(tenant, rows):
    from agents.models import AgentExecution
    from agents.services import decision_record

    return decision_record(
        tenant=tenant,
        project=rows[Project],
        category="storage",
        question="Where do embeddings live?",
        options=[{"name": "PostgreSQL", "notes": "pgvector"}],
        selected="PostgreSQL",
        execution=rows[AgentExecution],
    )


def _execution_error(tenant, rows):
    from agents.models import AgentExecution, ExecutionError

    return ExecutionError.objects.create(
        tenant=tenant,
        execution=rows[AgentExecution],
        node="writer",
        error_type="TimeoutError",
        attempt=1,
    )


def _template(tenant, rows):
    from documents.models import ProjectTemplate

    return ProjectTemplate.objects.create(
        tenant=tenant,
        name=f"Template of {tenant.slug}",
        files={"about.md": "# {project_name}"},
        tags=["web"],
        tech_stack=["django"],
    )


def _export(tenant, rows):
    from exports.models import Export

    return Export.objects.create(tenant=tenant, project=rows[Project])


# Insertion order matters: parents first.
TENANT_ROW_BUILDERS = {
    "tenancy.Membership": _membership,
    "documents.Project": _project,
    "documents.DocumentVersion": _version,
    "documents.Document": _document,
    "documents.Chunk": _chunk,
    "documents.ProjectTemplate": _template,
    "agents.AgentExecution": _execution,
    "agents.ExecutionIdempotencyKey": _idempotency_key,
    "agents.ExecutionSource": _source,
    "agents.ConversationMessage": _message,
    "agents.EvaluationRun": _evaluation,
    "agents.ChangeProposal": _proposal,
    "agents.Decision": _decision,
    "agents.ExecutionError": _execution_error,
    "exports.Export": _export,
}


def make_tenant_rows(tenant) -> dict[type[models.Model], models.Model]:
    """One row of every tenant-owned model for `tenant`, keyed by model."""
    rows: dict[type[models.Model], models.Model] = {}
    with tenant_context(tenant):
        for label, build in TENANT_ROW_BUILDERS.items():
            rows[apps.get_model(label)] = build(tenant, rows)
    return rows
