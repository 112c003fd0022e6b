"""The agents admin: an execution's step tree and sources, run filters, read-only sources,
messages and evaluations added through the services, executions read-only once started,
and live projects only as choices.

Requests go through the tenant middleware (not wrapped in tenant_context); rows are made
through the services, documents in a temporary storage.
"""

import pytest
from django.contrib import admin
from django.urls import reverse

from agents import services
from agents.admin import AgentTypeFilter, duration_text
from agents.models import AgentExecution, ConversationMessage, EvaluationRun, ExecutionSource
from documents.models import Chunk
from documents.services import (
    document_ingest,
    document_version_create,
    project_create,
    project_soft_delete,
)
from tenancy.context import tenant_context
from tests.admin_helpers import REFUSED, admin_url, listed, logged_in
from tests.factories import make_member


@pytest.fixture
def project(tenant_a, alice):
    return project_create(tenant=tenant_a, name="Apollo", by=alice)


@pytest.fixture
def chunks(tenant_a, project, file_storages) -> list[Chunk]:
    found = []
    for title, text in [("Handbook", "Rockets need fuel."), ("Atlas", "Orbits are ellipses.")]:
        document = document_ingest(tenant=tenant_a, title=title, text=text, project=project)
        with tenant_context(tenant_a):
            found.extend(document.chunks.order_by("ordinal"))
    return found


@pytest.fixture
def run(tenant_a, project, chunks) -> dict:
    """An orchestrator with a retriever step and a writer whose retry wrote v1."""
    root = services.execution_create(tenant=tenant_a, project=project, agent_type="orchestrator")
    services.execution_start(tenant=tenant_a, execution=root)
    retriever = services.execution_create(
        tenant=tenant_a, project=project, agent_type="retriever", parent=root
    )
    sources = services.execution_record_sources(
        tenant=tenant_a,
        execution=retriever,
        results=[{"chunk": chunks[1], "score": 0.91}, {"chunk": chunks[0], "score": 0.72}],
    )
    writer = services.execution_create(
        tenant=tenant_a, project=project, agent_type="writer", parent=root
    )
    services.execution_start(tenant=tenant_a, execution=writer)
    services.execution_fail(tenant=tenant_a, execution=writer, error_type="RateLimited")
    retry = services.execution_retry(tenant=tenant_a, execution=writer)
    services.execution_start(tenant=tenant_a, execution=retry)
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo"
    )
    services.execution_finish(tenant=tenant_a, execution=retry, produced_version=version)
    return {
        "root": root,
        "retriever": retriever,
        "writer": writer,
        "retry": retry,
        "sources": sources,
        "version": version,
    }


@pytest.fixture
def other_run(tenant_a, project) -> AgentExecution:
    return services.execution_create(tenant=tenant_a, project=project, agent_type="planner")


def change_page(client, execution) -> str:
    response = client.get(admin_url(AgentExecution, "change", execution.pk))
    assert response.status_code == 200
    return response.content.decode()


# --- An execution's page ----------------------------------------------------------------


def test_execution_page_shows_the_step_tree(client, alice, run):
    page = change_page(logged_in(client, alice), run["retriever"])
    assert page.count('<ul class="run-tree">') == 2  # the root's list and its steps'
    for name in ("root", "writer", "retry"):
        assert f'href="{admin_url(AgentExecution, "change", run[name].pk)}">' in page
    assert '<span class="run-step run-current">' in page
    assert "retriever</a>" in page
    assert "(this execution)" in page
    assert "attempt 2" in page  # the writer's retry
    assert 'class="run-step-status run-status-failed">Failed</span>' in page


