"""The audit trail partitioned by month of its UUIDv7 id, like agent_executions
(docs/operations.md, "Partitions and retention"): retention drops whole months, and a
query by time reads only the months it covers.

A migration of its own because core.db.operations.PartitionByIdMonth reads the table's
definition from the catalog: `sqlmigrate` (and `make bench`'s replay) reads it where the
database stands before the migration, which must already hold the tables.
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('tenancy', '0004_audit_trail'),
    ]

    operations = [
        core.db.operations.PartitionByIdMonth('audit_events'),
        core.db.operations.PartitionByIdMonth('audit_events_global'),
    ]
