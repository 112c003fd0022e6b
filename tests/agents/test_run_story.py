"""A run's story on one page (issue 23): `/admin/agents/agentexecution/run/<correlation_id>/`.

A run made through the services: a writer whose retriever step read three chunks (one
re-ingested since), whose drafter failed with a TimeoutError and succeeded on its
second attempt, writing a version, a decision and a change proposal. The page tells all
of it, to the owner and to a viewer alike, in a fixed number of queries; another
tenant's run, a missing one and a malformed id are a 404. The executions list shows the
error and its search finds it.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.admin.executions import run_story_url
from agents.models import AgentExecution, ExecutionError
from agents.services import (
    change_proposal_propose,
    decision_record,
    execution_create,
    execution_fail,
    execution_finish,
    execution_record_sources,
    execution_retry,
    execution_start,
)
from documents.models import Chunk, DocumentVersion, Project
from documents.services import (
    document_ingest,
    document_reingest,
    document_version_create,
    project_create,
)
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, listed, logged_in
from tests.factories import make_member

CHUNKING = {"chunk_size": 4, "chunk_overlap": 0}
TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
CHANGED_MIDDLE = "alpha beta gamma delta EPSILON ZETA ETA THETA iota kappa lambda mu"
TRACEBACK = (
    'Traceback (most recent call last):\n  File "agent.py", line 12, in draft\n'
    "    reply = model.complete(prompt)\nTimeoutError: no answer after 30 s"
)


def started(tenant, project, agent_type, **fields) -> AgentExecution:
    execution = execution_create(tenant=tenant, project=project, agent_type=agent_type, **fields)
    return execution_start(tenant=tenant, execution=execution)


def failing_then_recovered_run(tenant) -> dict:
    document = document_ingest(tenant=tenant, title="Handbook", text=TEXT, **CHUNKING)
    project = project_create(tenant=tenant, name="Apollo")
    base = document_version_create(
        tenant=tenant, project=project, document_type="about", content="First draft."
    )
    root = started(tenant, project, "writer", model="gpt-4o-mini")
    retriever = started(tenant, project, "retriever", parent=root)
    with tenant_context(tenant):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    execution_record_sources(
        tenant=tenant,
        execution=retriever,
        results=[{"chunk": chunk, "score": 0.9 - 0.1 * n} for n, chunk in enumerate(chunks)],
    )
    retriever = execution_finish(tenant=tenant, execution=retriever, prompt_tokens=10)
    drafter = started(tenant, project, "drafter", parent=root, model="claude-sonnet")
    drafter = execution_fail(
        tenant=tenant,
        execution=drafter,
        error_type="TimeoutError",
        error_message="the model did not answer in time",
        traceback=TRACEBACK,
    )
    retry = execution_retry(tenant=tenant, execution=drafter, recovery_strategy="a smaller context")
    retry = execution_start(tenant=tenant, execution=retry)
    version = document_version_create(
        tenant=tenant, project=project, document_type="about", content="Second draft."
    )
    retry = execution_finish(
        tenant=tenant,
        execution=retry,
        produced_version=version,
        prompt_tokens=1200,
        completion_tokens=300,
        cost_usd=Decimal("0.0125"),
    )
    decision = decision_record(
        tenant=tenant,
        project=project,
        category="stack",
        question="Which database?",
        options=[{"name": "PostgreSQL"}, {"name": "MySQL"}],
        selected="PostgreSQL",
        execution=retry,
    )
    proposal = change_proposal_propose(
        tenant=tenant, base_version=version, content="Third draft.", execution=retry
    )
    root = execution_finish(
        tenant=tenant, execution=root, prompt_tokens=100, completion_tokens=20, cost_usd="0.0005"
    )
    # The middle chunk's text changes: the retriever read it before.
    document_reingest(tenant=tenant, document=document, text=CHANGED_MIDDLE, **CHUNKING)
    return {
        "project": project,
        "root": root,
        "retriever": retriever,
        "drafter": drafter,
        "retry": retry,
        "version": version,
        "base": base,
        "decision": decision,
        "proposal": proposal,
        "chunks": chunks,
    }


@pytest.fixture
def run(tenant_a) -> dict:
    return failing_then_recovered_run(tenant_a)


def story(client, correlation_id) -> str:
    response = client.get(run_story_url(correlation_id))
    assert response.status_code == 200
    return response.content.decode()


def text_of(page: str) -> str:
    """The page's text, tags dropped and spaces squeezed, to assert sentences."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_the_story_tells_the_failure_its_traceback_and_how_it_recovered(client, alice, run):
    page = story(logged_in(client, alice), run["root"].correlation_id)
    text = text_of(page)
    drafter, retry = run["drafter"], run["retry"]
    with tenant_context(drafter.tenant_id):
        error = ExecutionError.objects.get(execution=drafter)
    assert error.recovered
    # The failure first, linking to the step; then the step with its error record.
    assert f'href="#step-{drafter.pk}">drafter, attempt 1</a>' in page
    assert "failures 1, 0 not recovered" in text
    assert f'id="step-{drafter.pk}"' in page
    assert "TimeoutError" in text
    assert "the model did not answer in time" in text
    assert "TimeoutError: no answer after 30 s" in page
    assert "File &quot;agent.py&quot;, line 12, in draft" in page
    assert admin_url(ExecutionError, "change", error.pk) in page
    assert "Recovered: attempt 2 succeeded (a smaller context)." in text
    assert f'href="#step-{retry.pk}">See attempt 2</a>' in page


