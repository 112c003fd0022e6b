"""Row-level security on exports (DESIGN.md section 7).

Enabled and FORCED (the owner is subject too). `tenant_isolation` admits the rows of
the tenants set for the current transaction; `system_bypass` is granted only to the
role running this migration (the owner) and only while `app.rls_bypass` is on: the
explicit, logged bypass of system jobs (tenancy.context.system_context).

A composite foreign key pins an export to its project's tenant.

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
exports.0003_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.safe_migration
from django.db import migrations

EXPORTS_PROJECT_TENANT_FK = """
ALTER TABLE exports ADD CONSTRAINT exports_project_tenant_fk
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

EXPORTS_PROJECT_TENANT_FK_REVERSE = """
ALTER TABLE exports DROP CONSTRAINT IF EXISTS exports_project_tenant_fk;
"""

EXPORTS_RLS = """
ALTER TABLE exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE exports FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON exports;
CREATE POLICY tenant_isolation ON exports
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS system_bypass ON exports;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON exports TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

EXPORTS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON exports;
DROP POLICY IF EXISTS tenant_isolation ON exports;
ALTER TABLE exports NO FORCE ROW LEVEL SECURITY;
ALTER TABLE exports DISABLE ROW LEVEL SECURITY;
"""


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('exports', '0001_initial'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        migrations.RunSQL(sql=EXPORTS_PROJECT_TENANT_FK, reverse_sql=EXPORTS_PROJECT_TENANT_FK_REVERSE),
        migrations.RunSQL(sql=EXPORTS_RLS, reverse_sql=EXPORTS_RLS_REVERSE),
    ]
