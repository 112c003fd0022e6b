"""Trigram indexes on agent_executions.error_type and error_message: the executions
admin's search finds failures by their error ("TimeoutError", words of a message).

agent_executions is partitioned by month (agents.0010) and the biggest table, and
PostgreSQL cannot build an index on a partitioned table CONCURRENTLY. So each index is
declared on the parent alone, built CONCURRENTLY on every partition and attached to it
(core.db.operations.AddIndexToPartitionsConcurrently): no write waits for a build.
Not atomic, for CREATE INDEX CONCURRENTLY; run again after a failure, it goes on where
it stopped. Months created later get the indexes from the parent.
"""

import core.db.operations
import django.contrib.postgres.indexes


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('agents', '0022_stale_flags_ignore_vectors_added_or_dropped'),
    ]

    operations = [
        core.db.operations.AddIndexToPartitionsConcurrently(
            model_name='agentexecution',
            index=django.contrib.postgres.indexes.GinIndex(fields=['error_type'], name='agent_exec_error_type_trgm', opclasses=['gin_trgm_ops']),
        ),
        core.db.operations.AddIndexToPartitionsConcurrently(
            model_name='agentexecution',
            index=django.contrib.postgres.indexes.GinIndex(fields=['error_message'], name='agent_exec_error_msg_trgm', opclasses=['gin_trgm_ops']),
        ),
    ]