def test_the_steps_lie_on_the_runs_timeline_in_tree_order(client, alice, run):
    page = story(logged_in(client, alice), run["root"].correlation_id)
    table = page.split('class="story-steps"')[1].split("</table>")[0]
    order = [run[name].agent_type for name in ("root", "retriever", "drafter", "retry")]
    steps = re.findall(r'<td style="padding-left: ([\d.]+)em">(?:<a [^>]*>)?([\w-]+)', table)
    assert [name for _, name in steps] == order
    # Indented by depth: the root, then its three steps one level in.
    assert [float(indent) for indent, _ in steps] == [0.4, 1.6, 1.6, 1.6]
    bars = re.findall(
        r'class="story-bar status-(\w+)[^"]*" style="margin-left: ([\d.]+)%; width: ([\d.]+)%"',
        table,
    )
    assert [status for status, _, _ in bars] == ["succeeded", "succeeded", "failed", "succeeded"]
    # The root spans the run: it starts first and ends last.
    assert bars[0][1] == "0.00" and float(bars[0][2]) == pytest.approx(100, abs=0.01)
    for _, left, width in bars:
        assert 0 <= float(left) and float(left) + float(width) <= 100.01
    assert "claude-sonnet" in table and "gpt-4o-mini" in table


def test_the_sources_show_scores_previews_and_what_changed_since(client, alice, run):
    page = story(logged_in(client, alice), run["root"].correlation_id)
    sources = page.split('class="story-sources"')[1].split("</table>")[0]
    rows = sources.split("<tr>")[2:]
    assert len(rows) == 3
    assert "0.9000" in rows[0] and "alpha beta gamma delta" in rows[0]
    # Only the middle chunk was re-ingested with other text.
    assert "Re-ingested (text changed)" in rows[1]
    assert "epsilon zeta eta theta" in rows[1]  # the text the run read, not today's
    assert "Re-ingested" not in rows[0] and "Re-ingested" not in rows[2]


def test_the_story_links_the_version_its_diff_the_proposal_and_the_decision(client, alice, run):
    page = story(logged_in(client, alice), run["root"].correlation_id)
    text = text_of(page)
    version, proposal, decision = run["version"], run["proposal"], run["decision"]
    assert admin_url(DocumentVersion, "change", version.pk) in page
    assert "about v2 ( its diff with v1 )" in text
    assert admin_url(proposal.__class__, "change", proposal.pk) in page
    assert "About on about v2 (diff on its page): pending" in text
    assert admin_url(decision.__class__, "change", decision.pk) in page
    assert "stack : Which database? → PostgreSQL" in text


def test_the_story_totals_tokens_and_cost(client, alice, run):
    text = text_of(story(logged_in(client, alice), run["root"].correlation_id))
    # 10 + 1200 + 300 + 100 + 20 tokens; 0.0125 + 0.0005 USD.
    assert "tokens 1630 (1310 prompt, 320 completion)" in text
    assert "cost (USD) 0.0130" in text
    assert "steps 4: 1 failed, 3 succeeded" in text


def test_a_viewer_reads_the_story_with_nothing_to_press(client, tenant_a, run):
    viewer = make_member(tenant_a, "viewer@example.com", role="viewer", is_staff=True)
    page = story(logged_in(client, viewer), run["root"].correlation_id)
    assert "TimeoutError: no answer after 30 s" in page
    assert "<form" not in page.split('id="content-main"')[1]


