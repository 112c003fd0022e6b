"""Decisions: a question, the options considered with their notes, the selected one and
why, decided by a user or an agent; read back by category."""

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors, services
from agents.models import Decision
from documents.services import project_create
from tenancy.context import tenant_context

OPTIONS = [
    {"name": "PostgreSQL", "notes": "Already runs the rest; pgvector for embeddings."},
    {"name": "A vector database", "notes": "One more system to operate."},
]


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


@pytest.fixture
def execution(tenant_a, project):
    return services.execution_create(tenant=tenant_a, project=project, agent_type="architect")


def record(tenant, project, **fields) -> Decision:
    values = {
        "category": "storage",
        "question": "Where do embeddings live?",
        "options": OPTIONS,
        "selected": "PostgreSQL",
        "reasoning": "Fewer moving parts.",
    }
    return services.decision_record(tenant=tenant, project=project, **(values | fields))


def test_a_users_decision_is_recorded_now(tenant_a, project, alice):
    decision = record(tenant_a, project, decided_by=alice)
    with tenant_context(tenant_a):
        decision.refresh_from_db()
        assert decision.decider == str(alice)
    assert (decision.selected, decision.options) == ("PostgreSQL", OPTIONS)
    assert decision.decided_at is not None


def test_an_agents_decision_names_its_execution(tenant_a, project, execution):
    decision = record(tenant_a, project, execution=execution)
    with tenant_context(tenant_a):
        assert Decision.objects.get(pk=decision.pk).decider == "agent (architect)"


def test_a_decision_outlives_its_execution(tenant_a, project, execution):
    # The execution key's SET NULL, done by its trigger on agent_executions
    # (core.db.operations.AddTenantForeignKey): only execution_id goes.
    decision = record(tenant_a, project, execution=execution)
    with tenant_context(tenant_a), connection.cursor() as cursor:
        cursor.execute("DELETE FROM agent_executions WHERE id = %s", [execution.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        decision = Decision.objects.get(pk=decision.pk)
    assert (decision.execution_id, decision.tenant_id) == (None, tenant_a.pk)
    assert decision.selected == "PostgreSQL"


def test_an_explicit_decision_time_is_kept(tenant_a, project, alice):
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert record(tenant_a, project, decided_by=alice, decided_at=when).decided_at == when


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"selected": "SQLite"}, "selected"),
        ({"options": []}, "options"),
        ({"options": "PostgreSQL"}, "options"),
        ({"options": [{"notes": "no name"}]}, "options"),
        ({"options": [OPTIONS[0], OPTIONS[0]]}, "options"),
        ({"options": [{"name": "PostgreSQL", "notes": 3}]}, "options"),
        ({"category": ""}, "category"),
        ({"question": ""}, "question"),
        ({"decided_at": datetime(2026, 3, 1, 9, 30)}, "decided_at"),
    ],
)
def test_bad_input_is_refused_naming_the_field(tenant_a, project, alice, fields, field):
    with pytest.raises(ValidationError) as error:
        record(tenant_a, project, decided_by=alice, **fields)
    assert field in error.value.message_dict
    with tenant_context(tenant_a):
        assert not Decision.objects.exists()


def test_a_decision_needs_a_user_or_an_agent(tenant_a, project):
    with pytest.raises(ValidationError) as error:
        record(tenant_a, project)
    assert "decided_by" in error.value.message_dict


def test_an_execution_of_another_project_is_refused(tenant_a, project):
    other = project_create(tenant=tenant_a, name="Other")
    execution = services.execution_create(tenant=tenant_a, project=other, agent_type="architect")
    with pytest.raises(ValidationError) as error:
        record(tenant_a, project, execution=execution)
    assert "execution" in error.value.message_dict


def test_the_database_refuses_a_selection_that_is_no_option(tenant_a, project, alice):
    decision = record(tenant_a, project, decided_by=alice)
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError, match="decisions_selected_is_an_option"):
            with transaction.atomic():
                cursor.execute(
                    "UPDATE decisions SET selected = 'SQLite' WHERE id = %s", [decision.pk]
                )


def test_decisions_by_category_group_a_projects_decisions_in_order(tenant_a, project, alice):
    first = record(tenant_a, project, decided_by=alice, decided_at=datetime(2026, 1, 1, tzinfo=UTC))
    later = record(
        tenant_a,
        project,
        decided_by=alice,
        question="Which index?",
        options=[{"name": "HNSW", "notes": ""}, {"name": "IVFFlat", "notes": "needs lists"}],
        selected="HNSW",
        decided_at=datetime(2026, 2, 1, tzinfo=UTC),
    )
    testing = record(
        tenant_a,
        project,
        decided_by=alice,
        category="testing",
        question="Which database in tests?",
        options=[{"name": "The real one", "notes": ""}],
        selected="The real one",
    )
    other = project_create(tenant=tenant_a, name="Other")
    record(tenant_a, other, decided_by=alice)
    grouped = selectors.decisions_by_category(tenant=tenant_a, project=project)
    assert {category: [d.pk for d in found] for category, found in grouped.items()} == {
        "storage": [first.pk, later.pk],
        "testing": [testing.pk],
    }
    assert list(grouped) == ["storage", "testing"]


def test_decisions_of_one_category(tenant_a, project, alice):
    record(tenant_a, project, decided_by=alice)
    grouped = selectors.decisions_by_category(tenant=tenant_a, project=project, category="testing")
    assert grouped == {}


def test_the_options_are_searchable_by_containment(tenant_a, project, alice):
    decision = record(tenant_a, project, decided_by=alice)
    with tenant_context(tenant_a):
        found = Decision.objects.filter(options__contains=[{"name": "A vector database"}])
        assert [d.pk for d in found] == [decision.pk]
