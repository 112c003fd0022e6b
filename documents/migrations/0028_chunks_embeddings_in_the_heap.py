"""Keep each chunk's embedding in its row of `chunks`, out of TOAST (KeepColumnInHeap).

A 1536-d vector is 6,152 bytes, over PostgreSQL's 2 KB toast threshold, so every
embedding was stored out of line, in `chunks`' TOAST table: reading one row's vector
cost a lookup in the toast table's index and four toast tuples. The exact read of the
chunks a member may see compares hundreds of vectors and paid that for each of them,
where the HNSW scan reads its distances from the index (docs/security.md, "Search
under restrictions, measured"; the layout is explained in docs/architecture.md).

Catalog changes only: nothing is rewritten. Rows written from now on (ingestion,
re-embedding) keep their vector in the row; rows already written keep theirs in TOAST
until they are rewritten (docs/operations.md, "Chunks written before documents.0028").
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ("documents", "0027_chunk_embeddings_and_tenant_models"),
    ]

    operations = [
        core.db.operations.KeepColumnInHeap("chunks", "embedding"),
    ]
