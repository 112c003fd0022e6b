"""Row-level security on agent_executions, and the composite keys that pin an
execution's project, parent step and produced version to its own tenant
(docs/security.md; core.db.operations).

The table existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
agents.0005_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.db.operations
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('agents', '0001_initial'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        core.db.operations.AddTenantForeignKey('agent_executions', 'agent_executions_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('agent_executions', 'agent_executions_parent_tenant_fk', column='parent_id', to='agent_executions', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('agent_executions', 'agent_executions_version_tenant_fk', column='produced_version_id', to='document_versions', on_delete='SET NULL', not_valid=True),
        core.db.operations.EnableTenantRLS('agent_executions'),
    ]
