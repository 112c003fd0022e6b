"""agent_executions partitioned by month of its UUIDv7 id (docs/operations.md).

The run history grows fastest; monthly partitions let `manage.py partitions
--retain-months N` drop whole months and let queries by time (an id range) scan only
the months they cover. The id's time is the key: the primary key (id) and the unique
(tenant_id, id) that every composite foreign key points at already include it, so both
stay as they are (core.db.partitions explains the bounds).

core.db.operations.PartitionByIdMonth rebuilds the table in this migration's one
transaction: every row is copied into partitions for the months the ids fall in, plus
the current and next month, and the table's constraints, indexes, triggers, row-level
security (on the parent and on each partition) and the foreign keys of the tables that
point at it are read from the catalog and declared again. It fails, changing nothing,
if a row's id is not a UUIDv7. Backwards it rebuilds one plain table the same way.

The copy holds agent_executions (and, briefly, the referencing tables) under ACCESS
EXCLUSIVE locks for as long as it takes: on a big table, run it in a maintenance window.
"""

import core.db.partitions
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0009_execution_idempotency_keys'),
    ]

    operations = [
        core.db.operations.PartitionByIdMonth('agent_executions'),
    ]
