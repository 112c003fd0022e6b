"""The audit trail (docs/security.md, "Audit trail"): audit_events and audit_events_global.

Both are written by triggers only (core.db.audit), never updated or deleted
(AppendOnlyTable; the runtime role is also refused UPDATE, DELETE and TRUNCATE by its
grants, core.db.roles); tenancy.0005 partitions them by month. audit_events is a tenant table
(row-level security, distributed with the others on Citus); audit_events_global holds
the events of users, tenants and shared templates, which have no tenant (a
coordinator-local table on Citus). This migration also starts recording memberships,
users and tenants; each app's own migration does its tables.
"""

import core.db.operations
import core.ids
import core.models
import django.db.models.deletion
from django.db import migrations, models


class Migration(core.db.operations.Migration):

    dependencies = [
        ('tenancy', '0003_json_value_validators'),
    ]

    operations = [
        migrations.CreateModel(
            name='GlobalAuditEvent',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('seq', models.BigIntegerField()),
                ('table_name', models.CharField(max_length=63)),
                ('row_id', models.UUIDField()),
                ('action', models.CharField(choices=[('insert', 'Insert'), ('update', 'Update'), ('delete', 'Delete')], max_length=6)),
                ('actor_user_id', models.UUIDField(blank=True, null=True)),
                ('actor', models.CharField(max_length=200)),
                ('request_id', models.CharField(blank=True, default='', max_length=100)),
                ('changes', core.models.JSONField(default=dict)),
                ('prev_hash', models.CharField(blank=True, max_length=64, null=True)),
                ('hash', models.CharField(max_length=64)),
            ],
            options={
                'db_table': 'audit_events_global',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(fields=['-seq'], name='audit_events_global_seq_idx'), models.Index(fields=['table_name', 'row_id'], name='audit_events_global_row_idx')],
                'constraints': [models.CheckConstraint(condition=models.Q(('action__in', ['insert', 'update', 'delete'])), name='audit_events_global_action_valid'), models.CheckConstraint(condition=models.Q(('seq__gte', 1)), name='audit_events_global_seq_gte_1')],
            },
        ),
        migrations.CreateModel(
            name='AuditEvent',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('seq', models.BigIntegerField()),
                ('table_name', models.CharField(max_length=63)),
                ('row_id', models.UUIDField()),
                ('action', models.CharField(choices=[('insert', 'Insert'), ('update', 'Update'), ('delete', 'Delete')], max_length=6)),
                ('actor_user_id', models.UUIDField(blank=True, null=True)),
                ('actor', models.CharField(max_length=200)),
                ('request_id', models.CharField(blank=True, default='', max_length=100)),
                ('changes', core.models.JSONField(default=dict)),
                ('prev_hash', models.CharField(blank=True, max_length=64, null=True)),
                ('hash', models.CharField(max_length=64)),
                ('tenant', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'audit_events',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(fields=['tenant', '-seq'], name='audit_events_tenant_seq_idx'), models.Index(fields=['tenant', 'table_name', 'row_id'], name='audit_events_tenant_row_idx')],
                'constraints': [models.CheckConstraint(condition=models.Q(('action__in', ['insert', 'update', 'delete'])), name='audit_events_action_valid'), models.CheckConstraint(condition=models.Q(('seq__gte', 1)), name='audit_events_seq_gte_1')],
            },
        ),
        core.db.operations.EnableTenantRLS('audit_events'),
        core.db.operations.CreateAuditFunctions(),
        core.db.operations.AppendOnlyTable('audit_events'),
        core.db.operations.AppendOnlyTable('audit_events_global'),
        core.db.operations.AuditTable('memberships'),
        core.db.operations.AuditTable('users', tenant=False, hashed=('password',)),
        core.db.operations.AuditTable('tenants', tenant=False),
    ]
