"""The embedding cache, and the flag that lets a document share its bytes' SHA-256.

- `embedding_cache` (docs/services.md, "Embedding cache"): one vector per tenant, model
  and chunk text's SHA-256, so identical text is embedded once per model. A tenant table
  like the others: the composite tenant-first unique key, row-level security forced,
  audited (the vector as its SHA-256, as chunks.embedding), distributed on Citus.
- `documents.duplicate_allowed` (NOT NULL DEFAULT false: a constant default, so adding
  it rewrites nothing and locks briefly): set on a document uploaded with
  allow_duplicate. The unique index it exempts from comes in 0021, built concurrently.
"""

import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
import pgvector.django.vector
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('documents', '0020_chunks_metadata_index'),
        ('tenancy', '0008_audit_erasable_values_and_anchors'),
    ]

    operations = [
        migrations.CreateModel(
            name='EmbeddingCacheEntry',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('model', models.CharField(max_length=200)),
                ('content_sha256', models.CharField(max_length=64)),
                ('embedding', pgvector.django.vector.VectorField()),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'verbose_name_plural': 'embedding cache entries',
                'db_table': 'embedding_cache',
                'get_latest_by': 'created_at',
                'abstract': False,
                'constraints': [
                    models.UniqueConstraint(fields=('tenant', 'content_sha256', 'model'), name='embedding_cache_tenant_sha256_model_uniq'),
                    models.CheckConstraint(condition=models.Q(('content_sha256__regex', '^[0-9a-f]{64}$')), name='embedding_cache_content_sha256_hex'),
                    models.CheckConstraint(condition=models.Q(('model', ''), _negated=True), name='embedding_cache_model_not_empty'),
                ],
                'triggers': [
                    pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='46a0fd5e3e16a57bafca1501dec1bf843457e301', operation='UPDATE', pgid='pgtrigger_set_updated_at_0e39b', table='embedding_cache', when='BEFORE')),
                ],
            },
        ),
        core.db.operations.EnableTenantRLS('embedding_cache'),
        core.db.operations.AuditTable('embedding_cache', hashed=('embedding',)),
        migrations.AddField(
            model_name='document',
            name='duplicate_allowed',
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
