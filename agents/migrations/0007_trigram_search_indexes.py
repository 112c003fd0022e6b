"""Trigram indexes on the columns the executions admin searches: agent_type and model.

The search is `ILIKE '%term%'` (core.lookups); without them it scans every execution.
agent_executions is the biggest table, so they are built without blocking writes
(CONCURRENTLY, which cannot run in a transaction: not atomic). documents.0007 creates
pg_trgm.
"""

import core.db.operations
import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('agents', '0006_change_proposals_decisions_execution_errors'),
        ('documents', '0007_trigram_search_indexes'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='agentexecution',
            index=django.contrib.postgres.indexes.GinIndex(fields=['agent_type'], name='agent_exec_agent_type_trgm', opclasses=['gin_trgm_ops']),
        ),
        AddIndexConcurrently(
            model_name='agentexecution',
            index=django.contrib.postgres.indexes.GinIndex(fields=['model'], name='agent_exec_model_trgm', opclasses=['gin_trgm_ops']),
        ),
    ]
