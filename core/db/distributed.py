"""Tenant tables made after the database was distributed on Citus (docs/operations.md,
"Upgrading a cluster").

`manage.py citus_distribute` distributes every tenant table once (core.ops.citus). A
later migration that creates a tenant table runs on the coordinator, where Citus would
leave the new table local: a foreign key to a reference table (tenants) makes it a
"Citus local table" on the coordinator alone, and a foreign key to a distributed table
(chunks, agent_executions) is refused outright. So in a distributed database the new
table is distributed the moment it is created, before any key is added to it: its
primary key widened to (tenant_id, id), then distributed by tenant_id, co-located with
the tenant tables already there, as citus_distribute would have done. On plain
PostgreSQL, and on a Citus database not distributed yet (citus_distribute will take the
new table with the others), nothing happens.

The schema editor (core.db.backend) calls this after every CREATE TABLE of a model;
core.db.partitions.rebuild after the CREATE TABLE of a table rebuilt as partitions
(or back). Free of app imports.
"""

from __future__ import annotations

DISTRIBUTION_COLUMN = "tenant_id"
# Citus distributes a table in a transaction that has touched reference tables (every
# migration's has) only over one connection per node.
SEQUENTIAL_SQL = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"


def colocation_peer(cursor) -> str | None:
    """A tenant table Citus already distributes, to co-locate a new one with; None where
    the database is not distributed (plain PostgreSQL, or Citus before citus_distribute).

    Two statements: on plain PostgreSQL a query naming pg_dist_partition fails to parse.
    """
    cursor.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute(
        "SELECT p.logicalrelid::regclass::text FROM pg_dist_partition p "
        "JOIN pg_class c ON c.oid = p.logicalrelid "
        "WHERE p.partmethod = 'h' AND c.relnamespace = 'public'::regnamespace "
        "AND NOT c.relispartition ORDER BY 1 LIMIT 1"
    )
    row = cursor.fetchone()
    return row[0] if row else None


def widen_primary_key_sql(table: str) -> str:
    """Citus requires the distribution column in every unique key, the primary key too."""
    return (
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, "
        f"ADD CONSTRAINT {table}_pkey PRIMARY KEY ({DISTRIBUTION_COLUMN}, id);"
    )


def distribute_sql(table: str, colocate_with: str | None) -> str:
    colocate = f", colocate_with => '{colocate_with}'" if colocate_with else ""
    return f"SELECT create_distributed_table('{table}', '{DISTRIBUTION_COLUMN}'{colocate});"


def distribute_new_table_sql(cursor, table: str, *, widen_primary_key: bool) -> list[str]:
    """The statements that distribute the new tenant table `table` with the others, in a
    distributed database; none elsewhere. The table must hold no unique key without
    tenant_id (the catalog test holds every tenant table to that) and no foreign key yet.

    The first says to go over one connection per node (SEQUENTIAL_SQL): run before
    anything that reads several shards in the transaction, Citus refuses it otherwise.
    """
    peer = colocation_peer(cursor)
    if peer is None:
        return []
    return [
        SEQUENTIAL_SQL,
        *([widen_primary_key_sql(table)] if widen_primary_key else []),
        distribute_sql(table, peer),
    ]
