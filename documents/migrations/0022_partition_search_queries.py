"""search_queries partitioned by month of its UUIDv7 id, like agent_executions and the
audit trail (docs/operations.md, "Partitions and retention"): retention drops whole
months of the log, and the admin's newest-first list reads the latest months.

A migration of its own because core.db.operations.PartitionByIdMonth reads the table's
definition from the catalog: `sqlmigrate` reads it where the database stands before the
migration, which must already hold the table. The table is new and empty here, so the
rebuild copies nothing.
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0021_search_queries'),
    ]

    operations = [
        core.db.operations.PartitionByIdMonth('search_queries'),
    ]
