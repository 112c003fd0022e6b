"""Runs, their records, proposals, decisions, messages and evaluations of a restricted
project are hidden with it (docs/security.md, "Restricted rows"; documents.0013).

Tables with a project_id compare it with app_hidden_project_ids(). execution_errors,
execution_idempotency_keys and execution_sources hang off a run and have no project_id:
they compare their execution_id with app_hidden_execution_ids(), the runs of the hidden
projects, computed once per statement like the others (SECURITY DEFINER for the same
reason: it must read the runs the policies hide). A source also names its chunk's
document, and a hidden document hides it too.
"""

from django.db import migrations

import core.db.operations

PROJECT_NOT_HIDDEN = "project_id <> ALL ((SELECT app_hidden_project_ids())::uuid[])"
EXECUTION_NOT_HIDDEN = "execution_id <> ALL ((SELECT app_hidden_execution_ids())::uuid[])"
SOURCE_NOT_HIDDEN = (
    f"{EXECUTION_NOT_HIDDEN} AND "
    "(document_id IS NULL OR document_id <> ALL ((SELECT app_hidden_document_ids())::uuid[]))"
)

FUNCTIONS = """
CREATE OR REPLACE FUNCTION app_hidden_execution_ids() RETURNS uuid[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
    AS $$ DECLARE bypass text := current_setting('app.rls_bypass', true); ids uuid[];
    BEGIN
        PERFORM set_config('app.rls_bypass', 'on', true);
        SELECT coalesce(array_agg(e.id), '{}') INTO ids FROM public.agent_executions e
          WHERE e.project_id = ANY (public.app_hidden_project_ids())
            AND e.tenant_id = ANY (public.app_current_tenant_ids());
        PERFORM set_config('app.rls_bypass', coalesce(bypass, ''), true);
        RETURN ids;
    END $$;
"""

DROP_FUNCTIONS = "DROP FUNCTION IF EXISTS app_hidden_execution_ids();"


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0015_validate_set_null_keys'),
        ('documents', '0013_restricted_rows_and_access_grants'),
    ]

    operations = [
        migrations.RunSQL(sql=FUNCTIONS, reverse_sql=DROP_FUNCTIONS),
        core.db.operations.NarrowTenantPolicy('agent_executions', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('change_proposals', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('decisions', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('conversation_messages', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('evaluation_runs', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('execution_errors', using=EXECUTION_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('execution_idempotency_keys', using=EXECUTION_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('execution_sources', using=SOURCE_NOT_HIDDEN),
    ]
