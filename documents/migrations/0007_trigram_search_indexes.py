"""pg_trgm, and trigram indexes on the names the admin searches: projects.name, documents.title.

The admin's text searches are `ILIKE '%term%'` (core.lookups): without these indexes each
is a scan of the whole table. pg_trgm ships with PostgreSQL and is a trusted extension,
so the owner creates it. The tables are big, so the indexes are built without blocking
writes (CONCURRENTLY, which cannot run in a transaction: not atomic).
"""

import core.db.operations
import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('documents', '0006_validate_tenant_foreign_keys'),
    ]

    operations = [
        # Not TrigramExtension, which writes nothing (in sqlmigrate too) where the
        # extension exists, so the SQL shown would lack it. Reversing drops it only if
        # nothing else (another app's index) still uses it.
        core.db.operations.create_extension_if_missing(
            "pg_trgm", reverse_sql="DROP EXTENSION IF EXISTS pg_trgm RESTRICT"
        ),
        AddIndexConcurrently(
            model_name='project',
            index=django.contrib.postgres.indexes.GinIndex(fields=['name'], name='projects_name_trgm', opclasses=['gin_trgm_ops']),
        ),
        AddIndexConcurrently(
            model_name='document',
            index=django.contrib.postgres.indexes.GinIndex(fields=['title'], name='documents_title_trgm', opclasses=['gin_trgm_ops']),
        ),
    ]
