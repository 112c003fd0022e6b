"""The context's full-access tenants, for the access below the tenant (docs/security.md,
"Restricted rows").

`app.full_access_tenant_ids` lists the tenants of the transaction where its user sees
every row (an owner or admin there, or an active superuser); tenancy.context sets it
with the tenants, from the user's memberships. Like app_current_tenant_ids(), the
function reads the transaction's setting and nothing else, so a policy calling it reads
no table: Citus accepts it on distributed tables, and it costs a comparison per row.
Unset or empty is NULL: `tenant_id = ANY (NULL)` admits no row.
"""

import core.db.operations
from django.db import migrations

FUNCTIONS = """
CREATE OR REPLACE FUNCTION app_full_access_tenant_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT string_to_array(nullif(current_setting('app.full_access_tenant_ids', true), ''), ',')::uuid[] $$;
"""

DROP_FUNCTIONS = "DROP FUNCTION IF EXISTS app_full_access_tenant_ids();"


class Migration(core.db.operations.Migration):
    dependencies = [('core', '0001_tenant_context_functions')]

    operations = [migrations.RunSQL(sql=FUNCTIONS, reverse_sql=DROP_FUNCTIONS)]
