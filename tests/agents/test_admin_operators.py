"""The agents admin for operators (issue 11): executions at a glance, one-line previews,
links for foreign keys, and no delete on rows that history depends on.

Requests go through the tenant middleware; rows are made through the services.
"""

import pytest

from agents import services
from agents.models import AgentExecution, ConversationMessage, Decision
from core.admin import PREVIEW_LENGTH
from documents.models import DocumentVersion, Project
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, logged_in


@pytest.fixture
def project(tenant_a, alice) -> Project:
    return project_create(tenant=tenant_a, name="Apollo", by=alice)


@pytest.fixture
def finished(tenant_a, project) -> AgentExecution:
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    services.execution_start(tenant=tenant_a, execution=execution)
    return services.execution_finish(tenant=tenant_a, execution=execution)


def changelist(client, model) -> str:
    response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return response.content.decode()


def test_executions_show_status_start_duration_and_run(client, alice, finished):
    page = changelist(logged_in(client, alice), AgentExecution)
    assert '<span class="status-badge status-succeeded">Succeeded</span>' in page
    assert finished.started_at.strftime("%Y-%m-%d %H:%M:%S") in page
    run = str(finished.correlation_id)
    # The run links to its story (tests/agents/test_run_story.py).
    assert f'title="The story of run {run}"><code>…{run[-8:]}</code></a>' in page
    assert f"/agentexecution/run/{run}/" in page
    assert f"{finished.duration.total_seconds():.3f} s" in page


def test_a_long_message_is_previewed_on_one_line(client, alice, tenant_a, project):
    content = "First line\n" + "word " * 100
    services.message_add(tenant=tenant_a, project=project, role="agent", content=content)
    page = changelist(logged_in(client, alice), ConversationMessage)
    expected = " ".join(content[:PREVIEW_LENGTH].split()) + "…"
    assert f'<td class="field-content_preview">{expected}</td>' in page
    assert content.strip() not in page


def test_a_short_message_is_shown_whole(client, alice, tenant_a, project):
    services.message_add(tenant=tenant_a, project=project, role="user", content="Hi there")
    page = changelist(logged_in(client, alice), ConversationMessage)
    assert '<td class="field-content_preview">Hi there</td>' in page


def test_a_version_list_previews_its_content(client, alice, tenant_a, project):
    content = "x" * 500
    document_version_create(tenant=tenant_a, project=project, document_type="plan", content=content)
    page = changelist(logged_in(client, alice), DocumentVersion)
    assert f'<td class="field-content_preview">{"x" * PREVIEW_LENGTH}…</td>' in page
    assert "x" * (PREVIEW_LENGTH + 1) not in page


def test_a_message_links_to_its_execution(client, alice, tenant_a, project, finished):
    services.message_add(
        tenant=tenant_a, project=project, role="agent", content="Done", execution=finished
    )
    page = changelist(logged_in(client, alice), ConversationMessage)
    assert f'href="{admin_url(AgentExecution, "change", finished.pk)}">{finished}</a>' in page


def test_a_pending_execution_may_still_be_withdrawn(client, alice, tenant_a, project):
    pending = services.execution_create(tenant=tenant_a, project=project, agent_type="planner")
    response = logged_in(client, alice).post(
        admin_url(AgentExecution, "delete", pending.pk), {"post": "yes"}
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert not AgentExecution.objects.filter(pk=pending.pk).exists()


@pytest.fixture
def decision(tenant_a, project, alice) -> Decision:
    return services.decision_record(
        tenant=tenant_a,
        project=project,
        category="stack",
        question="Which database?",
        options=[{"name": "PostgreSQL"}, {"name": "SQLite"}],
        selected="PostgreSQL",
        decided_by=alice,
    )


@pytest.fixture
def message(tenant_a, project) -> ConversationMessage:
    return services.message_add(tenant=tenant_a, project=project, role="user", content="Hi")


@pytest.mark.parametrize("row", ["decision", "message", "finished"])
def test_history_is_not_deleted_on_its_own(client, request, alice, row):
    obj = request.getfixturevalue(row)
    client = logged_in(client, alice)
    page = client.get(admin_url(type(obj), "change", obj.pk))
    assert not page.context["has_delete_permission"]
    response = client.post(admin_url(type(obj), "delete", obj.pk), {"post": "yes"})
    assert response.status_code == 403
    # Nor in bulk: the changelist offers no delete_selected.
    actions = client.get(admin_url(type(obj), "changelist")).context["action_form"]
    assert actions is None or "delete_selected" not in dict(actions.fields["action"].choices)
    with tenant_context(obj.tenant_id):
        assert type(obj).objects.filter(pk=obj.pk).exists()


def test_history_goes_with_its_project(client, superuser, project, decision, message, finished):
    client = logged_in(client, superuser)
    confirm = client.get(admin_url(Project, "delete", project.pk))
    assert not confirm.context["perms_lacking"]
    assert client.post(admin_url(Project, "delete", project.pk), {"post": "yes"}).status_code == 302
    with tenant_context(project.tenant_id):
        assert not Decision.objects.filter(pk=decision.pk).exists()
        assert not ConversationMessage.objects.filter(pk=message.pk).exists()
        assert not AgentExecution.objects.filter(pk=finished.pk).exists()
