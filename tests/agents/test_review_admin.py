"""The admin of change proposals (diff, approve / reject / apply actions, a stale apply
marked failed), decisions (added through the service, options table) and execution
errors (filters by node and recovered, the traceback, read-only).

Requests go through the tenant middleware (not wrapped in tenant_context).
"""

import pytest
from django.urls import reverse

from agents import services
from agents.models import ChangeProposal, Decision, ExecutionError
from documents.models import DocumentVersion
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context
from tests.admin_helpers import REFUSED, admin_url, listed, logged_in
from tests.factories import make_member

# No trailing newline: the admin's text fields strip it from what is posted.
BASE = "# Plan\n\n## Milestones\n\nShip in May."
PROPOSED = "# Plan\n\n## Milestones\n\nShip in June, after <review>."


@pytest.fixture
def project(tenant_a, alice):
    return project_create(tenant=tenant_a, name="Apollo", by=alice)


@pytest.fixture
def base(tenant_a, project):
    return document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content=BASE
    )


@pytest.fixture
def proposal(tenant_a, base):
    return services.change_proposal_propose(tenant=tenant_a, base_version=base, content=PROPOSED)


def stored(proposal) -> ChangeProposal:
    with tenant_context(proposal.tenant_id):
        return ChangeProposal.objects.get(pk=proposal.pk)


def act(client, action: str, *rows):
    model = type(rows[0])
    return client.post(
        admin_url(model, "changelist"),
        {"action": action, "_selected_action": [row.pk for row in rows]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- Change proposals --------------------------------------------------------------------


def test_a_proposals_page_shows_the_diff_from_its_base(client, alice, proposal, base):
    response = logged_in(client, alice).get(admin_url(ChangeProposal, "change", proposal.pk))
    page = response.content.decode()
    assert '<pre class="version-diff" tabindex="0">' in page
    assert '<span class="diff-del">-Ship in May.</span>' in page
    assert '<span class="diff-add">+Ship in June, after &lt;review&gt;.</span>' in page
    assert f'href="{admin_url(DocumentVersion, "change", base.pk)}">plan v1</a>' in page
    assert ".version-diff .diff-add" in page  # the documents app's diff styles


def test_approve_action_records_the_reviewer(client, alice, proposal):
    act(logged_in(client, alice), "approve", proposal)
    approved = stored(proposal)
    assert (approved.status, approved.reviewed_by_id) == ("approved", alice.pk)


def test_reject_action(client, alice, proposal):
    act(logged_in(client, alice), "reject", proposal)
    assert stored(proposal).status == "rejected"


def test_apply_action_writes_the_next_version(client, alice, tenant_a, proposal):
    services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice)
    response = act(logged_in(client, alice), "apply", proposal)
    assert "Applied proposals: 1." in messages_of(response)
    applied = stored(proposal)
    assert applied.status == "applied"
    with tenant_context(tenant_a):
        assert applied.applied_version.content == PROPOSED
        assert applied.applied_version.created_by == alice


def test_apply_action_on_a_stale_proposal_reports_it_and_marks_it_failed(
    client, alice, tenant_a, project, proposal
):
    services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice)
    document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="# Plan\n\nBy hand.\n"
    )
    response = act(logged_in(client, alice), "apply", proposal)
    assert "Applied proposals: 0." in messages_of(response)
    [refusal] = [m for m in messages_of(response) if m.startswith("Refused:")]
    assert "no longer the latest version: v2 was written since" in refusal
    assert stored(proposal).status == "failed"
    page = client.get(admin_url(ChangeProposal, "change", proposal.pk)).content.decode()
    assert "no longer the latest version" in page


def test_the_review_note_is_written_while_pending(client, alice, proposal):
    response = logged_in(client, alice).post(
        admin_url(ChangeProposal, "change", proposal.pk), {"review_note": "Check the dates."}
    )
    assert response.status_code == 302
    assert stored(proposal).review_note == "Check the dates."


def test_a_reviewed_proposal_is_read_only(client, alice, tenant_a, proposal):
    services.change_proposal_reject(tenant=tenant_a, proposal=proposal, by=alice, note="No.")
    response = logged_in(client, alice).post(
        admin_url(ChangeProposal, "change", proposal.pk), {"review_note": "Actually yes."}
    )
    assert response.status_code == 403
    assert stored(proposal).review_note == "No."


