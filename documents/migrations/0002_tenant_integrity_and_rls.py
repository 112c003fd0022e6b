"""Row-level security on projects, document_versions, documents and chunks (DESIGN.md section 7).

Enabled and FORCED (the owner is subject too). `tenant_isolation` admits the rows of
the tenants set for the current transaction; `system_bypass` is granted only to the
role running this migration (the owner) and only while `app.rls_bypass` is on: the
explicit, logged bypass of system jobs (tenancy.context.system_context).

Composite foreign keys pin a child row to its parent's tenant: (tenant_id, parent_id)
references the parent's (tenant_id, id), for every role, the owner included.

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
documents.0006_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.safe_migration
from django.db import migrations

VERSIONS_PROJECT_TENANT_FK = """
ALTER TABLE document_versions ADD CONSTRAINT document_versions_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

VERSIONS_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE document_versions DROP CONSTRAINT IF EXISTS document_versions_project_tenant_fk;
"""

DOCUMENTS_PROJECT_TENANT_FK = """
ALTER TABLE documents ADD CONSTRAINT documents_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE SET NULL (project_id) NOT VALID;
"""

DOCUMENTS_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE documents DROP CONSTRAINT IF EXISTS documents_project_tenant_fk;
"""

CHUNKS_DOCUMENT_TENANT_FK = """
ALTER TABLE chunks ADD CONSTRAINT chunks_document_tenant_fk
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

CHUNKS_DOCUMENT_TENANT_FK_REVERSE = """
ALTER TABLE chunks DROP CONSTRAINT IF EXISTS chunks_document_tenant_fk;
"""

PROJECTS_RLS = """
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON projects;
CREATE POLICY tenant_isolation ON projects
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON projects;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON projects TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

PROJECTS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON projects;
DROP POLICY IF EXISTS tenant_isolation ON projects;
ALTER TABLE projects NO FORCE ROW LEVEL SECURITY;
ALTER TABLE projects DISABLE ROW LEVEL SECURITY;
"""

DOCUMENT_VERSIONS_RLS = """
ALTER TABLE document_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_versions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON document_versions;
CREATE POLICY tenant_isolation ON document_versions
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON document_versions;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON document_versions TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

DOCUMENT_VERSIONS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON document_versions;
DROP POLICY IF EXISTS tenant_isolation ON document_versions;
ALTER TABLE document_versions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE document_versions DISABLE ROW LEVEL SECURITY;
"""

DOCUMENTS_RLS = """
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON documents;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON documents;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON documents TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

DOCUMENTS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON documents;
DROP POLICY IF EXISTS tenant_isolation ON documents;
ALTER TABLE documents NO FORCE ROW LEVEL SECURITY;
ALTER TABLE documents DISABLE ROW LEVEL SECURITY;
"""

CHUNKS_RLS = """
ALTER TABLE chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON chunks;
CREATE POLICY tenant_isolation ON chunks
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON chunks;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON chunks TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

CHUNKS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON chunks;
DROP POLICY IF EXISTS tenant_isolation ON chunks;
ALTER TABLE chunks NO FORCE ROW LEVEL SECURITY;
ALTER TABLE chunks DISABLE ROW LEVEL SECURITY;
"""


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('documents', '0001_initial'),
    ]

    operations = [
        migrations.RunSQL(sql=VERSIONS_PROJECT_TENANT_FK, reverse_sql=VERSIONS_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=DOCUMENTS_PROJECT_TENANT_FK, reverse_sql=DOCUMENTS_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=CHUNKS_DOCUMENT_TENANT_FK, reverse_sql=CHUNKS_DOCUMENT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=PROJECTS_RLS, reverse_sql=PROJECTS_RLS_REVERSE),
        migrations.RunSQL(sql=DOCUMENT_VERSIONS_RLS, reverse_sql=DOCUMENT_VERSIONS_RLS_REVERSE),
        migrations.RunSQL(sql=DOCUMENTS_RLS, reverse_sql=DOCUMENTS_RLS_REVERSE),
        migrations.RunSQL(sql=CHUNKS_RLS, reverse_sql=CHUNKS_RLS_REVERSE),
    ]
