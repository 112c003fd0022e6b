"""Reads of agent executions: runs as step trees, provenance, conversations, evaluations,
change proposals, decisions, failures by node, the outputs built on changed sources, and
usage against quotas.

Selectors that return rows run inside `tenant_context(tenant)` themselves; those that
return a QuerySet must be evaluated where a tenant context is set, since row-level
security hides everything elsewhere.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from agents.models import (
    AgentExecution,
    ChangeProposal,
    ConversationMessage,
    Decision,
    EvaluationRun,
    ExecutionError,
    ExecutionSource,
    ExecutionUsageDaily,
    StaleSource,
    TenantQuota,
)
from core.ids import uuid7_floor
from documents.models import DocumentVersion, Project
from documents.selectors import VersionDiff, content_diff
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef


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
    tenant: TenantRef,
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


def execution_history(
    *, tenant: TenantRef, start: datetime, end: datetime
) -> QuerySet[AgentExecution]:
    """A tenant's executions created in [start, end), newest first.

    "Created" by the id's UUIDv7 time, the partition key of agent_executions: the id
    range lets PostgreSQL scan only the months it covers (core.db.partitions).
    """
    tenant_id = require_tenant(tenant)
    if end <= start:
        raise ValidationError({"end": "The end must be after the start."})
    return AgentExecution.objects.filter(
        tenant_id=tenant_id, id__gte=uuid7_floor(start), id__lt=uuid7_floor(end)
    ).order_by("-id")


def execution_sources(*, tenant: TenantRef, execution: AgentExecution) -> list[ExecutionSource]:
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
    nodes: dict[uuid.UUID | None, ExecutionNode] = {
        execution.pk: ExecutionNode(execution=execution, sources=sources[execution.pk])
        for execution in executions
    }
    forests: dict[uuid.UUID, list[ExecutionNode]] = defaultdict(list)
    for execution in executions:
        parent = nodes.get(execution.parent_id)
        siblings = parent.children if parent else forests[execution.correlation_id]
        siblings.append(nodes[execution.pk])
    return forests


def run_tree(*, tenant: TenantRef, correlation_id: uuid.UUID) -> list[ExecutionNode]:
    """All executions of one run as a tree of steps (via parent), with their sources."""
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        return _run_forests(tenant_id, [correlation_id]).get(correlation_id, [])


# A run's story: everything one run did, on one page


@dataclass(frozen=True)
class StoryStep:
    """One execution of a run as its story tells it: where it sits in the tree, what it
    read (and which of those chunks changed since), how it failed and whether a later
    attempt recovered, and what it wrote, proposed and decided."""

    execution: AgentExecution
    depth: int
    sources: list[ExecutionSource]
    # Stale-source flags by the id of the source they are about; `other_changes` holds
    # the flags no source of the step matches (none, unless a source row went).
    changes: dict[uuid.UUID, list[StaleSource]]
    other_changes: list[StaleSource]
    error: ExecutionError | None
    # The later attempt of the same step that succeeded (what recovered the error), and
    # the next attempt whatever its outcome.
    recovered_by: AgentExecution | None
    next_attempt: AgentExecution | None
    version: DocumentVersion | None
    proposals: list[ChangeProposal]
    decisions: list[Decision]

    @property
    def tokens(self) -> int:
        return self.execution.prompt_tokens + self.execution.completion_tokens


@dataclass(frozen=True)
class RunStory:
    """A run (correlation_id) and its steps in tree order (run_tree), with totals."""

    correlation_id: uuid.UUID
    project: Project
    steps: list[StoryStep]

    @property
    def started_at(self) -> datetime | None:
        starts = [step.execution.started_at for step in self.steps if step.execution.started_at]
        return min(starts) if starts else None

    @property
    def ended_at(self) -> datetime | None:
        """When the last finished step ended (None while nothing has finished)."""
        ends = [step.execution.completed_at for step in self.steps if step.execution.completed_at]
        return max(ends) if ends else None

    @property
    def prompt_tokens(self) -> int:
        return sum(step.execution.prompt_tokens for step in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(step.execution.completion_tokens for step in self.steps)

    @property
    def cost_usd(self) -> Decimal:
        return sum((step.execution.cost_usd for step in self.steps), Decimal(0))

    @property
    def failed(self) -> list[StoryStep]:
        return [
            step for step in self.steps if step.execution.status == AgentExecution.Status.FAILED
        ]

    @property
    def unrecovered(self) -> list[StoryStep]:
        return [step for step in self.failed if step.recovered_by is None]


def _same_step_attempts(
    executions: list[AgentExecution],
) -> dict[tuple[str, uuid.UUID | None], list[AgentExecution]]:
    """The attempts of each step (agent type and parent: what execution_retry keeps), by
    attempt."""
    attempts: dict[tuple[str, uuid.UUID | None], list[AgentExecution]] = defaultdict(list)
    for execution in executions:
        attempts[(execution.agent_type, execution.parent_id)].append(execution)
    for same_step in attempts.values():
        same_step.sort(key=lambda execution: execution.attempt)
    return attempts


def _source_key(
    document_id: uuid.UUID | None, ordinal: int | None, sha256: str
) -> tuple[uuid.UUID | None, int | None, str]:
    # A flag copies the source's snapshot (document, ordinal, hash): the source's chunk_id
    # is cleared once the chunk is gone, the flag's is not.
    return (document_id, ordinal, sha256)


def run_story(*, tenant: TenantRef, correlation_id: uuid.UUID) -> RunStory | None:
    """Everything one run did, for its page: the step tree with each step's sources (and
    the flags of those that changed since), error and recovery, the version it wrote, its
    proposals and decisions. None when the tenant has no such run (or may not see it).

    A fixed number of queries whatever the run's size: run_tree's two, then one each for
    the project, the flags, the errors, the versions, the proposals and the decisions,
    all by the run's execution ids through the tables' (tenant, execution) indexes.
    """
    tenant_id = require_tenant(tenant)
    with tenant_context(tenant_id):
        roots = _run_forests(tenant_id, [correlation_id]).get(correlation_id, [])
        if not roots:
            return None
        placed = [(node, depth) for root in roots for node, depth in _walk_with_depth(root, 0)]
        executions = [node.execution for node, _ in placed]
        ids = [execution.pk for execution in executions]
        project = (
            Project.all_objects.filter(tenant_id=tenant_id, pk=executions[0].project_id)
            .defer("metadata")
            .get()
        )
        flags = list(
            StaleSource.objects.filter(tenant_id=tenant_id, execution_id__in=ids).order_by(
                "created_at", "id"
            )
        )
        errors = {
            error.execution_id: error
            for error in ExecutionError.objects.filter(tenant_id=tenant_id, execution_id__in=ids)
        }
        produced = [e.produced_version_id for e in executions if e.produced_version_id]
        versions = (
            {
                version.pk: version
                for version in DocumentVersion.objects.filter(
                    tenant_id=tenant_id, pk__in=produced
                ).defer("content", "metadata")
            }
            if produced
            else {}
        )
        proposals: dict[uuid.UUID | None, list[ChangeProposal]] = defaultdict(list)
        for proposal in (
            ChangeProposal.objects.filter(tenant_id=tenant_id, execution_id__in=ids)
            .select_related("base_version", "applied_version")
            .defer(
                "content",
                "impact",
                "base_version__content",
                "base_version__metadata",
                "applied_version__content",
                "applied_version__metadata",
            )
            .order_by("created_at", "id")
        ):
            proposals[proposal.execution_id].append(proposal)
        decisions: dict[uuid.UUID | None, list[Decision]] = defaultdict(list)
        for decision in (
            Decision.objects.filter(tenant_id=tenant_id, execution_id__in=ids)
            .defer("options", "reasoning")
            .order_by("decided_at", "id")
        ):
            decisions[decision.execution_id].append(decision)

    flags_by_step: dict[uuid.UUID, list[StaleSource]] = defaultdict(list)
    for flag in flags:
        flags_by_step[flag.execution_id].append(flag)
    attempts = _same_step_attempts(executions)
    steps = []
    for node, depth in placed:
        execution = node.execution
        source_ids = {
            _source_key(source.document_id, source.ordinal, source.chunk_sha256): source.pk
            for source in node.sources
        }
        changes: dict[uuid.UUID, list[StaleSource]] = defaultdict(list)
        other_changes = []
        for flag in flags_by_step[execution.pk]:
            source_id = source_ids.get(
                _source_key(flag.document_id, flag.ordinal, flag.read_sha256)
            )
            if source_id is None:
                other_changes.append(flag)
            else:
                changes[source_id].append(flag)
        later = [
            attempt
            for attempt in attempts[(execution.agent_type, execution.parent_id)]
            if attempt.attempt > execution.attempt
        ]
        steps.append(
            StoryStep(
                execution=execution,
                depth=depth,
                sources=node.sources,
                changes=dict(changes),
                other_changes=other_changes,
                error=errors.get(execution.pk),
                recovered_by=next(
                    (a for a in later if a.status == AgentExecution.Status.SUCCEEDED), None
                )
                if execution.status == AgentExecution.Status.FAILED
                else None,
                next_attempt=later[0] if later else None,
                version=versions.get(execution.produced_version_id)
                if execution.produced_version_id
                else None,
                proposals=proposals.get(execution.pk, []),
                decisions=decisions.get(execution.pk, []),
            )
        )
    return RunStory(correlation_id=correlation_id, project=project, steps=steps)


def _walk_with_depth(node: ExecutionNode, depth: int) -> Iterator[tuple[ExecutionNode, int]]:
    yield node, depth
    for child in node.children:
        yield from _walk_with_depth(child, depth + 1)


def provenance(*, tenant: TenantRef, version: DocumentVersion) -> VersionProvenance:
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
    *, tenant: TenantRef, project: Project, execution: AgentExecution | None = None
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
    tenant: TenantRef,
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


# Change proposals


def change_proposal_list(
    *,
    tenant: TenantRef,
    project: Project | None = None,
    status: str | None = None,
    sections: list[str] | None = None,
) -> list[ChangeProposal]:
    """A tenant's proposals, newest first: of one project, in one status, or touching
    any of `sections` (affected_sections && ARRAY[...], through its GIN index)."""
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        proposals = ChangeProposal.objects.filter(tenant_id=tenant_id)
        if project is not None:
            proposals = proposals.filter(project=project)
        if status:
            proposals = proposals.filter(status=status)
        if sections:
            proposals = proposals.filter(affected_sections__overlap=list(sections))
        return list(proposals.select_related("base_version").order_by("-created_at", "-id"))


def change_proposal_diff(*, tenant: TenantRef, proposal: ChangeProposal) -> VersionDiff:
    """What applying the proposal would change in its base version (a unified diff)."""
    tenant_id = require_tenant(tenant, proposal=proposal)
    with tenant_context(tenant_id):
        base = DocumentVersion.objects.get(tenant_id=tenant_id, pk=proposal.base_version_id)
    return content_diff(tenant=tenant_id, base=base, content=proposal.content, label="proposal")


# Decisions


def decisions_by_category(
    *, tenant: TenantRef, project: Project, category: str | None = None
) -> dict[str, list[Decision]]:
    """A project's decisions grouped by category (alphabetically), each category's in
    the order they were made; with `category`, that category's only.

    Served by decisions_proj_cat_idx (project_id, category, decided_at).
    """
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        decisions = Decision.objects.filter(tenant_id=tenant_id, project=project)
        if category is not None:
            decisions = decisions.filter(category=category)
        grouped: dict[str, list[Decision]] = {}
        for decision in decisions.select_related("decided_by", "execution").order_by(
            "category", "decided_at", "id"
        ):
            grouped.setdefault(decision.category, []).append(decision)
    return grouped


# Errors


@dataclass(frozen=True)
class NodeFailures:
    """How often one step (node) failed, and how many of those failures a later
    attempt of the same step recovered."""

    node: str
    failures: int
    recovered: int

    @property
    def unrecovered(self) -> int:
        return self.failures - self.recovered

    @property
    def share_recovered(self) -> float:
        """recovered / failures, 0..1 (0 when nothing failed)."""
        return self.recovered / self.failures if self.failures else 0.0


def failures_by_node(
    *, tenant: TenantRef, project: Project | None = None, since: datetime | None = None
) -> list[NodeFailures]:
    """Failures per node, most first: "which steps fail, and do retries save them?"

    One grouped query on execution_errors (exec_errors_node_idx serves the tenant's
    rows by node and time).
    """
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        errors = ExecutionError.objects.filter(tenant_id=tenant_id)
        if project is not None:
            errors = errors.filter(execution__project=project)
        if since is not None:
            errors = errors.filter(created_at__gte=since)
        rows = (
            errors.values("node")
            .annotate(failures=Count("id"), recovered=Count("id", filter=Q(recovered=True)))
            .order_by("-failures", "node")
        )
        return [NodeFailures(**row) for row in rows]


@dataclass(frozen=True)
class StaleExecution:
    """An execution that read chunks which changed since, and how each changed."""

    execution: AgentExecution
    changes: list[StaleSource]


@dataclass(frozen=True)
class StaleVersion:
    """A version produced by a run with a flagged execution, and those executions."""

    version: DocumentVersion
    executions: list[AgentExecution]


@dataclass(frozen=True)
class StaleOutputs:
    """A project's outputs built on changed sources (docs/services.md, "Stale outputs")."""

    executions: list[StaleExecution]
    versions: list[StaleVersion]