def test_a_proposal_is_added_through_the_service(client, alice, tenant_a, base):
    response = logged_in(client, alice).post(
        admin_url(ChangeProposal, "add"),
        {"tenant": tenant_a.pk, "base_version": base.pk, "content": PROPOSED, "impact": "{}"},
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        added = ChangeProposal.objects.get()
    assert (added.project_id, added.document_type) == (base.project_id, "plan")
    assert added.affected_sections == ["Milestones"]


def test_a_proposal_equal_to_its_base_comes_back_as_a_form_error(client, alice, tenant_a, base):
    response = logged_in(client, alice).post(
        admin_url(ChangeProposal, "add"),
        {"tenant": tenant_a.pk, "base_version": base.pk, "content": BASE, "impact": "{}"},
    )
    assert response.status_code == 200
    assert "content" in response.context["adminform"].form.errors


def test_a_viewer_cannot_approve(client, tenant_a, proposal):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = act(logged_in(client, viewer), "approve", proposal)
    assert response.status_code == 200
    assert stored(proposal).status == "pending"


def test_bob_sees_none_of_alices_proposals(client, bob, proposal):
    assert listed(logged_in(client, bob), ChangeProposal) == []
    response = client.get(admin_url(ChangeProposal, "change", proposal.pk))
    assert response.status_code in REFUSED


# --- Decisions ---------------------------------------------------------------------------


def decision_form(project, **fields) -> dict:
    return {
        "tenant": project.tenant_id,
        "project": project.pk,
        "category": "storage",
        "question": "Where do embeddings live?",
        "options": '[{"name": "PostgreSQL", "notes": "pgvector"}, {"name": "S3", "notes": ""}]',
        "selected": "PostgreSQL",
        "reasoning": "One system.",
        **fields,
    }


def test_a_decision_is_added_by_the_user_through_the_service(client, alice, tenant_a, project):
    response = logged_in(client, alice).post(admin_url(Decision, "add"), decision_form(project))
    assert response.status_code == 302
    with tenant_context(tenant_a):
        decision = Decision.objects.get()
    assert (decision.selected, decision.decided_by_id) == ("PostgreSQL", alice.pk)


def test_a_selection_outside_the_options_comes_back_as_a_form_error(client, alice, project):
    response = logged_in(client, alice).post(
        admin_url(Decision, "add"), decision_form(project, selected="SQLite")
    )
    assert response.status_code == 200
    assert "selected" in response.context["adminform"].form.errors


def test_a_decisions_page_shows_its_options_and_the_selected_one(client, alice, project):
    logged_in(client, alice).post(admin_url(Decision, "add"), decision_form(project))
    with tenant_context(project.tenant_id):
        decision = Decision.objects.get()
    page = client.get(admin_url(Decision, "change", decision.pk)).content.decode()
    assert '<table class="decision-options">' in page
    assert "<tr><td>PostgreSQL</td><td>pgvector</td><td>✔</td></tr>" in page
    assert "<tr><td>S3</td><td></td><td></td></tr>" in page


def test_decisions_filter_by_category(client, alice, tenant_a, project):
    logged_in(client, alice).post(admin_url(Decision, "add"), decision_form(project))
    client.post(
        admin_url(Decision, "add"),
        decision_form(project, category="testing", options='[{"name": "PostgreSQL"}]'),
    )
    with tenant_context(tenant_a):
        testing = Decision.objects.get(category="testing")
    assert listed(client, Decision, category="testing") == [testing.pk]


# --- Execution errors --------------------------------------------------------------------


@pytest.fixture
def errors(tenant_a, project) -> dict:
    """A writer that failed and recovered on retry, a retriever that failed for good."""
    writer = services.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    services.execution_start(tenant=tenant_a, execution=writer)
    services.execution_fail(
        tenant=tenant_a,
        execution=writer,
        error_type="RateLimitError",
        error_message="429",
        traceback='Traceback (most recent call last):\n  File "w.py"\nRateLimitError: <429>\n',
    )
    retry = services.execution_retry(
        tenant=tenant_a, execution=writer, recovery_strategy="backoff 30 s"
    )
    services.execution_start(tenant=tenant_a, execution=retry)
    services.execution_finish(tenant=tenant_a, execution=retry)
    retriever = services.execution_create(tenant=tenant_a, project=project, agent_type="retriever")
    services.execution_start(tenant=tenant_a, execution=retriever)
    services.execution_fail(tenant=tenant_a, execution=retriever, error_type="TimeoutError")
    with tenant_context(tenant_a):
        return {
            "writer": ExecutionError.objects.get(execution=writer),
            "retriever": ExecutionError.objects.get(execution=retriever),
        }


def test_errors_filter_by_node(client, alice, errors):
    assert listed(logged_in(client, alice), ExecutionError, node="retriever") == [
        errors["retriever"].pk
    ]


def test_errors_filter_by_recovered(client, alice, errors):
    client = logged_in(client, alice)
    assert listed(client, ExecutionError, recovered__exact="1") == [errors["writer"].pk]
    assert listed(client, ExecutionError, recovered__exact="0") == [errors["retriever"].pk]


def test_an_errors_page_shows_the_traceback_as_printed(client, alice, errors):
    error = errors["writer"]
    page = logged_in(client, alice).get(admin_url(ExecutionError, "change", error.pk))
    text = page.content.decode()
    assert '<pre class="error-traceback">Traceback (most recent call last):' in text
    assert "RateLimitError: &lt;429&gt;" in text
    assert "backoff 30 s" in text
    assert "All steps and attempts of run" in text


def test_errors_are_a_record(client, alice, errors):
    error = errors["writer"]
    client = logged_in(client, alice)
    assert client.get(admin_url(ExecutionError, "add")).status_code == 403
    client.post(admin_url(ExecutionError, "change", error.pk), {"node": "forged"})
    with tenant_context(error.tenant_id):
        assert ExecutionError.objects.get(pk=error.pk).node == "writer"


# --- A proposal's own page acts -----------------------------------------------------------


def review_url(proposal, action: str) -> str:
    return reverse("admin:agents_changeproposal_review", args=[proposal.pk, action])


def buttons_on(client, proposal) -> list[str]:
    """The review actions whose buttons the proposal's page shows."""
    page = client.get(admin_url(ChangeProposal, "change", proposal.pk)).content.decode()
    return [
        action for action in ("approve", "reject", "apply") if review_url(proposal, action) in page
    ]


def test_a_proposals_page_reviews_it_with_the_bulk_actions_rights_and_messages(
    client, alice, tenant_a, proposal
):
    logged_in(client, alice)
    assert buttons_on(client, proposal) == ["approve", "reject"]
    response = client.post(review_url(proposal, "approve"), follow=True)
    assert response.redirect_chain[-1][0] == admin_url(ChangeProposal, "change", proposal.pk)
    assert "Approved proposals: 1." in messages_of(response)
    assert (stored(proposal).status, stored(proposal).reviewed_by_id) == ("approved", alice.pk)
    assert buttons_on(client, proposal) == ["apply"]
    response = client.post(review_url(proposal, "apply"), follow=True)
    assert "Applied proposals: 1." in messages_of(response)
    applied = stored(proposal)
    with tenant_context(tenant_a):
        assert (applied.status, applied.applied_version.content) == ("applied", PROPOSED)
    assert buttons_on(client, proposal) == []


def test_a_button_pressed_after_someone_else_acted_changes_nothing_and_says_so(
    client, alice, tenant_a, proposal
):
    logged_in(client, alice)
    assert buttons_on(client, proposal) == ["approve", "reject"]
    # Meanwhile another reviewer rejects it; the page still shows Approve.
    services.change_proposal_reject(tenant=tenant_a, proposal=proposal, by=alice, note="No.")
    response = client.post(review_url(proposal, "approve"), follow=True)
    assert "Approved proposals: 0." in messages_of(response)
    [refusal] = [m for m in messages_of(response) if m.startswith("Refused:")]
    assert "rejected" in refusal
    assert (stored(proposal).status, stored(proposal).review_note) == ("rejected", "No.")


def test_a_viewer_sees_no_review_button_and_may_not_press_one(client, tenant_a, proposal):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    logged_in(client, viewer)
    assert buttons_on(client, proposal) == []
    assert client.post(review_url(proposal, "approve")).status_code == 403
    assert stored(proposal).status == "pending"


def test_review_buttons_refuse_a_get_an_unknown_action_and_another_tenants_proposal(
    client, alice, bob, proposal
):
    logged_in(client, alice)
    assert client.get(review_url(proposal, "approve")).status_code == 405
    assert client.post(review_url(proposal, "delete")).status_code == 404
    logged_in(client, bob)
    assert client.post(review_url(proposal, "approve")).status_code in REFUSED
    assert stored(proposal).status == "pending"
