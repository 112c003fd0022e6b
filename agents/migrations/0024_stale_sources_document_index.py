"""An index on stale_sources (tenant_id, document_id): a knowledge document's page lists
the outputs flagged as built on it, the flags of its chunks, including those whose chunk
is gone (removed by a re-ingestion), which only the document's id still finds. Without
it the page would read every flag of the tenant. Built without blocking the triggers
that write flags (CONCURRENTLY, which cannot run in a transaction: not atomic).
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import models

import core.db.operations


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ("agents", "0023_execution_error_search"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="stalesource",
            index=models.Index(fields=["tenant", "document_id"], name="stale_sources_document_idx"),
        ),
    ]
