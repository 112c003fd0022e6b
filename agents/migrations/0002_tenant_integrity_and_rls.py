"""Row-level security on agent_executions (DESIGN.md section 7).

Enabled and FORCED (the owner is subject too). `tenant_isolation` admits the rows of
the tenants set for the current transaction; `system_bypass` is granted only to the
role running this migration (the owner) and only while `app.rls_bypass` is on: the
explicit, logged bypass of system jobs (tenancy.context.system_context).

Composite foreign keys pin an execution's project, parent step and produced version
to its own tenant.

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
agents.0005_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.safe_migration
from django.db import migrations

EXECUTIONS_PROJECT_TENANT_FK = """
ALTER TABLE agent_executions ADD CONSTRAINT agent_executions_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EXECUTIONS_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE agent_executions DROP CONSTRAINT IF EXISTS agent_executions_project_tenant_fk;
"""

EXECUTIONS_PARENT_TENANT_FK = """
ALTER TABLE agent_executions ADD CONSTRAINT agent_executions_parent_tenant_fk
    FOREIGN KEY (tenant_id, parent_id) REFERENCES agent_executions (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EXECUTIONS_PARENT_TENANT_FK_REVERSE = """
ALTER TABLE agent_executions DROP CONSTRAINT IF EXISTS agent_executions_parent_tenant_fk;
"""

EXECUTIONS_VERSION_TENANT_FK = """
ALTER TABLE agent_executions ADD CONSTRAINT agent_executions_version_tenant_fk
    FOREIGN KEY (tenant_id, produced_version_id) REFERENCES document_versions (tenant_id, id) ON DELETE SET NULL (produced_version_id) NOT VALID;
"""

EXECUTIONS_VERSION_TENANT_FK_REVERSE = """
ALTER TABLE agent_executions DROP CONSTRAINT IF EXISTS agent_executions_version_tenant_fk;
"""

AGENT_EXECUTIONS_RLS = """
ALTER TABLE agent_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_executions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_executions;
CREATE POLICY tenant_isolation ON agent_executions
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON agent_executions;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON agent_executions TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

AGENT_EXECUTIONS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON agent_executions;
DROP POLICY IF EXISTS tenant_isolation ON agent_executions;
ALTER TABLE agent_executions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_executions DISABLE ROW LEVEL SECURITY;
"""


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('agents', '0001_initial'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        migrations.RunSQL(sql=EXECUTIONS_PROJECT_TENANT_FK, reverse_sql=EXECUTIONS_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EXECUTIONS_PARENT_TENANT_FK, reverse_sql=EXECUTIONS_PARENT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EXECUTIONS_VERSION_TENANT_FK, reverse_sql=EXECUTIONS_VERSION_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=AGENT_EXECUTIONS_RLS, reverse_sql=AGENT_EXECUTIONS_RLS_REVERSE),
    ]
