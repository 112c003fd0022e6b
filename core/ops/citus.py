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

Citus copies the rows already present into the shards with COPY, which PostgreSQL
refuses where row-level security applies, and it applies to the owner of a table that
forces it: the tables stop forcing it for the copy and force it again before the
transaction ends (it holds their ACCESS EXCLUSIVE locks, so nobody sees the gap). The
copy would also fire the shards' triggers, which judge new writes (an execution must
start as pending): the rows are moved, not written, so the tables' own triggers are off
for the copy too, and on again before the end.

The triggers go with their tables (`citus.enable_unsafe_triggers`: Citus runs them on
the shards, where they may read their own tenant's rows of co-located tables, which is
all ours do), and the setting stays on for the database, so a later migration may add a
trigger. Every table's rows are counted before and after, under the explicit bypass: a
table whose count changed rolls everything back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import connection, transaction
from psycopg import sql

from core.db.connections import owner_connection
from core.jobs import JobSummary, rolled_back_on_dry_run
from core.ops.distribution import (
    COORDINATOR_TABLES,
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


@dataclass(frozen=True)
class DistributionSummary(JobSummary):
    steps: tuple[Step, ...] = ()

    def report(self) -> list[str]:
        lines = [f"{step.seconds * 1000:9.1f} ms  {step.statement}" for step in self.steps]
        total = sum(step.seconds for step in self.steps)
        verb = "would distribute" if self.dry_run else "distributed"
        counted = sum(1 for step in self.steps if "create_distributed_table" in step.statement)
        referenced = sum(1 for step in self.steps if "create_reference_table" in step.statement)
        lines.append(
            f"{verb} {counted} tenant tables by tenant_id and made {referenced} reference "
            f"tables: {len(self.steps)} statements in {total:.1f} s"
        )
        return lines


def distribute_database(*, dry_run: bool = False) -> DistributionSummary:
    """`manage.py citus_distribute`: `distribute` as the owner, under the explicit bypass.

    A dry run does it all and rolls it back, so it proves the plan on this cluster.
    """
    logger.warning("row-level security bypass: distribute on Citus")
    with rolled_back_on_dry_run(dry_run) as done, owner_connection(), transaction.atomic():
        with connection.cursor() as cursor:
            # The bypass must reach the workers too (the rows are counted there after).
            cursor.execute("SET LOCAL citus.propagate_set_commands TO 'local'")
            cursor.execute("SET LOCAL app.rls_bypass TO 'on'")
            steps = distribute(cursor)
        done()
    return DistributionSummary(dry_run=dry_run, steps=tuple(steps))


def citus_version(cursor) -> str | None:
    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    row = cursor.fetchone()
    return row[0] if row else None


def distributed_tables(cursor) -> list[str]:
    """The public tables Citus already manages (distributed, reference or local)."""
    cursor.execute(
        "SELECT logicalrelid::regclass::text FROM pg_dist_partition p "
        "JOIN pg_class c ON c.oid = p.logicalrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition ORDER BY 1"
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


def _forced_row_security(cursor) -> list[str]:
    """The tables that force row-level security, partitions included (each has its own flag)."""
    cursor.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'p') AND relforcerowsecurity ORDER BY 1"
    )
    return [name for (name,) in cursor.fetchall()]


def _tables_with_triggers(cursor) -> list[str]:
    """The tables (not partitions: their triggers follow the parent's) with triggers of ours."""
    cursor.execute(
        "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition "
        "AND NOT t.tgisinternal ORDER BY 1"
    )
    return [name for (name,) in cursor.fetchall()]


def _row_counts(cursor, tables: list[str]) -> dict[str, int]:
    counts = {}
    for name in tables:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
        counts[name] = cursor.fetchone()[0]
    return counts


def placement_problems(cursor) -> list[str]:
    """Where a distributed database differs from what citus_distribute makes: a tenant
    table not distributed (a migration's new table left on the coordinator), the tenant
    tables in more than one co-location group, a global table misplaced. Empty when
    every table is in place (after an upgrade by `migrate`, docs/operations.md)."""
    tables = read_tables(cursor)
    cursor.execute(
        "SELECT p.logicalrelid::regclass::text, p.partmethod, p.repmodel "
        "FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition"
    )
    # partmethod 'h': distributed; 'n' with repmodel 't': a reference table, else a
    # Citus local table (kept on the coordinator).
    kinds = {
        name: (
            "distributed"
            if method == "h"
            else "a reference table"
            if model == "t"
            else "a Citus local table"
        )
        for name, method, model in cursor.fetchall()
    }
    cursor.execute(
        "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h'"
    )
    groups = cursor.fetchone()[0]
    problems = []
    for name, table in sorted(tables.items()):
        kind = kinds.get(name, "not managed by Citus")
        if table.tenant_column is not None and kind != "distributed":
            problems.append(f"{name}: a tenant table, {kind}, not distributed by tenant_id")
        elif name in REFERENCE_TABLES and kind != "a reference table":
            problems.append(f"{name}: {kind}, not a reference table")
        elif name in COORDINATOR_TABLES and name in kinds:
            problems.append(f"{name}: {kind}, not left to the coordinator")
    if groups > 1:
        problems.append(f"the tenant tables are in {groups} co-location groups, not one")
    return problems


def refusal(cursor) -> str | None:
    """Why `distribute` would refuse this database, or None when it may go ahead."""
    if citus_version(cursor) is None:
        return (
            "This database has no citus extension: distributing needs a Citus coordinator. "
            "Create the extension on every node and add the workers first "
            "(docs/operations.md, 'Scaling out with Citus')."
        )
    if done := distributed_tables(cursor):
        already = (
            f"This database is already distributed ({len(done)} tables managed by Citus, "
            f"e.g. {', '.join(done[:3])})"
        )
        if misplaced := placement_problems(cursor):
            return f"{already}, but not as citus_distribute makes it:\n  " + "\n  ".join(misplaced)
        return f"{already}; every table is where citus_distribute puts it: nothing to do."
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
    forced = _forced_row_security(cursor)
    for table in forced:
        run(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.Identifier(table)))
    triggered = _tables_with_triggers(cursor)
    for table in triggered:
        run(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table)))
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
    for table in triggered:
        run(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table)))
    for table in forced:
        run(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.Identifier(table)))
    cursor.execute("SELECT current_database()")
    run(
        sql.SQL("ALTER DATABASE {} SET citus.enable_unsafe_triggers TO on").format(
            sql.Identifier(cursor.fetchone()[0])
        )
    )
    after = _row_counts(cursor, names)
    changed = {name: (before[name], after[name]) for name in names if before[name] != after[name]}
    if changed:
        raise RuntimeError(f"row counts changed while distributing (before, after): {changed}")
    return steps
