"""A run's story on one page: `/admin/agents/agentexecution/run/<correlation_id>/`.

Everything one run did (agents.selectors.run_story), for the operator asking why it
failed: its steps as a tree laid on a timeline (status, attempt, agent, model, duration,
tokens, cost), each failure with its error record's type, message and traceback and
whether a later attempt recovered it, the chunks each step read with the flags of those
that changed since, the versions it wrote, its proposals and decisions, and the totals.

Server-rendered: the timeline's bars are HTML whose offset and width are the step's start
and end as percentages of the run's span. Read-only, so a viewer sees it all; a run of
another tenant (or of a project the user may not see) and a malformed id are a 404,
as an execution's own page is. AgentExecutionAdmin routes the URL here
(agents.admin.executions, which this module's displays come from).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.utils import timezone

from agents.admin.executions import (
    duration_text,
    run_changelist_url,
    started_text,
)
from agents.models import AgentExecution
from agents.selectors import RunStory, StoryStep, run_story
from core.admin import preview_text

TEMPLATE = "admin/agents/agentexecution/run_story.html"
# A step shorter than this share of the run still shows as a bar.
MIN_BAR_PERCENT = 0.5


@dataclass(frozen=True)
class Bar:
    """A step's place on the run's timeline, in percent of the run's span."""

    left: float
    width: float
    running: bool

    @property
    def style(self) -> str:
        return f"margin-left: {self.left:.2f}%; width: {self.width:.2f}%"


def timeline(story: RunStory, now: datetime) -> tuple[datetime | None, datetime | None, dict]:
    """The run's span (first start to last end, or now while a step runs) and each
    started step's Bar by execution id."""
    start = story.started_at
    if start is None:
        return None, None, {}
    running = any(
        step.execution.completed_at is None for step in story.steps if step.execution.started_at
    )
    ends = [story.ended_at or start, now if running else start]
    ends += [step.execution.started_at for step in story.steps if step.execution.started_at]
    end = max(ends)
    span = (end - start).total_seconds()
    bars = {}
    for step in story.steps:
        execution = step.execution
        if execution.started_at is None:
            continue
        finished = execution.completed_at or now
        if span <= 0:
            left, width = 0.0, 100.0
        else:
            left = (execution.started_at - start).total_seconds() / span * 100
            width = max(
                (finished - execution.started_at).total_seconds() / span * 100, MIN_BAR_PERCENT
            )
            left = min(left, 100 - MIN_BAR_PERCENT)
            width = min(width, 100 - left)
        bars[execution.pk] = Bar(left=left, width=width, running=execution.completed_at is None)
    return start, end, bars


def recovery_text(step: StoryStep) -> str:
    """Whether and how a failed step recovered, in words."""
    error = step.error
    strategy = f" ({error.recovery_strategy})" if error and error.recovery_strategy else ""
    if step.recovered_by is not None:
        return f"Recovered: attempt {step.recovered_by.attempt} succeeded{strategy}."
    if error is not None and error.recovered:
        return f"Recovered: a later attempt succeeded{strategy}."
    if step.next_attempt is not None:
        return (
            f"Not recovered yet: retried as attempt {step.next_attempt.attempt} "
            f"({step.next_attempt.get_status_display().lower()}){strategy}."
        )
    return "Not recovered: no later attempt of this step."


def _story_context(story: RunStory, now: datetime) -> dict:
    start, end, bars = timeline(story, now)
    failed = {step.execution.pk for step in story.failed}
    steps = [
        {
            "step": step,
            "execution": step.execution,
            "indent": f"padding-left: {0.4 + 1.2 * step.depth:.1f}em",
            "started": started_text(step.execution),
            "duration": duration_text(step.execution.duration),
            "bar": bars.get(step.execution.pk),
            "cost": f"{step.execution.cost_usd:.4f}",
            "recovery": recovery_text(step) if step.execution.pk in failed else "",
            "error_type": step.error.error_type if step.error else step.execution.error_type,
            "error_message": step.error.message if step.error else step.execution.error_message,
            "error_preview": preview_text(
                step.error.message if step.error else step.execution.error_message
            ),
            "sources": [
                {
                    "source": source,
                    "preview": preview_text(source.content),
                    "changes": step.changes.get(source.pk, []),
                }
                for source in step.sources
            ],
            "has_details": bool(
                step.execution.pk in failed
                or step.error
                or step.sources
                or step.other_changes
                or step.version
                or step.proposals
                or step.decisions
            ),
        }
        for step in story.steps
    ]
    statuses: dict[str, int] = {}
    for step in story.steps:
        label = step.execution.get_status_display()
        statuses[label] = statuses.get(label, 0) + 1
    return {
        "story": story,
        "steps": steps,
        "failed_steps": [
            row for row, step in zip(steps, story.steps, strict=True) if step.execution.pk in failed
        ],
        "statuses": sorted(statuses.items()),
        "run_start": start,
        "run_end": end,
        "run_span": duration_text(end - start) if start and end else "—",
        "still_running": any(bar.running for bar in bars.values()),
        "total_tokens": story.prompt_tokens + story.completion_tokens,
        "total_cost": f"{story.cost_usd:.4f}",
        "changelist_url": run_changelist_url(story.steps[0].execution),
    }


def run_story_view(
    model_admin, request: HttpRequest, correlation_id: str
) -> TemplateResponse | HttpResponseNotAllowed:
    """The story of the run `correlation_id`, in the tenant of the user who may see it."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])  # a page to read, nothing to post
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        run_id = uuid.UUID(correlation_id)
    except ValueError as error:
        raise Http404("No run with that id: a run's id is a UUID.") from error
    # The run's tenant, among those the user may view (row-level security hides the
    # runs of projects they may not see). No ORDER BY: the correlation index answers.
    tenant_ids = list(
        model_admin.restrict_to_tenants(
            request,
            AgentExecution.objects.filter(correlation_id=run_id),
            model_admin.view_roles,
        ).values_list("tenant_id", flat=True)[:1]
    )
    story = run_story(tenant=tenant_ids[0], correlation_id=run_id) if tenant_ids else None
    if story is None:
        raise Http404("No run with that id.")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Run …{str(run_id)[-8:]} of {story.project.name}",
        **_story_context(story, timezone.now()),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)
