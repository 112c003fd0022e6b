"""Row-level security on execution_sources, conversation_messages and evaluation_runs
(DESIGN.md section 7).

Enabled and FORCED (the owner is subject too). `tenant_isolation` admits the rows of
the tenants set for the current transaction; `system_bypass` is granted only to the
role running this migration (the owner) and only while `app.rls_bypass` is on: the
explicit, logged bypass of system jobs (tenancy.context.system_context).

Composite foreign keys pin a source's execution and chunk, a message's project and
execution, and an evaluation's project, version and execution to the row's own tenant.
A deleted chunk or execution leaves the source or message behind with a NULL
reference (ON DELETE SET NULL of that column only, never tenant_id).

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
agents.0005_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.safe_migration
from django.db import migrations

SOURCES_EXECUTION_TENANT_FK = """
ALTER TABLE execution_sources ADD CONSTRAINT execution_sources_execution_tenant_fk
    FOREIGN KEY (tenant_id, execution_id) REFERENCES agent_executions (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

SOURCES_EXECUTION_TENANT_FK_REVERSE = """
ALTER TABLE execution_sources DROP CONSTRAINT IF EXISTS execution_sources_execution_tenant_fk;
"""

SOURCES_CHUNK_TENANT_FK = """
ALTER TABLE execution_sources ADD CONSTRAINT execution_sources_chunk_tenant_fk
    FOREIGN KEY (tenant_id, chunk_id) REFERENCES chunks (tenant_id, id) ON DELETE SET NULL (chunk_id) NOT VALID;
"""

SOURCES_CHUNK_TENANT_FK_REVERSE = """
ALTER TABLE execution_sources DROP CONSTRAINT IF EXISTS execution_sources_chunk_tenant_fk;
"""

MESSAGES_PROJECT_TENANT_FK = """
ALTER TABLE conversation_messages ADD CONSTRAINT conversation_messages_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

MESSAGES_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE conversation_messages DROP CONSTRAINT IF EXISTS conversation_messages_project_tenant_fk;
"""

MESSAGES_EXECUTION_TENANT_FK = """
ALTER TABLE conversation_messages ADD CONSTRAINT conversation_messages_execution_tenant_fk
    FOREIGN KEY (tenant_id, execution_id) REFERENCES agent_executions (tenant_id, id) ON DELETE SET NULL (execution_id) NOT VALID;
"""

MESSAGES_EXECUTION_TENANT_FK_REVERSE = """
ALTER TABLE conversation_messages DROP CONSTRAINT IF EXISTS conversation_messages_execution_tenant_fk;
"""

EVALUATIONS_PROJECT_TENANT_FK = """
ALTER TABLE evaluation_runs ADD CONSTRAINT evaluation_runs_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EVALUATIONS_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE evaluation_runs DROP CONSTRAINT IF EXISTS evaluation_runs_project_tenant_fk;
"""

EVALUATIONS_VERSION_TENANT_FK = """
ALTER TABLE evaluation_runs ADD CONSTRAINT evaluation_runs_version_tenant_fk
    FOREIGN KEY (tenant_id, document_version_id) REFERENCES document_versions (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EVALUATIONS_VERSION_TENANT_FK_REVERSE = """
ALTER TABLE evaluation_runs DROP CONSTRAINT IF EXISTS evaluation_runs_version_tenant_fk;
"""

EVALUATIONS_EXECUTION_TENANT_FK = """
ALTER TABLE evaluation_runs ADD CONSTRAINT evaluation_runs_execution_tenant_fk
    FOREIGN KEY (tenant_id, execution_id) REFERENCES agent_executions (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EVALUATIONS_EXECUTION_TENANT_FK_REVERSE = """
ALTER TABLE evaluation_runs DROP CONSTRAINT IF EXISTS evaluation_runs_execution_tenant_fk;
"""

EXECUTION_SOURCES_RLS = """
ALTER TABLE execution_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_sources FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON execution_sources;
CREATE POLICY tenant_isolation ON execution_sources
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON execution_sources;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON execution_sources TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

EXECUTION_SOURCES_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON execution_sources;
DROP POLICY IF EXISTS tenant_isolation ON execution_sources;
ALTER TABLE execution_sources NO FORCE ROW LEVEL SECURITY;
ALTER TABLE execution_sources DISABLE ROW LEVEL SECURITY;
"""

CONVERSATION_MESSAGES_RLS = """
ALTER TABLE conversation_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_messages FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON conversation_messages;
CREATE POLICY tenant_isolation ON conversation_messages
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON conversation_messages;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON conversation_messages TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

CONVERSATION_MESSAGES_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON conversation_messages;
DROP POLICY IF EXISTS tenant_isolation ON conversation_messages;
ALTER TABLE conversation_messages NO FORCE ROW LEVEL SECURITY;
ALTER TABLE conversation_messages DISABLE ROW LEVEL SECURITY;
"""

EVALUATION_RUNS_RLS = """
ALTER TABLE evaluation_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE evaluation_runs FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON evaluation_runs;
CREATE POLICY tenant_isolation ON evaluation_runs
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON evaluation_runs;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON evaluation_runs TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

EVALUATION_RUNS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON evaluation_runs;
DROP POLICY IF EXISTS tenant_isolation ON evaluation_runs;
ALTER TABLE evaluation_runs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE evaluation_runs DISABLE ROW LEVEL SECURITY;
"""


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('agents', '0003_lifecycle_sources_messages_evaluations'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        migrations.RunSQL(sql=SOURCES_EXECUTION_TENANT_FK, reverse_sql=SOURCES_EXECUTION_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=SOURCES_CHUNK_TENANT_FK, reverse_sql=SOURCES_CHUNK_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=MESSAGES_PROJECT_TENANT_FK, reverse_sql=MESSAGES_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=MESSAGES_EXECUTION_TENANT_FK, reverse_sql=MESSAGES_EXECUTION_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EVALUATIONS_PROJECT_TENANT_FK, reverse_sql=EVALUATIONS_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EVALUATIONS_VERSION_TENANT_FK, reverse_sql=EVALUATIONS_VERSION_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EVALUATIONS_EXECUTION_TENANT_FK, reverse_sql=EVALUATIONS_EXECUTION_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EXECUTION_SOURCES_RLS, reverse_sql=EXECUTION_SOURCES_RLS_REVERSE),
        migrations.RunSQL(sql=CONVERSATION_MESSAGES_RLS, reverse_sql=CONVERSATION_MESSAGES_RLS_REVERSE),
        migrations.RunSQL(sql=EVALUATION_RUNS_RLS, reverse_sql=EVALUATION_RUNS_RLS_REVERSE),
    ]
