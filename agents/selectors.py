"""Reads of agent executions: runs as step trees, provenance, conversations, evaluations.

Selectors that return rows run inside `tenant_context(tenant)` themselves; those that
return a QuerySet must be evaluated where a tenant context is set, since row-level
security hides everything elsewhere.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db.models import QuerySet

from agents.models import AgentExecution, ConversationMessage, EvaluationRun, ExecutionSource
from documents.models import DocumentVersion, Project
from tenancy.context import require_tenant, tenant_context


@dataclass(frozen=True)
class ExecutionNode:
    """One execution of a run with the sources it retrieved and its child steps."""

    execution: AgentExecution
    sources: list[ExecutionSource] = field(default_factory=list)
    children: list[ExecutionNode] = field(default_factory=list)

    def walk(self) -> Iterator[ExecutionNode]:
        """This node and its descendants, depth first, in creation order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class RunProvenance:
    """One run (correlation_id) that produced a version: its producers and step tree."""

    correlation_id: uuid.UUID
    producers: list[AgentExecution]
    roots: list[ExecutionNode]

    def nodes(self) -> Iterator[ExecutionNode]:
        for root in self.roots:
            yield from root.walk()

    @property
    def sources(self) -> list[ExecutionSource]:
        """Every source of every step of the run, in tree order, by rank within a step."""
        return [source for node in self.nodes() for source in node.sources]


@dataclass(frozen=True)
class VersionProvenance:
    """How a document version came to be: the runs whose executions produced it."""

    version: DocumentVersion
    runs: list[RunProvenance]

    @property
    def producers(self) -> list[AgentExecution]:
        return [execution for run in self.runs for execution in run.producers]

    @property
    def sources(self) -> list[ExecutionSource]:
        return [source for run in self.runs for source in run.sources]


def execution_list(
    *,
    tenant,
    project: Project | None = None,
    status: str | None = None,
    correlation_id: uuid.UUID | None = None,
) -> QuerySet[AgentExecution]:
    """A tenant's executions, most recently started first (agent_exec_proj_started_idx)."""
    tenant_id = require_tenant(tenant, project=project)
    executions = AgentExecution.objects.filter(tenant_id=tenant_id)
    if project is not None:
        executions = executions.filter(project=project)
    if status:
        executions = executions.filter(status=status)
    if correlation_id is not None:
        executions = executions.filter(correlation_id=correlation_id)
    return executions.order_by("-started_at", "-created_at")


def execution_sources(*, tenant, execution: AgentExecution) -> list[ExecutionSource]:
    """The chunks an execution retrieved, by rank; snapshots survive the chunks' deletion."""
    tenant_id = require_tenant(tenant, execution=execution)
    with tenant_context(tenant_id):
        return list(
            ExecutionSource.objects.filter(tenant_id=tenant_id, execution=execution).order_by(
                "rank", "id"
            )
        )


def _run_forests(
    tenant_id: uuid.UUID, correlation_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[ExecutionNode]]:
    """The step trees of the given runs, keyed by correlation_id, in three queries.

    Inside the tenant's context. Siblings (steps, retries) come in creation order; a
    step whose parent is outside the run is a root.
    """
    executions = list(
        AgentExecution.objects.filter(
            tenant_id=tenant_id, correlation_id__in=list(correlation_ids)
        ).order_by("created_at", "id")
    )
    sources: dict[uuid.UUID, list[ExecutionSource]] = defaultdict(list)
    for source in ExecutionSource.objects.filter(
        tenant_id=tenant_id, execution_id__in=[execution.pk for execution in executions]
    ).order_by("rank", "id"):
        sources[source.execution_id].append(source)
    nodes = {
        execution.pk: ExecutionNode(execution=execution, sources=sources[execution.pk])
        for execution in executions
    }
    forests: dict[uuid.UUID, list[ExecutionNode]] = defaultdict(list)
    for execution in executions:
        parent = nodes.get(execution.parent_id)
        siblings = parent.children if parent else forests[execution.correlation_id]
        siblings.append(nodes[execution.pk])
    return forests


def run_tree(*, tenant, correlation_id: uuid.UUID) -> list[ExecutionNode]:
    """All executions of one run as a tree of steps (via parent), with their sources."""
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        return _run_forests(tenant_id, [correlation_id]).get(correlation_id, [])


def provenance(*, tenant, version: DocumentVersion) -> VersionProvenance:
    """From a document version to the executions that produced it, their runs' step
    trees and the exact sources (rank, score, hash, content snapshot) of every step.

    Complete after a source chunk is deleted: the source rows keep their snapshot and
    only lose chunk_id.
    """
    tenant_id = require_tenant(tenant, version=version)
    with tenant_context(tenant_id):
        correlation_ids = list(
            dict.fromkeys(
                AgentExecution.objects.filter(tenant_id=tenant_id, produced_version=version)
                .order_by("created_at", "id")
                .values_list("correlation_id", flat=True)
            )
        )
        forests = _run_forests(tenant_id, correlation_ids)
    runs = []
    for correlation_id in correlation_ids:
        roots = forests[correlation_id]
        producers = [
            node.execution
            for root in roots
            for node in root.walk()
            if node.execution.produced_version_id == version.pk
        ]
        runs.append(RunProvenance(correlation_id=correlation_id, producers=producers, roots=roots))
    return VersionProvenance(version=version, runs=runs)


def conversation(
    *, tenant, project: Project, execution: AgentExecution | None = None
) -> list[ConversationMessage]:
    """A project's messages in order (by position), or only those of one execution."""
    tenant_id = require_tenant(tenant, project=project, execution=execution)
    with tenant_context(tenant_id):
        messages = ConversationMessage.objects.filter(tenant_id=tenant_id, project=project)
        if execution is not None:
            messages = messages.filter(execution=execution)
        return list(messages.order_by("position"))


def evaluation_list(
    *,
    tenant,
    project: Project,
    document_version: DocumentVersion | None = None,
    execution: AgentExecution | None = None,
) -> list[EvaluationRun]:
    """A project's evaluations, newest first, optionally of one version or execution."""
    tenant_id = require_tenant(
        tenant, project=project, document_version=document_version, execution=execution
    )
    with tenant_context(tenant_id):
        evaluations = EvaluationRun.objects.filter(tenant_id=tenant_id, project=project)
        if document_version is not None:
            evaluations = evaluations.filter(document_version=document_version)
        if execution is not None:
            evaluations = evaluations.filter(execution=execution)
        return list(evaluations.order_by("-created_at", "-id"))