def stale_outputs(*, tenant: TenantRef, project: Project) -> StaleOutputs:
    """The project's executions that read a chunk that changed since (re-ingested,
    re-embedded, removed or erased), each with its changes (oldest first), and the
    document versions their runs produced, newest first.

    As the user of the surrounding scope may see them: a restricted project's flags are
    hidden with its runs. The exports holding these versions are
    exports.selectors.exports_on_changed_sources (agents does not import exports).
    """
    tenant_id = require_tenant(tenant, project=project)
    with tenant_context(tenant_id):
        flags = list(
            StaleSource.objects.filter(tenant_id=tenant_id, execution__project=project)
            .select_related("execution")
            .order_by("created_at", "id")
        )
        changes: dict[uuid.UUID, list[StaleSource]] = defaultdict(list)
        executions: dict[uuid.UUID, AgentExecution] = {}
        for flag in flags:
            changes[flag.execution_id].append(flag)
            executions[flag.execution_id] = flag.execution
        by_run: dict[uuid.UUID, list[AgentExecution]] = defaultdict(list)
        for execution in executions.values():
            by_run[execution.correlation_id].append(execution)
        producers = AgentExecution.objects.filter(
            tenant_id=tenant_id, correlation_id__in=list(by_run), produced_version__isnull=False
        ).values_list("correlation_id", "produced_version_id")
        runs_of_version: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
        for correlation_id, version_id in producers:
            runs_of_version[version_id].add(correlation_id)
        versions = DocumentVersion.objects.filter(
            tenant_id=tenant_id, id__in=list(runs_of_version)
        ).order_by("-created_at", "-id")
        stale_versions = [
            StaleVersion(
                version=version,
                executions=[
                    execution
                    for correlation_id in sorted(runs_of_version[version.pk])
                    for execution in by_run[correlation_id]
                ],
            )
            for version in versions
        ]
    return StaleOutputs(
        executions=[
            StaleExecution(execution=execution, changes=changes[execution_id])
            # By id: UUIDv7, so in the order the executions were created.
            for execution_id, execution in sorted(executions.items())
        ],
        versions=stale_versions,
    )