def test_execution_page_shows_its_sources(client, alice, run, chunks):
    page = change_page(logged_in(client, alice), run["retriever"])
    assert '<table class="execution-sources">' in page
    for source, chunk in zip(run["sources"], [chunks[1], chunks[0]], strict=True):
        assert f'href="{admin_url(Chunk, "change", chunk.pk)}">chunk</a>' in page
        assert f'<code title="{source.chunk_sha256}">{source.chunk_sha256[:16]}…</code>' in page
        assert f'href="{admin_url(ExecutionSource, "change", source.pk)}">{source.rank}</a>' in page
    assert "<td>Atlas</td>" in page
    assert "Orbits are ellipses." in page
    assert "<td>0.9100</td>" in page


def test_execution_page_renders_after_a_source_chunk_is_deleted(client, alice, run, chunks):
    with tenant_context(chunks[1].tenant_id):
        chunks[1].delete()
    page = change_page(logged_in(client, alice), run["retriever"])
    assert "<td>deleted</td>" in page
    assert "Orbits are ellipses." in page  # the snapshot outlives the chunk
    assert f'<code title="{run["sources"][0].chunk_sha256}">' in page


def test_execution_without_sources_says_so(client, alice, run):
    page = change_page(logged_in(client, alice), run["root"])
    assert "This execution retrieved no sources." in page


def test_execution_page_links_the_produced_version_and_shows_the_duration(client, alice, run):
    retry = run["retry"]
    page = change_page(logged_in(client, alice), retry)
    assert admin_url(type(run["version"]), "change", run["version"].pk) in page
    with tenant_context(retry.tenant_id):
        retry.refresh_from_db()
    assert retry.duration is not None
    assert f'<div class="readonly">{duration_text(retry.duration)}</div>' in page


def test_execution_page_links_all_steps_of_the_run(client, alice, run):
    page = change_page(logged_in(client, alice), run["writer"])
    link = f"{admin_url(AgentExecution, 'changelist')}?correlation_id={run['root'].correlation_id}"
    assert f'href="{link}"' in page


def test_execution_status_stays_read_only(client, alice, run):
    response = logged_in(client, alice).get(admin_url(AgentExecution, "change", run["root"].pk))
    assert "status" not in response.context["adminform"].form.fields


# --- Changelist filters -----------------------------------------------------------------


def test_changelist_filters_by_correlation_id(client, alice, run, other_run):
    correlation_id = run["root"].correlation_id
    ids = listed(logged_in(client, alice), AgentExecution, correlation_id=str(correlation_id))
    expected = {run[name].pk for name in ("root", "retriever", "writer", "retry")}
    assert set(ids) == expected
    assert other_run.pk not in ids


def test_a_bad_correlation_id_is_refused(client, alice, run):
    response = logged_in(client, alice).get(
        admin_url(AgentExecution, "changelist"), {"correlation_id": "not-a-uuid"}
    )
    assert response.status_code == 302
    assert "e=1" in response.url


def test_changelist_filters_by_agent_type(client, alice, run, other_run):
    client = logged_in(client, alice)
    assert set(listed(client, AgentExecution, agent_type="writer")) == {
        run["writer"].pk,
        run["retry"].pk,
    }
    response = client.get(admin_url(AgentExecution, "changelist"))
    (spec,) = [f for f in response.context["cl"].filter_specs if isinstance(f, AgentTypeFilter)]
    assert [value for value, _ in spec.lookup_choices] == [
        "orchestrator",
        "planner",
        "retriever",
        "writer",
    ]


def test_agent_type_choices_come_from_a_bounded_query(client, alice, run, monkeypatch):
    monkeypatch.setattr(AgentTypeFilter, "sample_size", 1)
    response = logged_in(client, alice).get(
        admin_url(AgentExecution, "changelist"), {"agent_type": "retriever"}
    )
    (spec,) = [f for f in response.context["cl"].filter_specs if isinstance(f, AgentTypeFilter)]
    # The newest execution's type, and the selected one.
    assert [value for value, _ in spec.lookup_choices] == ["retriever", "writer"]


