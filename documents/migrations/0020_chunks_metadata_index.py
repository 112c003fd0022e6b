"""A GIN index on the chunks' metadata, built concurrently, for chunk_search's filters.

Metadata filters on chunks (documents/filters.py) turn equality, `in` and `contains`
into JSON containment (`metadata @> ...`), which this index answers under row-level
security (jsonb_contains is LEAKPROOF, core/ops/leakproof.py): a filter that keeps few
of a tenant's chunks is read exactly from its matches instead of walking the HNSW graph
past every chunk it leaves out (docs/architecture.md, "Filtered search").
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.operations import AddIndexConcurrently

import core.db.operations


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('documents', '0019_validate_document_ingestion_stages'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='chunk',
            index=GinIndex(fields=['metadata'], name='chunks_metadata_gin', opclasses=['jsonb_path_ops']),
        ),
    ]
