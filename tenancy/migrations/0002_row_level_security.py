"""Row-level security on memberships (DESIGN.md section 7).

Enabled and FORCED (the owner is subject too). `tenant_isolation` admits the rows of
the tenants set for the current transaction; `system_bypass` is granted only to the
role running this migration (the owner) and only while `app.rls_bypass` is on: the
explicit, logged bypass of system jobs (tenancy.context.system_context).

`own_memberships` lets a user read (only read) their own memberships (app.user_id), so
the tenant middleware can learn which tenants to set; every write needs the tenant set."""

import core.safe_migration
from django.db import migrations

MEMBERSHIPS_RLS = """
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON memberships;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = ANY (app_current_tenant_ids()))
    WITH CHECK (tenant_id = ANY (app_current_tenant_ids()));
DROP POLICY IF EXISTS own_memberships ON memberships;
CREATE POLICY own_memberships ON memberships FOR SELECT
    USING (user_id = app_current_user_id());
DROP POLICY IF EXISTS system_bypass ON memberships;
DO $$ BEGIN
    EXECUTE format(
        'CREATE POLICY system_bypass ON memberships TO %I USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())',
        current_user);
END $$;
"""

MEMBERSHIPS_RLS_REVERSE = """
DROP POLICY IF EXISTS system_bypass ON memberships;
DROP POLICY IF EXISTS own_memberships ON memberships;
DROP POLICY IF EXISTS tenant_isolation ON memberships;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships DISABLE ROW LEVEL SECURITY;
"""


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('tenancy', '0001_initial'),
    ]

    operations = [
        migrations.RunSQL(sql=MEMBERSHIPS_RLS, reverse_sql=MEMBERSHIPS_RLS_REVERSE),
    ]
