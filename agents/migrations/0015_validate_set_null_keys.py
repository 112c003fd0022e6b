"""Validate the five keys agents.0014 added again NOT VALID.

In a migration of its own, as agents.0005: VALIDATE CONSTRAINT scans the rows under a
lock that blocks neither reads nor writes. Going back leaves the keys valid.
"""

from django.contrib.postgres.operations import ValidateConstraint

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0014_set_null_keys_by_trigger'),
    ]

    operations = [
        ValidateConstraint(model_name='executionsource', name='execution_sources_chunk_tenant_fk'),
        ValidateConstraint(model_name='agentexecution', name='agent_executions_version_tenant_fk'),
        ValidateConstraint(model_name='changeproposal', name='change_proposals_execution_tenant_fk'),
        ValidateConstraint(model_name='conversationmessage', name='conversation_messages_execution_tenant_fk'),
        ValidateConstraint(model_name='decision', name='decisions_execution_tenant_fk'),
    ]
