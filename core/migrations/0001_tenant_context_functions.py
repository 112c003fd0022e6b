"""SQL functions the row-level security policies are written with (docs/security.md).

The tenant ids live in the transaction-scoped setting `app.tenant_ids` (set with
set_config(..., true), so they never outlive the transaction: safe behind PgBouncer's
transaction pooling). Unset or empty means no tenant: the array is NULL, every
`tenant_id = ANY(...)` is NULL, and no row is visible. Both functions are inlinable
SQL and STABLE, so `tenant_id = ANY(app_current_tenant_ids())` is an index condition.
"""

import core.db.operations
from django.db import migrations

FUNCTIONS = """
CREATE OR REPLACE FUNCTION app_current_tenant_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT string_to_array(nullif(current_setting('app.tenant_ids', true), ''), ',')::uuid[] $$;

CREATE OR REPLACE FUNCTION app_current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

-- The explicit system bypass: only honoured by policies granted TO the owner role.
CREATE OR REPLACE FUNCTION app_rls_bypassed() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.rls_bypass', true), '') = 'on' $$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS app_rls_bypassed();
DROP FUNCTION IF EXISTS app_current_user_id();
DROP FUNCTION IF EXISTS app_current_tenant_ids();
"""


class Migration(core.db.operations.Migration):
    dependencies = []

    operations = [migrations.RunSQL(sql=FUNCTIONS, reverse_sql=DROP_FUNCTIONS)]
