"""Erasure receipts (docs/security.md, "Erasure"): row-level security forced, read and
written by the tenant's owners and admins (and the erasure commands, under the system
bypass), never updated or deleted (AppendOnlyTable)."""

import core.db.operations
import core.ids
import core.models
import django.db.models.deletion
from django.db import migrations, models


class Migration(core.db.operations.Migration):

    initial = True

    dependencies = [
        ('core', '0002_full_access_function'),
        # The append-only trigger's function (audit_refuse_change).
        ('tenancy', '0007_audit_events_read_by_owners_and_admins'),
    ]

    operations = [
        migrations.CreateModel(
            name='ErasureReceipt',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('subject_type', models.CharField(choices=[('user', 'Person'), ('document', 'Knowledge document'), ('tenant', 'Tenant')], max_length=16)),
                ('subject_id', models.UUIDField()),
                ('subject_sha256', models.CharField(max_length=64)),
                ('requested_by', models.CharField(help_text="Who asked: the operator's name given to the command.", max_length=200)),
                ('rows_touched', core.models.JSONField(blank=True, default=dict)),
                ('removed_sha256', core.models.JSONField(blank=True, default=dict)),
                ('completed_at', models.DateTimeField()),
                ('tenant', models.ForeignKey(blank=True, db_constraint=False, db_index=False, help_text="The tenant erased in; empty for a person's account.", null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'erasure_receipts',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(fields=['tenant', '-created_at'], name='erasure_receipts_tenant_idx'), models.Index(fields=['subject_id'], name='erasure_receipts_subject_idx')],
                'constraints': [models.CheckConstraint(condition=models.Q(('subject_type__in', ['user', 'document', 'tenant'])), name='erasure_receipts_subject_type_valid'), models.CheckConstraint(condition=models.Q(('subject_sha256__regex', '^[0-9a-f]{64}$')), name='erasure_receipts_subject_sha256_hex')],
            },
        ),
        core.db.operations.EnableTenantRLS('erasure_receipts'),
        core.db.operations.NarrowTenantPolicy(
            'erasure_receipts',
            using="tenant_id = ANY (app_full_access_tenant_ids())",
        ),
        core.db.operations.AppendOnlyTable('erasure_receipts'),
    ]
