"""Monthly range partitions on a UUIDv7 primary key (docs/operations.md).

A UUIDv7 starts with its Unix time in milliseconds, and PostgreSQL orders uuids byte by
byte, so the ids made in one month lie between two constant uuids: the month's start
time followed by zeros, and the next month's. Partitioning by RANGE (id) therefore
splits a table by time while its primary key (id), and every unique key holding id,
still include the partition key, as PostgreSQL requires; foreign keys to
(tenant_id, id) keep working. A query with an id range (selectors turn a time range
into one, `uuid7_floor`) scans only the months it covers.

Row-level security is per table in PostgreSQL: a partition read directly is not
protected by its parent's policies. Every partition made here gets its parent's
ENABLE + FORCE and a copy of each of its parent's policies (read from pg_policies,
so the copies follow whatever the migrations declared). Indexes, triggers and foreign
keys declared on the parent apply to every partition by themselves.

No default partition: creating a month would then scan it, and fail if it held a row
of that month. Instead the conversion and `manage.py partitions --ahead N` create
months ahead, and the `partitions_ahead` health check fails when the current or next
month is missing. Free of app imports, like the migration operations.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from psycopg import sql

from core.db.distributed import DISTRIBUTION_COLUMN, SEQUENTIAL_SQL, distribute_new_table_sql
from core.ids import uuid7_floor

PARTITION_NAME = re.compile(r"^(?P<table>.+)_p(?P<year>\d{4})_(?P<month>\d{2})$")


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return month.replace(year=index // 12, month=index % 12 + 1)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def month_bounds(month: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    """The [lower, upper) ids of a month's partition."""
    return uuid7_floor(month), uuid7_floor(add_months(month, 1))


def partitions(cursor, table: str) -> dict[datetime, str]:
    """The table's monthly partitions by month (UTC), from pg_inherits."""
    found = {}
    for name in partition_names(cursor, table):
        if match := PARTITION_NAME.match(name):
            month = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
            found[month] = name
    return found


def partition_names(cursor, table: str) -> list[str]:
    """Every partition of `table`, by name (pg_inherits), whatever its name says."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY 1",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def create_month_partition(cursor, table: str, month: datetime, *, parent: str = "") -> bool:
    """Create the month's partition of `table` (attached to `parent`, by default the table
    itself) with its parent's row-level security; True if it is new."""
    name, parent = partition_name(table, month), parent or table
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    if cursor.fetchone()[0]:
        return False
    cursor.execute(_partition_statement(table, month, parent))
    copy_row_level_security(cursor, parent, name)
    return True


def one_connection_per_node(cursor) -> None:
    """On a Citus coordinator, DDL on a distributed table in a transaction that has read a
    reference table it has a key to, or a write to a reference table after a write to
    several shards (a person's erasure: their keys cleared everywhere, then the users
    row), must go over one connection per node, or Citus refuses it; the job's
    transaction says so first. Nothing on plain PostgreSQL, nor
    from a plain psycopg cursor (the bench's loader), which has no Django connection."""
    if getattr(getattr(cursor, "db", None), "citus", None):
        cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")


def ensure_months(cursor, table: str, first: datetime, last: datetime) -> list[str]:
    """Create every missing month from `first` to `last` (inclusive); their names."""
    one_connection_per_node(cursor)
    created, month = [], month_start(first)
    while month <= last:
        if create_month_partition(cursor, table, month):
            created.append(partition_name(table, month))
        month = add_months(month, 1)
    return created


def copy_row_level_security(cursor, source: str, target: str) -> None:
    """Give `target` the ENABLE/FORCE flags and every policy of `source`."""
    for statement in _security_statements(cursor, source, target):
        cursor.execute(statement)


def _security_statements(cursor, source: str, target: str) -> list[sql.Composed]:
    """`source`'s row-level security (flags and policies), declared on `target`."""
    cursor.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
        [source],
    )
    enabled, forced = cursor.fetchone()
    target_sql = sql.Identifier(target)
    statements = []
    if enabled:
        statements.append(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target_sql))
    if forced:
        statements.append(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(target_sql))
    cursor.execute(
        "SELECT policyname, permissive, roles::text[], cmd, qual, with_check FROM pg_policies "
        "WHERE schemaname = 'public' AND tablename = %s ORDER BY policyname",
        [source],
    )
    for name, permissive, roles, command, using, check in cursor.fetchall():
        parts = [
            sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
                sql.Identifier(name),
                target_sql,
                sql.SQL(permissive),
                sql.SQL(command),
                sql.SQL(", ").join(
                    sql.SQL("PUBLIC") if role == "public" else sql.Identifier(role)
                    for role in roles
                ),
            )
        ]
        if using is not None:
            parts.append(sql.SQL(" USING ({})").format(sql.SQL(using)))
        if check is not None:
            parts.append(sql.SQL(" WITH CHECK ({})").format(sql.SQL(check)))
        statements.append(sql.Composed(parts))
    return statements


