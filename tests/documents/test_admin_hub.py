"""A project's admin page is the hub of what points at it (issue 11, point 5).

Its sections (core.admin_sections) list the latest rows of the project's versions,
documents, runs, conversation, evaluations, proposals, decisions and exports, with their
counts and links; agents and exports add theirs from their own admin modules. Requests
go through the tenant middleware; rows are made through the services.
"""

import pytest

from agents import services as agents
from agents.models import AgentExecution, ConversationMessage, EvaluationRun
from documents.models import DocumentVersion, Project
from documents.services import document_version_create, project_create
from exports.models import Export
from exports.services import export_create
from tests.admin_helpers import REFUSED, admin_url, listed, logged_in
from tests.factories import make_member


@pytest.fixture
def apollo(tenant_a, alice, file_storages) -> dict:
    """A project with 12 plan versions and 1 about, a run of two steps, talk and scores."""
    project = project_create(tenant=tenant_a, name="Apollo", by=alice)
    plans = [
        document_version_create(
            tenant=tenant_a, project=project, document_type="plan", content=f"Plan {n}"
        )
        for n in range(1, 13)
    ]
    about = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo"
    )
    root = agents.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    step = agents.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", parent=root
    )
    messages = [
        agents.message_add(tenant=tenant_a, project=project, role="user", content=f"Hello {n}")
        for n in range(3)
    ]
    evaluation = agents.evaluation_record(
        tenant=tenant_a, score=87, document_version=about, evaluator="grader"
    )
    export = export_create(tenant=tenant_a, project=project, by=alice)
    return {
        "project": project,
        "plans": plans,
        "about": about,
        "root": root,
        "step": step,
        "messages": messages,
        "evaluation": evaluation,
        "export": export,
    }


@pytest.fixture
def other_project(tenant_a, alice) -> Project:
    """Same tenant, another project: none of its rows belong on Apollo's page."""
    project = project_create(tenant=tenant_a, name="Gemini", by=alice)
    document_version_create(tenant=tenant_a, project=project, document_type="plan", content="G")
    agents.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    return project


def sections(client, project) -> dict[str, dict]:
    response = client.get(admin_url(Project, "change", project.pk))
    assert response.status_code == 200
    return {section["title"]: section for section in response.context["related_sections"]}


def row_urls(section: dict) -> list[str]:
    return [row["url"] for row in section["rows"]]


def test_the_page_has_a_section_for_each_related_table(client, alice, apollo):
    titles = list(sections(logged_in(client, alice), apollo["project"]))
    assert titles == [
        "Latest documents",
        "Version history",
        "Who has access",  # its grants, while restricted (owners and admins always do)
        "Knowledge documents",
        "Agent runs",
        "Conversation",
        "Evaluations",
        "Change proposals",
        "Decisions",
        "Exports",
    ]


def test_latest_documents_shows_each_types_latest_version(client, alice, apollo, other_project):
    latest = sections(logged_in(client, alice), apollo["project"])["Latest documents"]
    assert latest["count"] == 2
    assert sorted(row_urls(latest)) == sorted(
        admin_url(DocumentVersion, "change", version.pk)
        for version in (apollo["about"], apollo["plans"][-1])
    )


def test_history_shows_the_latest_ten_of_all_versions_and_links_to_all(
    client, alice, apollo, other_project
):
    client = logged_in(client, alice)
    history = sections(client, apollo["project"])["Version history"]
    assert (history["count"], history["count_is_estimated"]) == (13, False)
    newest_first = [apollo["about"], *reversed(apollo["plans"])]
    assert row_urls(history) == [
        admin_url(DocumentVersion, "change", version.pk) for version in newest_first[:10]
    ]
    # "See all" is the version changelist limited to this project: all 13, no Gemini.
    url = history["changelist_url"]
    assert url.startswith(admin_url(DocumentVersion, "changelist") + "?")
    response = client.get(url)
    assert response.status_code == 200
    assert sorted(row.pk for row in response.context["cl"].result_list) == sorted(
        version.pk for version in newest_first
    )


