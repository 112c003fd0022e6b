"""Keys a Citus cluster can keep when it spreads tenants over nodes (docs/operations.md).

- The single-column foreign keys Django made between tenant tables are dropped
  (db_constraint=False): the composite keys (tenant_id, x_id) -> x (tenant_id, id) of
  the earlier migrations already enforce the same references, with the same ON DELETE
  actions, and also pin the tenant. Dropping a constraint is a catalog change.
- Unique constraints without tenant_id become tenant-first (a document's storage key
  is unique per tenant; chunk ordinals and version numbers too); each new index is
  built CONCURRENTLY and swapped in with a brief lock (core.db.operations).

tests/core/test_distribution.py checks the whole catalog for both rules.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):
    # CREATE UNIQUE INDEX CONCURRENTLY cannot run in a transaction.
    atomic = False

    dependencies = [
        ('documents', '0007_trigram_search_indexes'),
        ('tenancy', '0002_row_level_security'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='chunk',
                name='document',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='chunks', to='documents.document'),
            ),
            table='chunks', column='document_id', target='documents',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='document',
                name='project',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='documents', to='documents.project'),
            ),
            table='documents', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='documentversion',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='documents.project'),
            ),
            table='document_versions', column='project_id', target='projects',
        ),
        core.db.operations.ReplaceUniqueConstraint(
            'chunk',
            models.UniqueConstraint(fields=('document', 'ordinal'), name='chunks_document_ordinal_uniq'),
            models.UniqueConstraint(fields=('tenant', 'document', 'ordinal'), name='chunks_tenant_document_ordinal_uniq'),
        ),
        core.db.operations.ReplaceUniqueConstraint(
            'document',
            models.UniqueConstraint(fields=('storage_key',), name='documents_storage_key_uniq'),
            models.UniqueConstraint(fields=('tenant', 'storage_key'), name='documents_tenant_storage_key_uniq'),
        ),
        core.db.operations.ReplaceUniqueConstraint(
            'documentversion',
            models.UniqueConstraint(fields=('project', 'document_type', 'version'), name='document_versions_project_type_version_uniq'),
            models.UniqueConstraint(fields=('tenant', 'project', 'document_type', 'version'), name='document_versions_project_type_version_uniq'),
        ),
    ]