def _partition_statement(table: str, month: datetime, parent: str) -> sql.Composed:
    lower, upper = month_bounds(month)
    return sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(partition_name(table, month)),
        sql.Identifier(parent),
        sql.Literal(str(lower)),
        sql.Literal(str(upper)),
    )


# The conversion: the same catalog-driven rebuild both ways.


def _definitions(cursor, table: str) -> dict[str, list]:
    """Everything to declare again on a rebuilt table, read from the catalog."""
    cursor.execute(
        # NOT NULL ('n') comes with the columns (LIKE); the rest in the order they need:
        # primary key and unique keys before the foreign keys that may point at them.
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype <> 'n' AND conparentid = 0 "
        "ORDER BY array_position(ARRAY['p', 'u', 'c', 'x', 'f'], contype::text), conname",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid "
        "AND c.conrelid = i.indrelid) ORDER BY i.indexrelid::regclass::text",
        [table],
    )
    # A partitioned table's index reads "ON ONLY t": declared again, it must cover all.
    indexes = [definition.replace(" ON ONLY ", " ON ") for (definition,) in cursor.fetchall()]
    cursor.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
        "AND NOT tgisinternal ORDER BY tgname",
        [table],
    )
    triggers = [definition for (definition,) in cursor.fetchall()]
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE confrelid = %s::regclass AND conrelid <> confrelid AND contype = 'f' "
        "AND conparentid = 0 ORDER BY 1, 2",
        [table],
    )
    incoming = cursor.fetchall()
    return {
        "constraints": constraints,
        "indexes": indexes,
        "triggers": triggers,
        "incoming": incoming,
    }


def _months_of_rows(cursor, table: str) -> list[datetime]:
    cursor.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE uuid_extract_version(id) IS DISTINCT FROM 7), "
            "array_agg(DISTINCT date_trunc('month', uuid_extract_timestamp(id), 'UTC')) "
            "FILTER (WHERE uuid_extract_version(id) = 7) FROM {}"
        ).format(sql.Identifier(table))
    )
    not_v7, months = cursor.fetchone()
    if not_v7:
        raise ValueError(
            f"{table}: {not_v7} rows have an id that is not a UUIDv7, so no month holds "
            "them; give them UUIDv7 ids (or delete them) and migrate again."
        )
    return sorted(month_start(month) for month in months or [])


def _has_tenant_column(cursor, table: str) -> bool:
    cursor.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = %s AND attnotnull AND NOT attisdropped)",
        [table, DISTRIBUTION_COLUMN],
    )
    return cursor.fetchone()[0]


def rebuild(cursor, table: str, *, partitioned: bool, execute, now: datetime | None = None) -> None:
    """Rebuild `table` as monthly partitions (or back as one plain table), every row kept.

    The catalog is read through `cursor`; every statement that changes something goes
    through `execute` (the schema editor's, so `sqlmigrate` collects it instead of
    running it). One transaction (the migration's): either every row moved or nothing
    changed. The rows are copied under the ACCESS EXCLUSIVE lock of the DROP:
    PostgreSQL cannot turn a plain table into a partitioned one in place.
    """
    new = f"{table}__rebuilt"
    # In a distributed database the new table is distributed with the others before
    # the rows move: a local table could not take the keys to distributed ones back.
    # Citus distributes only over one connection per node once the transaction did,
    # so that comes before the rows are read.
    distribute = (
        distribute_new_table_sql(cursor, new, widen_primary_key=False)
        if _has_tenant_column(cursor, table)
        else []
    )
    if distribute:
        cursor.execute(SEQUENTIAL_SQL)
    # The owner is subject to the forced row-level security too: the months of the rows
    # are read (and the rows copied) with the bypass on, for this transaction only.
    bypass = sql.SQL("SELECT set_config('app.rls_bypass', 'on', true)")
    cursor.execute(bypass)
    definitions = _definitions(cursor, table)
    table_sql, new_sql = sql.Identifier(table), sql.Identifier(new)
    months = []
    if partitioned:
        current = month_start(now or datetime.now(UTC))
        months = sorted({*_months_of_rows(cursor, table), current, add_months(current, 1)})
    security = {
        target: _security_statements(cursor, table, target)
        for target in [table, *(partition_name(table, month) for month in months)]
    }
    statements = [
        bypass,
        *(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(referencing), sql.Identifier(name)
            )
            for referencing, name, _ in definitions["incoming"]
        ),
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING "
            "STORAGE INCLUDING COMMENTS){}"
        ).format(new_sql, table_sql, sql.SQL(" PARTITION BY RANGE (id)" if partitioned else "")),
        *(_partition_statement(table, month, new) for month in months),
        *(sql.SQL(statement) for statement in distribute),
        # Before the triggers exist again: the rows are copied as they are (a
        # status-initial trigger would refuse a finished execution, updated_at would move).
        sql.SQL("INSERT INTO {} SELECT * FROM {}").format(new_sql, table_sql),
        sql.SQL("DROP TABLE {}").format(table_sql),
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(new_sql, table_sql),
        *(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                table_sql, sql.Identifier(name), sql.SQL(definition)
            )
            for name, definition in definitions["constraints"]
        ),
        *(sql.SQL(statement) for statement in definitions["indexes"] + definitions["triggers"]),
        *(statement for statements in security.values() for statement in statements),
        *(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(referencing), sql.Identifier(name), sql.SQL(definition)
            )
            for referencing, name, definition in definitions["incoming"]
        ),
    ]
    for statement in statements:
        execute(statement.as_string(cursor.connection), None)


