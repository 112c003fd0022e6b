"""Restricted projects and documents, and the users who may see them (docs/security.md).

`projects.restricted` and `documents.restricted` (NOT NULL DEFAULT false: a constant
default, so adding them rewrites nothing and locks briefly). `project_access` and
`document_access` list the users granted a restricted row. The tenant_isolation policies
of projects, documents, chunks and the access tables are narrowed to what the
transaction's user (app.user_id) may see; the agents and exports apps narrow theirs in
their own migrations. Each condition reads an array computed once per statement (an
InitPlan: the function call is wrapped in a scalar subquery), never per row:

- app_full_access_tenant_ids(): the context's tenants where the user is owner or admin
  (all of them for an active superuser);
- app_granted_project_ids() / app_granted_document_ids(): the user's grants;
- app_hidden_project_ids() / app_hidden_document_ids(): restricted rows the user may not
  see (a hidden project's documents too). They must read the rows they hide, which the
  policies hide from the caller: SECURITY DEFINER, owned by the owner role, with the
  system bypass on for the call only and their own explicit filter on the context's
  tenants; search_path pinned and every name schema-qualified.

The partial indexes on restricted rows come in 0014, built concurrently.
"""

import core.db.operations
import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models


FULL_ACCESS = "tenant_id = ANY ((SELECT app_full_access_tenant_ids())::uuid[])"
GRANT_READERS = f"user_id = app_current_user_id() OR {FULL_ACCESS}"
PROJECT_VISIBLE = f"NOT restricted OR {FULL_ACCESS} OR id = ANY ((SELECT app_granted_project_ids())::uuid[])"
PROJECT_NOT_HIDDEN = "project_id <> ALL ((SELECT app_hidden_project_ids())::uuid[])"
DOCUMENT_VISIBLE = (
    f"(NOT restricted OR {FULL_ACCESS} OR id = ANY ((SELECT app_granted_document_ids())::uuid[])) "
    "AND (project_id IS NULL OR project_id <> ALL ((SELECT app_hidden_project_ids())::uuid[]))"
)
DOCUMENT_NOT_HIDDEN = "document_id <> ALL ((SELECT app_hidden_document_ids())::uuid[])"

# Every function returns an array, never NULL: `x <> ALL (NULL)` would hide every row.
FUNCTIONS = """
-- A superuser (who holds every permission of the admin) sees every tenant in context.
CREATE OR REPLACE FUNCTION app_full_access_tenant_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN EXISTS (
                  SELECT FROM public.users u WHERE u.id = public.app_current_user_id()
                  AND u.is_superuser AND u.is_active)
              THEN coalesce(public.app_current_tenant_ids(), '{}')
              ELSE (SELECT coalesce(array_agg(m.tenant_id), '{}') FROM public.memberships m
                    WHERE m.user_id = public.app_current_user_id()
                      AND m.tenant_id = ANY (public.app_current_tenant_ids())
                      AND m.role IN ('owner', 'admin')) END $$;

CREATE OR REPLACE FUNCTION app_granted_project_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(a.project_id), '{}') FROM public.project_access a
          WHERE a.user_id = public.app_current_user_id()
            AND a.tenant_id = ANY (public.app_current_tenant_ids()) $$;

CREATE OR REPLACE FUNCTION app_granted_document_ids() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(a.document_id), '{}') FROM public.document_access a
          WHERE a.user_id = public.app_current_user_id()
            AND a.tenant_id = ANY (public.app_current_tenant_ids()) $$;

CREATE OR REPLACE FUNCTION app_hidden_project_ids() RETURNS uuid[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
    AS $$ DECLARE bypass text := current_setting('app.rls_bypass', true); ids uuid[];
    BEGIN
        PERFORM set_config('app.rls_bypass', 'on', true);
        SELECT coalesce(array_agg(p.id), '{}') INTO ids FROM public.projects p
          WHERE p.restricted
            AND p.tenant_id = ANY (public.app_current_tenant_ids())
            AND p.tenant_id <> ALL (public.app_full_access_tenant_ids())
            AND p.id <> ALL (public.app_granted_project_ids());
        PERFORM set_config('app.rls_bypass', coalesce(bypass, ''), true);
        RETURN ids;
    END $$;

CREATE OR REPLACE FUNCTION app_hidden_document_ids() RETURNS uuid[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
    AS $$ DECLARE bypass text := current_setting('app.rls_bypass', true); ids uuid[];
    BEGIN
        PERFORM set_config('app.rls_bypass', 'on', true);
        SELECT coalesce(array_agg(hidden.id), '{}') INTO ids FROM (
              SELECT d.id FROM public.documents d
              WHERE d.restricted
                AND d.tenant_id = ANY (public.app_current_tenant_ids())
                AND d.tenant_id <> ALL (public.app_full_access_tenant_ids())
                AND d.id <> ALL (public.app_granted_document_ids())
              UNION
              SELECT d.id FROM public.documents d
              WHERE d.project_id = ANY (public.app_hidden_project_ids())
                AND d.tenant_id = ANY (public.app_current_tenant_ids())
          ) hidden;
        PERFORM set_config('app.rls_bypass', coalesce(bypass, ''), true);
        RETURN ids;
    END $$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS app_hidden_document_ids();
DROP FUNCTION IF EXISTS app_hidden_project_ids();
DROP FUNCTION IF EXISTS app_granted_document_ids();
DROP FUNCTION IF EXISTS app_granted_project_ids();
DROP FUNCTION IF EXISTS app_full_access_tenant_ids();
"""


