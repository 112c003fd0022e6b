"""search_queries: the log of every chunk_search (docs/services.md, "The search log").

Tenant-first unique key, forced row-level security with the usual two policies, a GIN
index on the returned chunk ids (a chunk's hits) and partial indexes for a person's and
an execution's searches. Not audited (docs/security.md, "The search log"): it is itself
the record of a read. 0026 partitions it by month; a migration of its own because the
rebuild reads the table's definition from the catalog.
"""

import core.expressions
import core.ids
import core.models
import django.contrib.postgres.fields
import django.contrib.postgres.indexes
import django.core.validators
import django.db.models.deletion
import pgtrigger.compiler
from django.conf import settings
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('documents', '0024_versions_sources_changed_at'),
        ('tenancy', '0008_audit_erasable_values_and_anchors'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SearchQuery',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('execution_id', models.UUIDField(blank=True, null=True)),
                ('mode', models.CharField(choices=[('semantic', 'Semantic'), ('fulltext', 'Fulltext'), ('hybrid', 'Hybrid')], max_length=16)),
                ('query', models.TextField(blank=True)),
                ('query_sha256', models.CharField(max_length=64)),
                ('filters', core.models.JSONField(blank=True, default=dict)),
                ('k', models.IntegerField(validators=[django.core.validators.MinValueValidator(1)])),
                ('latency_ms', models.FloatField(validators=[django.core.validators.MinValueValidator(0)])),
                ('chunk_ids', django.contrib.postgres.fields.ArrayField(base_field=models.UUIDField(), blank=True, default=list, size=None)),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
                ('user', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'search queries',
                'db_table': 'search_queries',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [django.contrib.postgres.indexes.GinIndex(fields=['chunk_ids'], name='search_queries_chunk_ids_gin'), models.Index(fields=['user'], name='search_queries_user_idx'), models.Index(condition=models.Q(('execution_id__isnull', False)), fields=['tenant', 'execution_id'], name='search_queries_execution_idx')],
                'triggers': [pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='fb7a3118ceeed069ffac6cb23475143c53cc5e27', operation='UPDATE', pgid='pgtrigger_set_updated_at_5c994', table='search_queries', when='BEFORE')), pgtrigger.compiler.Trigger(name='search_queries_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (NEW.query <> '' AND NEW.query IS DISTINCT FROM OLD.query OR NEW.user_id IS NOT NULL AND NEW.user_id IS DISTINCT FROM OLD.user_id OR ROW(OLD.tenant_id, OLD.execution_id, OLD.mode, OLD.query_sha256, OLD.filters, OLD.k, OLD.latency_ms, OLD.chunk_ids, OLD.created_at) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.mode, NEW.query_sha256, NEW.filters, NEW.k, NEW.latency_ms, NEW.chunk_ids, NEW.created_at))", func="RAISE EXCEPTION 'search query % is a record: only its text may be erased and its user cleared', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='185430641ebd80ed6da1059261255b1ae4a3f99c', operation='UPDATE', pgid='pgtrigger_search_queries_immutable_5b67e', table='search_queries', when='BEFORE'))],
                'constraints': [models.UniqueConstraint(fields=('tenant', 'id'), name='search_queries_tenant_id_uniq'), models.CheckConstraint(condition=models.Q(('mode__in', ['semantic', 'fulltext', 'hybrid'])), name='search_queries_mode_valid'), models.CheckConstraint(condition=models.Q(('k__gte', 1)), name='search_queries_k_gte_1'), models.CheckConstraint(condition=models.Q(('latency_ms__gte', 0)), name='search_queries_latency_gte_0'), models.CheckConstraint(condition=models.Q(('query_sha256__regex', '^[0-9a-f]{64}$')), name='search_queries_query_sha256_hex'), models.CheckConstraint(condition=models.Q(('query', ''), ('query_sha256', core.expressions.Sha256Hex('query')), _connector='OR'), name='search_queries_query_sha256_matches')],
            },
        ),
        core.db.operations.EnableTenantRLS('search_queries'),
    ]
