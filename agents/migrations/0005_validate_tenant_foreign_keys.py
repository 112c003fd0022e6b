"""Validate the composite tenant keys added NOT VALID by agents.0002 and agents.0004.

VALIDATE CONSTRAINT scans the existing rows under a SHARE UPDATE EXCLUSIVE lock (ROW
SHARE on the referenced table), which blocks neither reads nor writes; in the
transaction that added the key it would scan under that transaction's stronger locks
(docs/operations.md), hence a migration of its own. Validating a valid key does
nothing. Going back leaves the keys valid: PostgreSQL cannot make a constraint NOT
VALID again, and the earlier migration means a valid key anyway."""

import core.db.operations
from django.contrib.postgres.operations import ValidateConstraint


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0004_new_tables_tenant_integrity_and_rls'),
    ]

    operations = [
        ValidateConstraint(model_name='agentexecution', name='agent_executions_project_tenant_fk'),
        ValidateConstraint(model_name='agentexecution', name='agent_executions_parent_tenant_fk'),
        ValidateConstraint(model_name='agentexecution', name='agent_executions_version_tenant_fk'),
        ValidateConstraint(model_name='executionsource', name='execution_sources_execution_tenant_fk'),
        ValidateConstraint(model_name='executionsource', name='execution_sources_chunk_tenant_fk'),
        ValidateConstraint(model_name='conversationmessage', name='conversation_messages_project_tenant_fk'),
        ValidateConstraint(model_name='conversationmessage', name='conversation_messages_execution_tenant_fk'),
        ValidateConstraint(model_name='evaluationrun', name='evaluation_runs_project_tenant_fk'),
        ValidateConstraint(model_name='evaluationrun', name='evaluation_runs_version_tenant_fk'),
        ValidateConstraint(model_name='evaluationrun', name='evaluation_runs_execution_tenant_fk'),
    ]
