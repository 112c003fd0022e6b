"""The agents' panels on documents' pages (core.admin_sections.PagePanel), registered
through documents.admin, which imports nothing of agents:

- a version's page: the run that wrote it (agent_executions.produced_version_id: the
  executions, their status, model, tokens and cost, a link to the run) and the sources
  that run read (execution_sources: rank, score, chunk preview) with the changes since
  (stale_sources);
- a knowledge document's page: the outputs flagged as built on it (stale_sources of its
  chunks: the executions, their runs and the versions those runs wrote).

Each reads what it shows in a few queries whatever the number of rows (provenance's
three, one for the flags; the flagged outputs' two and a count), and shows nothing to a
user who may not view executions.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from agents.admin.executions import (
    EXECUTION_HEAVY_COLUMNS,
    deferred_execution_columns,
    duration_text,
    run_correlation_link,
    started_text,
    status_badge,
)
from agents.models import AgentExecution, ExecutionSource, StaleSource
from agents.selectors import RunProvenance, provenance
from core.admin import change_link, preview_text, sources_changed_badge
from core.admin_sections import PagePanel
from documents.admin import add_document_panels, add_version_panels, version_label
from documents.models import Chunk, Document, DocumentVersion

# The flags a knowledge document's page lists (the newest); the count says how many more.
FLAGGED_LATEST = 20
FLAG_COUNT_LIMIT = 1000


def _may_view_executions(request: HttpRequest) -> bool:
    execution_admin = admin.site._registry.get(AgentExecution)
    return execution_admin is not None and execution_admin.has_view_permission(request)


def _table(headings: Iterable[str], rows: Iterable[tuple], cells: str) -> SafeString:
    """A table of `rows`, each formatted by `cells` (its <td>s), under `headings`."""
    return format_html(
        '<table class="execution-sources"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", '<th scope="col">{}</th>', ((heading,) for heading in headings)),
        format_html_join("", f"<tr>{cells}</tr>", rows),
    )


# --- A version's page: the run that wrote it and what that run read ----------------------

# (execution, document, ordinal): a source and the flags of its chunk, also once the chunk
# is gone (the source's chunk_id is then NULL; both keep the snapshot's place).
SourceKey = tuple[uuid.UUID, uuid.UUID | None, int | None]


def _changes_since(tenant_id: uuid.UUID, runs: list[RunProvenance]) -> dict[SourceKey, list[str]]:
    """How each source's chunk changed since the run read it (one query for all runs)."""
    executions = [node.execution.pk for run in runs for node in run.nodes()]
    changes: dict[SourceKey, list[str]] = defaultdict(list)
    flags = StaleSource.objects.filter(tenant_id=tenant_id, execution_id__in=executions)
    for flag in flags.order_by("created_at", "id"):
        key = (flag.execution_id, flag.document_id, flag.ordinal)
        changes[key].append(f"{flag.get_reason_display()}, {flag.created_at:%Y-%m-%d %H:%M}")
    return changes


def _producers_html(run: RunProvenance) -> SafeString:
    return _table(
        ("execution", "status", "model", "attempt", "started", "duration", "tokens", "cost"),
        (
            (
                change_link(AgentExecution, execution.pk, execution.agent_type),
                status_badge(execution),
                execution.model or "—",
                execution.attempt,
                started_text(execution),
                duration_text(execution.duration),
                execution.prompt_tokens + execution.completion_tokens,
                f"${execution.cost_usd:.4f}",
            )
            for execution in run.producers
        ),
        "<td>{}</td>" * 8,
    )


def _source_chunk(source: ExecutionSource) -> SafeString | str:
    if source.chunk_id:
        return change_link(Chunk, source.chunk_id, "chunk")
    return "erased" if source.erased_at else "deleted"


def _sources_html(run: RunProvenance, changes: dict[SourceKey, list[str]]) -> SafeString:
    steps = {node.execution.pk: node.execution for node in run.nodes()}
    sources = run.sources
    if not sources:
        return format_html("<p>{}</p>", "No step of this run retrieved a source.")
    return _table(
        ("step", "rank", "score", "chunk", "document", "ordinal", "content", "changed since"),
        (
            (
                change_link(ExecutionSource, source.pk, steps[source.execution_id].agent_type),
                source.rank,
                f"{source.score:.4f}",
                _source_chunk(source),
                source.document_title or "—",
                "—" if source.ordinal is None else source.ordinal,
                preview_text(source.content) or "—",
                _changed_cell(
                    changes.get((source.execution_id, source.document_id, source.ordinal))
                ),
            )
            for source in sources
        ),
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        '<td class="source-content">{}</td><td>{}</td>',
    )


