"""Distributing a migrated database on a Citus coordinator (`manage.py citus_distribute`).

core.ops.distribution judges the schema from the catalog and writes the plan; this module
runs it, in one transaction, so a refusal anywhere leaves the database as it was:

1. Every foreign key of the public schema is dropped (its definition kept). Citus cannot
   make a reference table of `tenants` while local tables point at it: it would pull
   every table linked by keys into a conversion, which the partitioned agent_executions
   breaks. The keys come back in step 5, between tables Citus then knows.
2. The primary keys of the tenant tables are widened to (tenant_id, id).
3. The global tables become reference tables (a copy on every node).
4. The tenant tables are distributed by tenant_id, co-located with the first, so one
   tenant's rows of every table live on one node and a statement filtered on tenant_id
   runs on that node alone.
5. The foreign keys are added again, as they were.

The triggers go with their tables (`citus.enable_unsafe_triggers`: Citus runs them on
the shards, where they may read their own tenant's rows of co-located tables, which is
all ours do), and the setting stays on for the database, so a later migration may add a
trigger. Rows already present are copied into the shards under the explicit bypass and
counted before and after: a table whose count changed rolls everything back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from psycopg import sql

from core.ops.distribution import (
    REFERENCE_TABLES,
    citus_plan,
    distribution_problems,
    read_tables,
)

logger = logging.getLogger(__name__)


class DistributionRefused(Exception):
    """Why this database cannot be distributed now; nothing was changed."""


@dataclass(frozen=True)
class Step:
    statement: str
    seconds: float


def citus_version(cursor) -> str | None:
    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    row = cursor.fetchone()
    return row[0] if row else None


def distributed_tables(cursor) -> list[str]:
    """The public tables Citus already manages (distributed, reference or local)."""
    cursor.execute(
        "SELECT logicalrelid::regclass::text FROM pg_dist_partition p "
        "JOIN pg_class c ON c.oid = p.logicalrelid "
        "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1"
    )
    return [name for (name,) in cursor.fetchall()]


_FOREIGN_KEYS_SQL = """
SELECT con.conrelid::regclass::text, con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
WHERE con.contype = 'f' AND con.conparentid = 0 AND c.relnamespace = 'public'::regnamespace
    AND NOT c.relispartition
ORDER BY 1, 2
"""


def _foreign_keys(cursor) -> list[tuple[str, str, str]]:
    cursor.execute(_FOREIGN_KEYS_SQL)
    return cursor.fetchall()


def _row_counts(cursor, tables: list[str]) -> dict[str, int]:
    counts = {}
    for name in tables:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
        counts[name] = cursor.fetchone()[0]
    return counts


def refusal(cursor) -> str | None:
    """Why `distribute` would refuse this database, or None when it may go ahead."""
    if citus_version(cursor) is None:
        return (
            "This database has no citus extension: distributing needs a Citus coordinator. "
            "Create the extension on every node and add the workers first "
            "(docs/operations.md, 'Scaling out with Citus')."
        )
    if done := distributed_tables(cursor):
        return (
            f"This database is already distributed ({len(done)} tables managed by Citus, "
            f"e.g. {', '.join(done[:3])})."
        )
    if problems := distribution_problems(read_tables(cursor)):
        return "The schema is not ready to distribute by tenant_id:\n  " + "\n  ".join(problems)
    return None


def distribute(cursor) -> list[Step]:
    """Run the plan on this coordinator; the caller's transaction holds it all.

    The caller runs this as the owner, in a transaction with the row-level security
    bypass on (tenancy.context.system_context), so the rows it counts and copies are
    every row. Raises DistributionRefused before changing anything where `refusal`
    says why; any later failure is the database's error, raised, and the caller's
    transaction rolls back.
    """
    if reason := refusal(cursor):
        raise DistributionRefused(reason)
    tables = read_tables(cursor)
    names = sorted(tables)
    before = _row_counts(cursor, names)
    steps: list[Step] = []

    def run(statement: str | sql.Composed) -> None:
        text = statement if isinstance(statement, str) else statement.as_string(cursor.connection)
        started = time.monotonic()
        cursor.execute(text)
        steps.append(Step(text, time.monotonic() - started))

    # Inside one transaction Citus must use one connection per node for everything that
    # follows a change to a reference table (sequential mode), or it refuses the next DDL.
    run("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
    run("SET LOCAL citus.enable_unsafe_triggers TO on")
    foreign_keys = _foreign_keys(cursor)
    for table, name, _ in foreign_keys:
        run(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
    for statement in citus_plan(tables):
        run(statement)
    for table, name, definition in foreign_keys:
        run(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(table), sql.Identifier(name)
            )
            + sql.SQL(definition)
        )
    cursor.execute("SELECT current_database()")
    run(
        sql.SQL("ALTER DATABASE {} SET citus.enable_unsafe_triggers TO on").format(
            sql.Identifier(cursor.fetchone()[0])
        )
    )
    after = _row_counts(cursor, names)
    if changed := {name: (before[name], after[name]) for name in names if before[name] != after[name]}:
        raise RuntimeError(f"row counts changed while distributing (before, after): {changed}")
    return steps


__all__ = ["REFERENCE_TABLES", "DistributionRefused", "Step", "distribute", "refusal"]