class Migration(core.db.operations.Migration):

    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('documents', '0012_validate_set_null_key'),
        ('tenancy', '0003_json_value_validators'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='DocumentAccess',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
            ],
            options={
                'verbose_name_plural': 'document access',
                'db_table': 'document_access',
                'get_latest_by': 'created_at',
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='ProjectAccess',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
            ],
            options={
                'verbose_name_plural': 'project access',
                'db_table': 'project_access',
                'get_latest_by': 'created_at',
                'abstract': False,
            },
        ),
        migrations.AddField(
            model_name='document',
            name='restricted',
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name='project',
            name='restricted',
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name='documentaccess',
            name='created_by',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='documentaccess',
            name='document',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='access_grants', to='documents.document'),
        ),
        migrations.AddField(
            model_name='documentaccess',
            name='tenant',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant'),
        ),
        migrations.AddField(
            model_name='documentaccess',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='projectaccess',
            name='created_by',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='projectaccess',
            name='project',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='access_grants', to='documents.project'),
        ),
        migrations.AddField(
            model_name='projectaccess',
            name='tenant',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant'),
        ),
        migrations.AddField(
            model_name='projectaccess',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='documentaccess',
            index=models.Index(fields=['user', 'tenant'], name='document_access_user_idx'),
        ),
        migrations.AddIndex(
            model_name='documentaccess',
            index=models.Index(fields=['created_by'], name='document_access_creator_idx'),
        ),
        migrations.AddConstraint(
            model_name='documentaccess',
            constraint=models.UniqueConstraint(fields=('tenant', 'document', 'user'), name='document_access_tenant_document_user_uniq'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='documentaccess',
            trigger=pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='3c62e398644de18ad4d7ae136770265fc4aa0b13', operation='UPDATE', pgid='pgtrigger_set_updated_at_3ee28', table='document_access', when='BEFORE')),
        ),
        migrations.AddIndex(
            model_name='projectaccess',
            index=models.Index(fields=['user', 'tenant'], name='project_access_user_idx'),
        ),
        migrations.AddIndex(
            model_name='projectaccess',
            index=models.Index(fields=['created_by'], name='project_access_creator_idx'),
        ),
        migrations.AddConstraint(
            model_name='projectaccess',
            constraint=models.UniqueConstraint(fields=('tenant', 'project', 'user'), name='project_access_tenant_project_user_uniq'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='projectaccess',
            trigger=pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='18f4da929ebbec615f3b6dc440d50dfd017f8355', operation='UPDATE', pgid='pgtrigger_set_updated_at_04faf', table='project_access', when='BEFORE')),
        ),
            core.db.operations.EnableTenantRLS('project_access'),
        core.db.operations.EnableTenantRLS('document_access'),
        core.db.operations.AddTenantForeignKey('project_access', 'project_access_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE'),
        core.db.operations.AddTenantForeignKey('document_access', 'document_access_document_tenant_fk', column='document_id', to='documents', on_delete='CASCADE'),
        migrations.RunSQL(sql=FUNCTIONS, reverse_sql=DROP_FUNCTIONS),
        # A grant is read by its own user and by the tenant's owners and admins, and
        # written by owners and admins only.
        core.db.operations.NarrowTenantPolicy('project_access', using=GRANT_READERS, check=FULL_ACCESS),
        core.db.operations.NarrowTenantPolicy('document_access', using=GRANT_READERS, check=FULL_ACCESS),
        core.db.operations.NarrowTenantPolicy('projects', using=PROJECT_VISIBLE),
        core.db.operations.NarrowTenantPolicy('document_versions', using=PROJECT_NOT_HIDDEN),
        core.db.operations.NarrowTenantPolicy('documents', using=DOCUMENT_VISIBLE),
        core.db.operations.NarrowTenantPolicy('chunks', using=DOCUMENT_NOT_HIDDEN),
    ]
