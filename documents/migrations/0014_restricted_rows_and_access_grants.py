"""Restricted projects and documents, and the users who may see them (docs/security.md).

`projects.restricted` and `documents.restricted` (NOT NULL DEFAULT false: a constant
default, so adding them rewrites nothing and locks briefly). `project_access` and
`document_access` list the users granted a restricted row; their triggers keep the
row's `access_user_ids` in step (AddAccessGrants). Each table below carries who may see
a row, `restricted_to` (NULL: every member), derived by triggers from its own list and
its parents' (AddRowAccess), and its tenant_isolation policy reads that column and the
transaction's settings only (core.0002): no subquery, the same on a Citus shard. The
agents and exports apps add their tables in their own migrations.

The partial indexes on restricted rows come in 0015, built concurrently.
"""

import core.db.audit
import core.db.operations
import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models


FULL_ACCESS = "tenant_id = ANY (app_full_access_tenant_ids())"
GRANT_READERS = f"user_id = app_current_user_id() OR {FULL_ACCESS}"

# Each table of this app below a restricted row, and where its restriction comes from.
ROW_ACCESS = [
    core.db.operations.AddRowAccess('projects', own=True),
    core.db.operations.AddRowAccess('documents', own=True, parents={'project_id': 'projects'}),
    core.db.operations.AddRowAccess('document_versions', parents={'project_id': 'projects'}),
    core.db.operations.AddRowAccess('chunks', parents={'document_id': 'documents'}),
]


class Migration(core.db.operations.Migration):

    dependencies = [
        ('core', '0002_full_access_function'),
        ('documents', '0013_audit_trail'),
        ('tenancy', '0006_audit_sealed_after_commit'),
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
        *ROW_ACCESS,
        core.db.operations.AddAccessGrants('project_access', column='project_id', to='projects'),
        core.db.operations.AddAccessGrants('document_access', column='document_id', to='documents'),
        # A grant is read by its own user and by the tenant's owners and admins, and
        # written by owners and admins only.
        core.db.operations.NarrowTenantPolicy('project_access', using=GRANT_READERS, check=FULL_ACCESS),
        core.db.operations.NarrowTenantPolicy('document_access', using=GRANT_READERS, check=FULL_ACCESS),
        # Grants are recorded in the audit trail; the columns the access triggers derive
        # (restricted_to, access_user_ids) are not (core.db.audit.DERIVED_COLUMNS): the
        # functions are replaced, and kept on the way back (they only ignore more).
        migrations.RunSQL(sql=core.db.audit.functions_sql(), reverse_sql=migrations.RunSQL.noop),
        core.db.operations.AuditTable('project_access'),
        core.db.operations.AuditTable('document_access'),
    ]
