"""Conversation messages: per project, optionally per execution, in a guaranteed order."""

from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors, services
from agents.models import ConversationMessage
from documents.services import project_create
from tenancy.context import tenant_context
from tests.locks import run_together


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


@pytest.fixture
def execution(tenant_a, project):
    return services.execution_create(tenant=tenant_a, project=project, agent_type="writer")


def say(tenant, project, content, role="user", **extra):
    return services.message_add(tenant=tenant, project=project, role=role, content=content, **extra)


def test_messages_come_back_in_the_order_they_were_added(tenant_a, project):
    with tenant_context(tenant_a):
        for n in range(5):
            say(tenant_a, project, f"message {n}", role="user" if n % 2 else "agent")
    messages = selectors.conversation(tenant=tenant_a, project=project)
    assert [m.content for m in messages] == [f"message {n}" for n in range(5)]
    assert [m.position for m in messages] == [1, 2, 3, 4, 5]


def test_positions_are_per_project(tenant_a, project):
    other = project_create(tenant=tenant_a, name="Other")
    say(tenant_a, project, "a")
    say(tenant_a, project, "b")
    assert say(tenant_a, other, "c").position == 1


def test_the_conversation_of_one_execution(tenant_a, project, execution):
    say(tenant_a, project, "brief", role="user")
    say(tenant_a, project, "draft", role="agent", execution=execution, metadata={"tokens": 12})
    say(tenant_a, project, "search()", role="tool", execution=execution)
    messages = selectors.conversation(tenant=tenant_a, project=project, execution=execution)
    assert [(m.role, m.content) for m in messages] == [("agent", "draft"), ("tool", "search()")]
    assert messages[0].metadata == {"tokens": 12}


def test_a_message_outlives_its_execution(tenant_a, project, execution):
    message = say(tenant_a, project, "draft", role="agent", execution=execution)
    with tenant_context(tenant_a):
        execution.delete()
        message.refresh_from_db()
    assert message.execution_id is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_positions_1_to_n(tenant_a):
    project = project_create(tenant=tenant_a, name="Busy")
    writers = 12
    errors = run_together([partial(say, tenant_a, project, f"m{n}") for n in range(writers)])

    assert errors == []
    messages = selectors.conversation(tenant=tenant_a, project=project)
    assert [m.position for m in messages] == list(range(1, writers + 1))


def test_an_unknown_role_is_refused_naming_the_field(tenant_a, project):
    with pytest.raises(ValidationError) as error:
        say(tenant_a, project, "hi", role="robot")
    assert "role" in error.value.message_dict


def test_the_database_refuses_an_unknown_role(tenant_a, project):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(
                """
                INSERT INTO conversation_messages
                    (tenant_id, project_id, position, role, content, metadata)
                VALUES (%s, %s, 1, 'robot', 'hi', '{}')
                """,
                [tenant_a.pk, project.pk],
            )
        assert "conversation_messages_role_valid" in str(error.value)


def test_an_execution_of_another_project_is_refused(tenant_a, project):
    other = project_create(tenant=tenant_a, name="Other")
    foreign = services.execution_create(tenant=tenant_a, project=other, agent_type="w")
    with pytest.raises(ValidationError) as error:
        say(tenant_a, project, "x", execution=foreign)
    assert "execution" in error.value.message_dict


# Tenant isolation


def test_another_tenant_cannot_add_to_a_project(tenant_b, project):
    with pytest.raises(ValidationError) as error:
        say(tenant_b, project, "intrusion")
    assert "project" in error.value.message_dict


def test_another_tenant_cannot_tie_a_message_to_an_execution(tenant_b, execution):
    project_b = project_create(tenant=tenant_b, name="B")
    with pytest.raises(ValidationError) as error:
        say(tenant_b, project_b, "intrusion", execution=execution)
    assert "execution" in error.value.message_dict


def test_the_composite_keys_refuse_a_raw_insert_across_tenants(tenant_b, project, execution):
    project_b = project_create(tenant=tenant_b, name="B")
    insert = """
        INSERT INTO conversation_messages
            (tenant_id, project_id, execution_id, position, role, content, metadata)
        VALUES (%s, %s, %s, 1, 'user', 'intrusion', '{}')
    """
    with tenant_context(tenant_b), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(insert, [tenant_b.pk, project.pk, None])
        assert "conversation_messages_project_tenant_fk" in str(error.value)
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(insert, [tenant_b.pk, project_b.pk, execution.pk])
        assert "conversation_messages_execution_tenant_fk" in str(error.value)
        assert ConversationMessage.objects.count() == 0


def test_another_tenant_reads_no_messages(tenant_a, tenant_b, project):
    say(tenant_a, project, "secret")
    with tenant_context(tenant_b):
        assert ConversationMessage.objects.count() == 0