def test_bob_sees_none_of_alices_runs(client, bob, run):
    correlation_id = str(run["root"].correlation_id)
    assert listed(logged_in(client, bob), AgentExecution, correlation_id=correlation_id) == []


# --- Execution sources: a read-only record ----------------------------------------------


def test_sources_are_listed_and_found_by_hash(client, alice, run):
    source = run["sources"][0]
    client = logged_in(client, alice)
    assert set(listed(client, ExecutionSource)) == {s.pk for s in run["sources"]}
    assert listed(client, ExecutionSource, q=source.chunk_sha256) == [source.pk]


def test_a_source_page_is_read_only(client, alice, run):
    source = run["sources"][0]
    response = logged_in(client, alice).get(admin_url(ExecutionSource, "change", source.pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]
    assert not response.context["has_delete_permission"]


@pytest.mark.parametrize("user", ["alice", "superuser"])
def test_sources_cannot_be_added_changed_or_deleted(client, request, run, user):
    client = logged_in(client, request.getfixturevalue(user))
    source = run["sources"][0]
    change = client.post(
        admin_url(ExecutionSource, "change", source.pk), {"rank": 9, "score": 0, "content": "x"}
    )
    assert change.status_code == 403
    assert client.get(admin_url(ExecutionSource, "add")).status_code == 403
    assert (
        client.post(admin_url(ExecutionSource, "delete", source.pk), {"post": "yes"}).status_code
        == 403
    )
    bulk = client.post(
        admin_url(ExecutionSource, "changelist"),
        {"action": "delete_selected", "_selected_action": [source.pk], "post": "yes"},
    )
    # No action at all is offered (delete_selected needs the delete permission).
    assert bulk.status_code == 200
    assert bulk.context["action_form"] is None
    with tenant_context(source.tenant_id):
        stored = ExecutionSource.objects.get(pk=source.pk)
    assert (stored.rank, stored.content) == (source.rank, source.content)


def test_deleting_an_execution_takes_its_sources(client, alice, run):
    retriever = run["retriever"]
    response = logged_in(client, alice).post(
        admin_url(AgentExecution, "delete", retriever.pk), {"post": "yes"}
    )
    assert response.status_code == 302
    with tenant_context(retriever.tenant_id):
        assert not AgentExecution.objects.filter(pk=retriever.pk).exists()
        assert not ExecutionSource.objects.filter(execution_id=retriever.pk).exists()


def test_bob_cannot_open_alices_sources(client, bob, run):
    url = admin_url(ExecutionSource, "change", run["sources"][0].pk)
    assert logged_in(client, bob).get(url).status_code in REFUSED


# --- Conversation messages --------------------------------------------------------------


def message_form(project, **overrides) -> dict:
    return {
        "tenant": project.tenant_id,
        "project": project.pk,
        "role": "user",
        "content": "Write the plan",
        "metadata": "{}",
        **overrides,
    }


def test_messages_are_added_through_the_service(client, alice, project, run):
    client = logged_in(client, alice)
    first = client.post(admin_url(ConversationMessage, "add"), message_form(project))
    second = client.post(
        admin_url(ConversationMessage, "add"),
        message_form(project, role="agent", content="Done", execution=run["retry"].pk),
    )
    assert (first.status_code, second.status_code) == (302, 302)
    with tenant_context(project.tenant_id):
        messages = list(ConversationMessage.objects.filter(project=project).order_by("position"))
    assert [(m.position, m.role, m.execution_id) for m in messages] == [
        (1, "user", None),
        (2, "agent", run["retry"].pk),
    ]
    assert listed(client, ConversationMessage) == [m.pk for m in messages]


def test_a_refused_message_comes_back_as_a_form_error(client, alice, tenant_a, project):
    elsewhere = project_create(tenant=tenant_a, name="Gemini")
    execution = services.execution_create(tenant=tenant_a, project=elsewhere, agent_type="x")
    response = logged_in(client, alice).post(
        admin_url(ConversationMessage, "add"), message_form(project, execution=execution.pk)
    )
    assert response.status_code == 200
    assert "execution" in response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        assert not ConversationMessage.objects.exists()


def test_messages_filter_by_role(client, alice, tenant_a, project):
    services.message_add(tenant=tenant_a, project=project, role="user", content="Hi")
    agent = services.message_add(tenant=tenant_a, project=project, role="agent", content="Hello")
    assert listed(logged_in(client, alice), ConversationMessage, role="agent") == [agent.pk]


# --- Evaluations ------------------------------------------------------------------------


def test_an_evaluation_is_recorded_through_the_service(client, alice, run):
    version = run["version"]
    response = logged_in(client, alice).post(
        admin_url(EvaluationRun, "add"),
        {
            "tenant": version.tenant_id,
            "document_version": version.pk,
            "score": 87.5,
            "evaluator": "readability",
            "metrics": '{"flesch": 61}',
        },
    )
    assert response.status_code == 302
    with tenant_context(version.tenant_id):
        evaluation = EvaluationRun.objects.get()
    assert (evaluation.project_id, evaluation.score) == (version.project_id, 87.5)


def test_an_evaluation_needs_exactly_one_target(client, alice, run):
    version = run["version"]
    response = logged_in(client, alice).post(
        admin_url(EvaluationRun, "add"),
        {
            "tenant": version.tenant_id,
            "document_version": version.pk,
            "execution": run["retry"].pk,
            "score": 50,
            "metrics": "{}",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors


def test_evaluations_list_their_targets(client, alice, tenant_a, run):
    services.evaluation_record(tenant=tenant_a, score=70, document_version=run["version"])
    services.evaluation_record(tenant=tenant_a, score=40, execution=run["writer"])
    response = logged_in(client, alice).get(admin_url(EvaluationRun, "changelist"))
    page = response.content.decode()
    assert f'href="{admin_url(AgentExecution, "change", run["writer"].pk)}"' in page
    assert ">about v1</a>" in page


def test_a_viewer_cannot_add_messages(client, tenant_a, project):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = logged_in(client, viewer).get(admin_url(ConversationMessage, "add"))
    assert response.status_code == 403


# --- A started or finished execution is a record ------------------------------------------

EXECUTION_EDIT = {
    "agent_type": "saboteur",
    "model": "gpt-x",
    "input_data": '{"goal": "changed"}',
    "output_data": '{"answer": "forged"}',
    "error_type": "Forged",
    "error_message": "forged",
    "prompt_tokens": 1,
    "completion_tokens": 1,
    "cost_usd": "99",
    "idempotency_key": "forged",
}


def stored(execution: AgentExecution) -> AgentExecution:
    with tenant_context(execution.tenant_id):
        return AgentExecution.objects.get(pk=execution.pk)


@pytest.mark.parametrize("name", ["retry", "writer", "root"])  # succeeded, failed, running
def test_an_execution_that_left_pending_is_read_only(client, alice, run, name):
    execution = stored(run[name])
    client = logged_in(client, alice)
    url = admin_url(AgentExecution, "change", execution.pk)
    page = client.get(url)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert not page.context["adminform"].form.fields
    assert client.post(url, EXECUTION_EDIT).status_code == 403
    after = stored(execution)
    fields = [f.attname for f in AgentExecution._meta.concrete_fields]
    assert [getattr(after, f) for f in fields] == [getattr(execution, f) for f in fields]


def test_every_field_of_a_finished_execution_is_read_only(rf, alice, run):
    model_admin = admin.site._registry[AgentExecution]
    readonly = model_admin.get_readonly_fields(rf.get("/"), stored(run["retry"]))
    assert {f.name for f in AgentExecution._meta.concrete_fields} <= set(readonly)


def test_a_pending_execution_changes_only_its_input_and_model(client, alice, other_run):
    client = logged_in(client, alice)
    url = admin_url(AgentExecution, "change", other_run.pk)
    assert set(client.get(url).context["adminform"].form.fields) == {"input_data", "model"}
    response = client.post(url, EXECUTION_EDIT)
    assert response.status_code == 302
    after = stored(other_run)
    assert (after.input_data, after.model) == ({"goal": "changed"}, "gpt-x")
    assert (after.agent_type, after.output_data, after.error_type) == ("planner", {}, "")
    assert (after.prompt_tokens, after.cost_usd, after.idempotency_key) == (0, 0, None)
    assert after.status == AgentExecution.Status.PENDING


def test_a_finished_execution_is_history_and_not_deleted_on_its_own(client, alice, run):
    # Issue 11: a version, sources and evaluations point at it; it goes with its project.
    client = logged_in(client, alice)
    page = client.get(admin_url(AgentExecution, "change", run["retry"].pk))
    assert not page.context["has_delete_permission"]
    response = client.post(admin_url(AgentExecution, "delete", run["retry"].pk), {"post": "yes"})
    assert response.status_code == 403
    with tenant_context(run["retry"].tenant_id):
        assert AgentExecution.objects.filter(pk=run["retry"].pk).exists()


# --- Nothing new points at a soft-deleted project -------------------------------------------


@pytest.fixture
def deleted_run(tenant_a, alice) -> dict:
    """A project with a version and an execution, then soft-deleted."""
    project = project_create(tenant=tenant_a, name="Cancelled", by=alice)
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="Never flown"
    )
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    project_soft_delete(tenant=tenant_a, project=project)
    return {"project": project, "version": version, "execution": execution}


def choices(client, model, field: str, tenant) -> set:
    response = client.get(admin_url(model, "add"))
    queryset = response.context["adminform"].form.fields[field].queryset
    with tenant_context(tenant):
        return set(queryset.values_list("pk", flat=True))


def autocomplete(client, model, field: str) -> set:
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "agents", "model_name": model._meta.model_name, "field_name": field},
    )
    assert response.status_code == 200
    return {result["id"] for result in response.json()["results"]}


