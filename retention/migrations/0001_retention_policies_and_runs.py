"""Retention policies per tenant and the record of each retention run (docs/operations.md,
"Retention"). Both are tenant tables: row-level security forced (EnableTenantRLS),
distributed by tenant_id on Citus, every write in the audit trail (AuditTable)."""

import core.db.operations
import core.ids
import core.models
import django.core.validators
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models


class Migration(core.db.operations.Migration):

    initial = True

    dependencies = [
        ('tenancy', '0006_audit_sealed_after_commit'),
    ]

    operations = [
        migrations.CreateModel(
            name='RetentionRun',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('run_id', models.UUIDField()),
                ('started_at', models.DateTimeField()),
                ('finished_at', models.DateTimeField()),
                ('dry_run', models.BooleanField()),
                ('days', core.models.JSONField(blank=True, default=dict)),
                ('removed', core.models.JSONField(blank=True, default=dict)),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'retention_runs',
                'get_latest_by': 'created_at',
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='RetentionPolicy',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('executions_days', models.IntegerField(blank=True, help_text='Days to keep agent executions, with their errors and sources; empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('messages_days', models.IntegerField(blank=True, help_text='Days to keep conversation messages; empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('evaluation_runs_days', models.IntegerField(blank=True, help_text='Days to keep evaluation runs; empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('exports_days', models.IntegerField(blank=True, help_text='Days to keep exports, with their files; empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('audit_events_days', models.IntegerField(blank=True, help_text='Days to keep audit events (not enforced yet); empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('search_queries_days', models.IntegerField(blank=True, help_text='Days to keep search queries (not enforced yet); empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)])),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'verbose_name_plural': 'retention policies',
                'db_table': 'retention_policies',
                'get_latest_by': 'created_at',
                'abstract': False,
                'constraints': [models.UniqueConstraint(fields=('tenant',), name='retention_policies_tenant_uniq'), models.CheckConstraint(condition=models.Q(('executions_days__isnull', True), models.Q(('executions_days__gte', 1), ('executions_days__lte', 36500)), _connector='OR'), name='retention_policies_executions_days_range'), models.CheckConstraint(condition=models.Q(('messages_days__isnull', True), models.Q(('messages_days__gte', 1), ('messages_days__lte', 36500)), _connector='OR'), name='retention_policies_messages_days_range'), models.CheckConstraint(condition=models.Q(('evaluation_runs_days__isnull', True), models.Q(('evaluation_runs_days__gte', 1), ('evaluation_runs_days__lte', 36500)), _connector='OR'), name='retention_policies_evaluation_runs_days_range'), models.CheckConstraint(condition=models.Q(('exports_days__isnull', True), models.Q(('exports_days__gte', 1), ('exports_days__lte', 36500)), _connector='OR'), name='retention_policies_exports_days_range'), models.CheckConstraint(condition=models.Q(('audit_events_days__isnull', True), models.Q(('audit_events_days__gte', 1), ('audit_events_days__lte', 36500)), _connector='OR'), name='retention_policies_audit_events_days_range'), models.CheckConstraint(condition=models.Q(('search_queries_days__isnull', True), models.Q(('search_queries_days__gte', 1), ('search_queries_days__lte', 36500)), _connector='OR'), name='retention_policies_search_queries_days_range')],
            },
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='retentionpolicy',
            trigger=pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='407cbb240f06e3c1fa8c935ebf4bec669fe8307e', operation='UPDATE', pgid='pgtrigger_set_updated_at_0f3c6', table='retention_policies', when='BEFORE')),
        ),
        migrations.AddIndex(
            model_name='retentionrun',
            index=models.Index(fields=['tenant', '-started_at'], name='retention_runs_tenant_idx'),
        ),
        migrations.AddConstraint(
            model_name='retentionrun',
            constraint=models.CheckConstraint(condition=models.Q(('finished_at__gte', models.F('started_at'))), name='retention_runs_finished_after_started'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='retentionrun',
            trigger=pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='e634912fd8e772edaec5d7293c43b3cc31e7e58a', operation='UPDATE', pgid='pgtrigger_set_updated_at_4b802', table='retention_runs', when='BEFORE')),
        ),
        core.db.operations.EnableTenantRLS('retention_policies'),
        core.db.operations.EnableTenantRLS('retention_runs'),
        core.db.operations.AuditTable('retention_policies'),
        core.db.operations.AuditTable('retention_runs'),
    ]
