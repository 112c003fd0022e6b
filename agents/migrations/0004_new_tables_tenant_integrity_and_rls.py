"""Row-level security on execution_sources, conversation_messages and evaluation_runs,
and their composite tenant keys (docs/security.md; core.db.operations).

The keys pin a source's execution and chunk, a message's project and execution, and an
evaluation's project, version and execution to the row's own tenant. A deleted chunk or
execution leaves the source or message behind with a NULL reference (SET NULL of that
column only, never tenant_id).

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
agents.0005_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.db.operations
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('agents', '0003_lifecycle_sources_messages_evaluations'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        core.db.operations.AddTenantForeignKey('execution_sources', 'execution_sources_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('execution_sources', 'execution_sources_chunk_tenant_fk', column='chunk_id', to='chunks', on_delete='SET NULL', not_valid=True),
        core.db.operations.AddTenantForeignKey('conversation_messages', 'conversation_messages_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('conversation_messages', 'conversation_messages_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='SET NULL', not_valid=True),
        core.db.operations.AddTenantForeignKey('evaluation_runs', 'evaluation_runs_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('evaluation_runs', 'evaluation_runs_version_tenant_fk', column='document_version_id', to='document_versions', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('evaluation_runs', 'evaluation_runs_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='CASCADE', not_valid=True),
        core.db.operations.EnableTenantRLS('execution_sources'),
        core.db.operations.EnableTenantRLS('conversation_messages'),
        core.db.operations.EnableTenantRLS('evaluation_runs'),
    ]