def _changed_cell(changes: list[str] | None) -> SafeString | str:
    if not changes:
        return "—"
    return format_html("{} {}", sources_changed_badge(True), "; ".join(changes))


def version_run_panel(request: HttpRequest, version: DocumentVersion) -> SafeString | None:
    """The runs whose executions wrote `version`, and the sources each run read."""
    if not _may_view_executions(request):
        return None
    found = provenance(tenant=version.tenant_id, version=version)
    if not found.runs:
        return format_html(
            "<p>{}</p>",
            "No agent run is recorded as writing this version: a person or a service "
            "wrote it (see its creator below).",
        )
    changes = _changes_since(version.tenant_id, found.runs)
    return format_html_join(
        "",
        "<h3>Run {} · {} steps</h3>{}<h3>{}</h3>{}",
        (
            (
                run_correlation_link(run.producers[0]),
                sum(1 for _ in run.nodes()),
                _producers_html(run),
                "Sources this run read (every step, by rank), and whether they changed since",
                _sources_html(run, changes),
            )
            for run in found.runs
        ),
    )


# --- A knowledge document's page: the outputs flagged as built on it ----------------------


def _flag_list_url(document: Document) -> str:
    """The stale-source flags of the document's chunks (its id is a search of that list)."""
    opts = StaleSource._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{changelist}?{urlencode({'q': str(document.pk)})}"


def document_flags_panel(request: HttpRequest, document: Document) -> SafeString | None:
    """The executions that read a chunk of `document` which changed since (its flags,
    newest first), their runs, and the versions those runs wrote."""
    if not _may_view_executions(request):
        return None
    # Joined to the executions: a flag of a run the user may not see is not counted.
    flags = StaleSource.objects.filter(
        tenant_id=document.tenant_id, document_id=document.pk, execution__project__isnull=False
    )
    count = flags[: FLAG_COUNT_LIMIT + 1].count()
    if not count:
        return format_html(
            "<p>{}</p>",
            "No output is flagged as built on this document: no chunk of it that an agent "
            "run read has changed since.",
        )
    latest = list(
        flags.select_related("execution")
        .defer(*deferred_execution_columns("execution"))
        .order_by("-id")[:FLAGGED_LATEST]
    )
    runs = {flag.execution.correlation_id for flag in latest}
    written = (
        AgentExecution.objects.filter(
            tenant_id=document.tenant_id, correlation_id__in=runs, produced_version__isnull=False
        )
        .select_related("produced_version")
        .defer(*EXECUTION_HEAVY_COLUMNS, "produced_version__content", "produced_version__metadata")
    )
    versions_by_run: dict[uuid.UUID, list[DocumentVersion]] = defaultdict(list)
    for execution in written:
        if execution.produced_version is not None:
            versions_by_run[execution.correlation_id].append(execution.produced_version)
    shown = "more than " + str(FLAG_COUNT_LIMIT) if count > FLAG_COUNT_LIMIT else str(count)
    return format_html(
        "<p>{} {}</p>{}",
        f"{shown} flags: an agent run read a chunk of this document that changed since. "
        f"The newest {min(count, FLAGGED_LATEST)}, with the versions their runs wrote",
        format_html('(<a href="{}">see all the flags</a>).', _flag_list_url(document)),
        _table(
            ("execution", "status", "run", "chunk", "change", "when", "versions its run wrote"),
            (
                (
                    change_link(AgentExecution, flag.execution_id, flag.execution.agent_type),
                    status_badge(flag.execution),
                    run_correlation_link(flag.execution),
                    "—" if flag.ordinal is None else flag.ordinal,
                    flag.get_reason_display(),
                    f"{flag.created_at:%Y-%m-%d %H:%M:%S}",
                    _versions_html(versions_by_run.get(flag.execution.correlation_id, [])),
                )
                for flag in latest
            ),
            "<td>{}</td>" * 7,
        ),
    )


def _versions_html(versions: list[DocumentVersion]) -> SafeString | str:
    if not versions:
        return "—"
    return format_html_join(
        ", ",
        "{}",
        (
            (change_link(DocumentVersion, version.pk, version_label(version)),)
            for version in versions
        ),
    )


add_version_panels(PagePanel("The run that wrote this version", version_run_panel))
add_document_panels(PagePanel("Outputs built on this document", document_flags_panel))