def _cleared_by_trigger_as_set_null(
    cursor, table: str, keys: list[tuple[str, str, str, str]]
) -> list[tuple[str, str, str]]:
    """(referencing table, action, column) of each key to `table`, where a NO ACTION key
    whose column its trigger clears (core.db.operations.AddTenantForeignKey's SET NULL,
    which Citus refuses as the key's own action) counts as SET NULL: dropping a whole
    partition fires no trigger, so the clearing is done here as for a SET NULL key."""
    from core.db.operations import set_null_trigger_name  # it imports this module

    cursor.execute(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
        [table],
    )
    triggers = {name for (name,) in cursor.fetchall()}
    return [
        (
            referencing,
            "n" if action == "a" and set_null_trigger_name(key) in triggers else action,
            column,
        )
        for referencing, action, column, key in keys
    ]


def references_to(cursor, table: str) -> list[tuple[str, str, str]]:
    """(referencing table, ON DELETE action, column) of every foreign key to `table`'s id,
    `table`'s own self-references included, from the catalog; a key whose trigger sets
    the column NULL counts as SET NULL ("n"), CASCADE is "c"."""
    cursor.execute(
        "SELECT conrelid::regclass::text, confdeltype, a.attname::text, c.conname::text "
        "FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid "
        "AND a.attnum = c.conkey[array_position(c.confkey, (SELECT attnum FROM pg_attribute "
        "WHERE attrelid = c.confrelid AND attname = 'id'))] "
        "WHERE c.contype = 'f' AND c.confrelid = %s::regclass AND c.conparentid = 0 "
        "ORDER BY 1, 3",
        [table],
    )
    return _cleared_by_trigger_as_set_null(cursor, table, cursor.fetchall())


def drop_months_before(cursor, table: str, cutoff: datetime) -> dict[str, int]:
    """Remove every monthly partition of `table` older than `cutoff`, with what depends on it.

    The rows pointing at those months get their foreign key's own ON DELETE action,
    set-based: referencing rows are deleted (CASCADE) or have the column cleared (SET
    NULL); a key with neither refuses, as the database would. Rows of later months
    whose self-reference points into the removed months (a run's step started after
    the month turned) go too, with their own dependents, as CASCADE says. Then each
    partition is detached and dropped. Run it in one transaction: a failure part way
    leaves everything as it was. Returns the rows removed or cleared per table.
    """
    old = sorted(
        (month, name) for month, name in partitions(cursor, table).items() if month < cutoff
    )
    if not old:
        return {}
    one_connection_per_node(cursor)
    upper = str(uuid7_floor(cutoff))
    counts: dict[str, int] = {}
    references = references_to(cursor, table)
    for referencing, _action, column in references:
        if referencing != table:
            continue
        # Later rows hanging from removed ones: the parent's CASCADE, row by row.
        cursor.execute(
            sql.SQL("DELETE FROM {t} WHERE id >= %s AND {c} < %s").format(
                t=sql.Identifier(table), c=sql.Identifier(column)
            ),
            [upper, upper],
        )
        counts[table] = cursor.rowcount
    for referencing, action, column in references:
        if referencing == table:
            continue
        target, column_sql = sql.Identifier(referencing), sql.Identifier(column)
        if action == "c":
            statement = sql.SQL("DELETE FROM {} WHERE {} < %s").format(target, column_sql)
        elif action == "n":
            statement = sql.SQL("UPDATE {} SET {} = NULL WHERE {} < %s").format(
                target, column_sql, column_sql
            )
        else:
            statement = sql.SQL("SELECT 1 FROM {} WHERE {} < %s LIMIT 1").format(target, column_sql)
        cursor.execute(statement, [upper])
        if action not in ("c", "n") and cursor.fetchone():
            raise ValueError(f"{referencing}.{column} still references rows of {table}")
        counts[referencing] = counts.get(referencing, 0) + max(cursor.rowcount, 0)
    cursor.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE id < %s").format(sql.Identifier(table)), [upper]
    )
    counts[table] = counts.get(table, 0) + cursor.fetchone()[0]
    for _, name in old:
        cursor.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
        cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    return counts