def test_agent_runs_are_the_root_steps(client, alice, apollo, other_project):
    client = logged_in(client, alice)
    runs = sections(client, apollo["project"])["Agent runs"]
    assert runs["count"] == 1
    assert row_urls(runs) == [admin_url(AgentExecution, "change", apollo["root"].pk)]
    cells = [str(cell) for cell in runs["rows"][0]["cells"]]
    assert cells[0] == "orchestrator"
    assert 'class="status-badge status-pending">Pending</span>' in cells[1]
    # The run column opens the run's story.
    assert f"/admin/agents/agentexecution/run/{apollo['root'].correlation_id}/" in cells[4]
    response = client.get(runs["changelist_url"])
    assert [row.pk for row in response.context["cl"].result_list] == [apollo["root"].pk]


def test_conversation_evaluations_and_exports_are_counted_and_linked(client, alice, apollo):
    found = sections(logged_in(client, alice), apollo["project"])
    conversation = found["Conversation"]
    assert conversation["count"] == 3
    # Newest first, each a one-line preview.
    assert row_urls(conversation) == [
        admin_url(ConversationMessage, "change", message.pk)
        for message in reversed(apollo["messages"])
    ]
    assert conversation["rows"][0]["cells"][2] == "Hello 2"
    evaluations = found["Evaluations"]
    assert evaluations["count"] == 1
    assert row_urls(evaluations) == [admin_url(EvaluationRun, "change", apollo["evaluation"].pk)]
    assert (found["Change proposals"]["count"], found["Decisions"]["count"]) == (0, 0)
    exports = found["Exports"]
    assert exports["count"] == 1
    assert row_urls(exports) == [admin_url(Export, "change", apollo["export"].pk)]


def test_the_page_renders_the_sections(client, alice, apollo):
    response = logged_in(client, alice).get(admin_url(Project, "change", apollo["project"].pk))
    page = response.content.decode()
    assert page.count('<fieldset class="module related-rows">') == 10
    assert 'Version history\n    <span class="related-count">(13)</span>' in page
    assert f'href="{admin_url(DocumentVersion, "change", apollo["about"].pk)}">about v1</a>' in page
    project_filter = f"project__id__exact={apollo['project'].pk}"
    assert f'href="{admin_url(Export, "changelist")}?{project_filter}">See all</a>' in page
    add_export = f"{admin_url(Export, 'add')}?project={apollo['project'].pk}"
    assert f'href="{add_export}&amp;tenant={apollo["project"].tenant_id}">New export</a>' in page


def test_the_add_link_opens_a_prefilled_form(client, alice, apollo):
    client = logged_in(client, alice)
    add_url = sections(client, apollo["project"])["Exports"]["add_url"]
    form = client.get(add_url).context["adminform"].form
    assert form.initial["project"] == str(apollo["project"].pk)
    assert form.initial["tenant"] == str(apollo["project"].tenant_id)


def test_a_viewer_sees_the_sections_but_no_add_links(client, tenant_a, apollo):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    found = sections(logged_in(client, viewer), apollo["project"])
    assert found["Version history"]["count"] == 13
    assert found["Exports"]["add_url"] is None
    assert found["Latest documents"]["add_url"] is None


def test_another_tenants_member_gets_no_page(client, bob, apollo):
    response = logged_in(client, bob).get(admin_url(Project, "change", apollo["project"].pk))
    assert response.status_code in REFUSED


def test_a_changelist_project_column_links_to_the_project(client, alice, apollo):
    client = logged_in(client, alice)
    project_page = admin_url(Project, "change", apollo["project"].pk)
    for model in (DocumentVersion, AgentExecution, ConversationMessage, EvaluationRun, Export):
        response = client.get(admin_url(model, "changelist"))
        assert f'href="{project_page}">Apollo</a>' in response.content.decode(), model
    assert len(listed(client, DocumentVersion)) == 13


def test_a_long_history_is_counted_up_to_a_bound_then_estimated(client, alice, apollo, monkeypatch):
    monkeypatch.setattr("core.admin_sections.EXACT_COUNT_LIMIT", 5)
    history = sections(logged_in(client, alice), apollo["project"])["Version history"]
    # 13 versions, more than the bound: the planner's estimate, never below the 6 seen.
    assert history["count_is_estimated"] is True
    assert history["count"] >= 6