@pytest.mark.parametrize("model", [AgentExecution, ConversationMessage])
def test_project_choices_leave_out_deleted_projects(
    client, alice, tenant_a, project, deleted_run, model
):
    client = logged_in(client, alice)
    assert choices(client, model, "project", tenant_a) == {project.pk}
    assert autocomplete(client, model, "project") == {str(project.pk)}


def test_evaluation_targets_leave_out_deleted_projects(client, alice, tenant_a, run, deleted_run):
    client = logged_in(client, alice)
    assert choices(client, EvaluationRun, "document_version", tenant_a) == {run["version"].pk}
    executions = choices(client, EvaluationRun, "execution", tenant_a)
    assert deleted_run["execution"].pk not in executions
    assert run["retry"].pk in executions
    assert autocomplete(client, EvaluationRun, "document_version") == {str(run["version"].pk)}
    assert str(deleted_run["execution"].pk) not in autocomplete(client, EvaluationRun, "execution")


def test_an_execution_cannot_be_added_to_a_deleted_project(client, superuser, deleted_run):
    project = deleted_run["project"]
    response = logged_in(client, superuser).post(
        admin_url(AgentExecution, "add"),
        {"tenant": project.tenant_id, "project": project.pk, "agent_type": "x", "input_data": "{}"},
    )
    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors
    with tenant_context(project.tenant_id):
        assert not AgentExecution.objects.filter(agent_type="x").exists()


def test_an_evaluation_of_a_deleted_projects_version_is_refused(client, alice, deleted_run):
    version = deleted_run["version"]
    response = logged_in(client, alice).post(
        admin_url(EvaluationRun, "add"),
        {"tenant": version.tenant_id, "document_version": version.pk, "score": 1, "metrics": "{}"},
    )
    assert response.status_code == 200
    assert "document_version" in response.context["adminform"].form.errors