# Usage and quotas (docs/operations.md, "Usage and quotas") ------------------------------


@dataclass(frozen=True)
class UsageTotals:
    """Sums of the usage rollup (execution_usage_daily) over some days."""

    executions: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


USAGE_SUMS = {
    "executions": Sum("executions"),
    "failures": Sum("failures"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cost_usd": Sum("cost_usd"),
}


def usage_totals(rows: QuerySet[ExecutionUsageDaily]) -> UsageTotals:
    """The sums over `rows` of the rollup, in one aggregate (zero where there are none)."""
    sums = rows.aggregate(**USAGE_SUMS)
    return UsageTotals(**{name: value for name, value in sums.items() if value is not None})


def month_days(moment: datetime) -> tuple[date, date]:
    """The first day of `moment`'s UTC calendar month and of the next one."""
    first = moment.astimezone(UTC).date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following


def usage_of_month(*, tenant: TenantRef, now: datetime | None = None) -> UsageTotals:
    """The tenant's usage in the current UTC calendar month (or `now`'s): one range read of
    the rollup's unique key (tenant_id, day, model)."""
    tenant_id = require_tenant(tenant)
    first, following = month_days(now or timezone.now())
    with tenant_context(tenant_id):
        return usage_totals(
            ExecutionUsageDaily.objects.filter(
                tenant_id=tenant_id, day__gte=first, day__lt=following
            )
        )


@dataclass(frozen=True)
class QuotaUse:
    """One limit of a tenant's quota against the month's usage."""

    # The quota's field: monthly_token_limit or monthly_cost_limit_usd.
    quota: str
    # "tokens" or "cost (USD)", for messages.
    label: str
    used: int | Decimal
    limit: int | Decimal
    warn_at_percent: int
    month: date

    @property
    def percent(self) -> float:
        """used / limit in percent (100 for a zero limit: nothing more may be used)."""
        return float(self.used * 100 / self.limit) if self.limit else 100.0

    @property
    def reached(self) -> bool:
        return self.used >= self.limit

    @property
    def warned(self) -> bool:
        return self.reached or self.percent >= self.warn_at_percent

    def describe(self) -> str:
        return (
            f"{self.percent:.0f}% of its monthly {self.label} quota used in "
            f"{self.month:%B %Y} ({self.used:,} of {self.limit:,})"
        )


def quota_uses(quota: TenantQuota, used: UsageTotals, month: date) -> list[QuotaUse]:
    """Each limit `quota` sets against `used`, the month starting on `month`."""
    amounts: dict[str, int | Decimal] = {
        "monthly_token_limit": used.tokens,
        "monthly_cost_limit_usd": used.cost_usd,
    }
    limits: list[tuple[str, str, int | Decimal | None]] = [
        ("monthly_token_limit", "tokens", quota.monthly_token_limit),
        ("monthly_cost_limit_usd", "cost (USD)", quota.monthly_cost_limit_usd),
    ]
    return [
        QuotaUse(field, label, amounts[field], limit, quota.warn_at_percent, month)
        for field, label, limit in limits
        if limit is not None
    ]


def quota_usage(*, tenant: TenantRef, now: datetime | None = None) -> list[QuotaUse]:
    """Each limit the tenant's quota sets, against its usage this UTC month; empty when it
    has no quota (two indexed reads: the quota, then the month's rollup rows)."""
    tenant_id = require_tenant(tenant)
    moment = now or timezone.now()
    with tenant_context(tenant_id):
        quota = TenantQuota.objects.filter(tenant_id=tenant_id).first()
    if quota is None or (quota.monthly_token_limit, quota.monthly_cost_limit_usd) == (None, None):
        return []
    first, _ = month_days(moment)
    return quota_uses(quota, usage_of_month(tenant=tenant_id, now=moment), first)


def quota_warnings(
    quotas: QuerySet[TenantQuota], *, now: datetime | None = None
) -> list[tuple[TenantQuota, QuotaUse]]:
    """The limits at or past their warning threshold this UTC month among `quotas` (the
    tenants a page shows), in two reads however many tenants: the quotas, then their
    month's rollup rows summed per tenant. Evaluated in the caller's tenant context."""
    first, following = month_days(now or timezone.now())
    shown = list(quotas.select_related("tenant"))
    month = (
        ExecutionUsageDaily.objects.filter(
            tenant_id__in=[quota.tenant_id for quota in shown], day__gte=first, day__lt=following
        )
        .values("tenant_id")
        .annotate(**USAGE_SUMS)
    )
    used = {
        row.pop("tenant_id"): UsageTotals(**{k: v for k, v in row.items() if v is not None})
        for row in month
    }
    return [
        (quota, use)
        for quota in shown
        for use in quota_uses(quota, used.get(quota.tenant_id, UsageTotals()), first)
        if use.warned
    ]