@pytest.mark.parametrize(
    "correlation_id",
    ["other tenant", str(uuid.uuid4()), "not-a-uuid", "12345"],
    ids=["another tenant's run", "no such run", "malformed", "digits"],
)
def test_anything_but_a_visible_run_is_a_404(client, alice, tenant_b, correlation_id):
    if correlation_id == "other tenant":
        project = project_create(tenant=tenant_b, name="Theirs")
        correlation_id = str(started(tenant_b, project, "writer").correlation_id)
    response = logged_in(client, alice).get(
        reverse("admin:agents_agentexecution_run", args=[correlation_id])
    )
    assert response.status_code == 404


def test_a_run_of_fifty_steps_reads_in_a_fixed_number_of_queries(client, alice, tenant_a, run):
    """The page of the 4-step run and of a 50-step run send the same statements."""
    logged_in(client, alice)
    client.get(run_story_url(run["root"].correlation_id))  # the session is warm
    with CaptureQueriesContext(connection) as small:
        story(client, run["root"].correlation_id)

    project = run["project"]
    root = started(tenant_a, project, "planner")
    parent = root
    for number in range(49):
        step = started(tenant_a, project, f"step-{number % 5}", parent=parent)
        if number % 7 == 0:
            execution_fail(tenant=tenant_a, execution=step, error_type="ValueError")
        else:
            execution_finish(tenant=tenant_a, execution=step, prompt_tokens=number)
        parent = root if number % 10 == 0 else step
    with CaptureQueriesContext(connection) as big:
        page = story(client, root.correlation_id)
    assert page.count('class="story-bar ') == 50
    # The small run wrote a version, which costs its one query; the big one wrote none.
    assert len(big.captured_queries) == len(small.captured_queries) - 1
    # The session, the user and the tenant scope; the run's tenant; eight reads of the
    # story (run_tree's two, project, flags, errors, versions, proposals, decisions).
    assert len(small.captured_queries) <= 22, [q["sql"][:100] for q in small.captured_queries]


def test_every_execution_page_and_the_project_hub_link_the_story(client, alice, run):
    logged_in(client, alice)
    url = run_story_url(run["root"].correlation_id)
    page = client.get(admin_url(AgentExecution, "change", run["retry"].pk)).content.decode()
    assert f'href="{url}#step-{run["retry"].pk}"' in page
    hub = client.get(admin_url(Project, "change", run["project"].pk)).content.decode()
    assert f'href="{url}"' in hub


def test_the_error_record_links_its_step_in_the_story(client, alice, run):
    drafter = run["drafter"]
    with tenant_context(drafter.tenant_id):
        error = ExecutionError.objects.get(execution=drafter)
    page = logged_in(client, alice).get(admin_url(ExecutionError, "change", error.pk))
    assert (
        f'href="{run_story_url(drafter.correlation_id)}#step-{drafter.pk}"' in page.content.decode()
    )


def test_the_story_is_read_only_a_post_is_refused(client, alice, run):
    response = logged_in(client, alice).post(run_story_url(run["root"].correlation_id))
    assert response.status_code == 405


def test_the_executions_list_shows_the_error_and_links_its_step(client, alice, run):
    page = logged_in(client, alice).get(admin_url(AgentExecution, "changelist")).content.decode()
    drafter = run["drafter"]
    url = run_story_url(drafter.correlation_id)
    assert f'<a href="{url}#step-{drafter.pk}" title="The failure in its run&#x27;s story">' in page
    assert (
        '<strong>TimeoutError</strong></a> <span title="the model did not answer in time">'
        "the model did not answer in time</span></td>"
    ) in page
    # Tokens over cost; a retry's attempt beside its status; the run links its story.
    assert '<span title="1200 prompt + 300 completion tokens">1500</span><br>0.0125 USD' in page
    assert (
        '<span class="status-badge status-succeeded">Succeeded</span> '
        '<span title="attempt 2">#2</span>' in page
    )
    assert f'href="{url}" title="The story of run {drafter.correlation_id}"' in page


@pytest.mark.parametrize("term", ["TimeoutError", "timeouterr", "did not answer"])
def test_the_executions_search_finds_error_types_and_messages(client, alice, run, term):
    found = listed(logged_in(client, alice), AgentExecution, q=term)
    assert found == [run["drafter"].pk]
