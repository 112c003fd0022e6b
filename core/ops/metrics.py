"""`manage.py db_metrics` (`make db-metrics`): what the database is doing, from its statistics.

Table and index sizes, the cache hit ratio, connections by state, dead tuples with the
last (auto)vacuum, and the top statements by total execution time from
pg_stat_statements. Plain SQL on the catalog and statistics views: core imports no app.

It connects as settings.DATABASE_METRICS: the embedded server's superuser, or
DATABASE_METRICS_URL, or else the owner role. PostgreSQL shows other roles' statement
text (pg_stat_statements) and session state (pg_stat_activity) only to superusers and
members of pg_read_all_stats (pg_monitor includes it). As the owner, which is neither,
the report still has every timing and count, but the runtime role's statements (the
application's) read `<insufficient privilege>` and its sessions' state is hidden; the
report says so and how to grant it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from io import TextIOBase

import psycopg
from psycopg import errors

from core.db.connections import one_row

PG_STAT_STATEMENTS_HOWTO = (
    "pg_stat_statements is {problem}, so the top statements cannot be shown. To enable "
    "it: add pg_stat_statements to shared_preload_libraries in postgresql.conf (a "
    "server restart), then, as a superuser in this database, CREATE EXTENSION "
    "pg_stat_statements; (managed services: their parameter group and extension "
    "settings). The embedded server does both."
)
QUERY_WIDTH = 100


def _table(out: TextIOBase, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows under headers, columns aligned; numbers right-aligned."""
    cells = [[_text(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out.write(line(headers) + "\n")
    out.write(line(["-" * width for width in widths]) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    if not rows:
        out.write("(none)\n")


def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _heading(out: TextIOBase, title: str) -> None:
    out.write(f"\n== {title} ==\n")


def _ratio(hit: int | None, read: int | None) -> str:
    hit, read = hit or 0, read or 0
    if hit + read == 0:
        return "n/a (no blocks read yet)"
    return f"{100 * hit / (hit + read):.2f} % ({hit:,} hits, {read:,} reads)"


def role_privileges(cursor) -> tuple[str, bool]:
    """(current role, whether it sees every role's statistics)."""
    cursor.execute(
        "SELECT current_user, rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', "
        "'USAGE') FROM pg_roles WHERE rolname = current_user"
    )
    return cursor.fetchone()


def write_sizes(cursor, out: TextIOBase, limit: int) -> None:
    cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
    _heading(out, f"Tables, largest first (database total {cursor.fetchone()[0]})")
    cursor.execute(
        """
        SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)),
               pg_size_pretty(pg_table_size(c.oid)), pg_size_pretty(pg_indexes_size(c.oid)),
               greatest(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')
        ORDER BY pg_total_relation_size(c.oid) DESC, c.relname LIMIT %s
        """,
        [limit],
    )
    _table(out, ["table", "total", "table", "indexes", "rows (estimate)"], cursor.fetchall())

    _heading(out, "Indexes, largest first")
    cursor.execute(
        """
        SELECT i.relname, t.relname, pg_size_pretty(pg_relation_size(i.oid)), s.idx_scan
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.oid
        WHERE n.nspname = 'public'
        ORDER BY pg_relation_size(i.oid) DESC, i.relname LIMIT %s
        """,
        [limit],
    )
    _table(out, ["index", "table", "size", "scans"], cursor.fetchall())


def write_cache_hit_ratio(cursor, out: TextIOBase) -> None:
    _heading(out, "Cache hit ratio (shared buffers, since the statistics were reset)")
    cursor.execute(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    )
    database = cursor.fetchone()
    cursor.execute(
        "SELECT sum(heap_blks_hit)::bigint, sum(heap_blks_read)::bigint, "
        "sum(idx_blks_hit)::bigint, sum(idx_blks_read)::bigint FROM pg_statio_user_tables"
    )
    heap_hit, heap_read, index_hit, index_read = cursor.fetchone()
    out.write(f"database:     {_ratio(*database)}\n")
    out.write(f"table blocks: {_ratio(heap_hit, heap_read)}\n")
    out.write(f"index blocks: {_ratio(index_hit, index_read)}\n")


def write_connections(cursor, out: TextIOBase, sees_all: bool) -> None:
    cursor.execute("SELECT current_setting('max_connections')::int")
    max_connections = cursor.fetchone()[0]
    _heading(
        out, f"Connections to this database by state (server max_connections {max_connections})"
    )
    cursor.execute(
        """
        SELECT coalesce(state, 'hidden (another role''s session)'), usename, count(*)
        FROM pg_stat_activity WHERE datname = current_database()
        GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
        """
    )
    _table(out, ["state", "role", "connections"], cursor.fetchall())
    if not sees_all:
        out.write("Other roles' sessions show no state to this role (see the note at the top).\n")


def write_dead_tuples(cursor, out: TextIOBase, limit: int) -> None:
    _heading(out, "Dead tuples and vacuum, most dead first")
    cursor.execute(
        """
        SELECT relname, n_live_tup, n_dead_tup,
               round(100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0), 1)::float,
               to_char(last_autovacuum, 'YYYY-MM-DD HH24:MI:SS TZ'),
               to_char(last_vacuum, 'YYYY-MM-DD HH24:MI:SS TZ'),
               to_char(last_autoanalyze, 'YYYY-MM-DD HH24:MI:SS TZ')
        FROM pg_stat_user_tables WHERE schemaname = 'public'
        ORDER BY n_dead_tup DESC, relname LIMIT %s
        """,
        [limit],
    )
    _table(
        out,
        ["table", "live", "dead", "dead %", "last autovacuum", "last vacuum", "last autoanalyze"],
        cursor.fetchall(),
    )


def _one_line(query: str) -> str:
    text = re.sub(r"\s+", " ", query).strip()
    return text if len(text) <= QUERY_WIDTH else text[: QUERY_WIDTH - 1] + "…"


def write_top_statements(conn: psycopg.Connection, out: TextIOBase, limit: int) -> bool:
    """The top statements by total time; False (with how to enable it) when
    pg_stat_statements is missing or not loaded."""
    _heading(out, "Top statements by total execution time (pg_stat_statements)")
    cursor = conn.cursor()
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if cursor.fetchone() is None:
        out.write(PG_STAT_STATEMENTS_HOWTO.format(problem="not installed in this database") + "\n")
        return False
    try:
        with conn.transaction():
            cursor.execute(
                """
                SELECT s.calls, round(s.total_exec_time::numeric, 1)::float,
                       round(s.mean_exec_time::numeric, 2)::float, s.rows, r.rolname, s.query
                FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid
                WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY s.total_exec_time DESC LIMIT %s
                """,
                [limit],
            )
            rows = cursor.fetchall()
    except errors.ObjectNotInPrerequisiteState:
        problem = "installed but not loaded (it is missing from shared_preload_libraries)"
        out.write(PG_STAT_STATEMENTS_HOWTO.format(problem=problem) + "\n")
        return False
    _table(
        out,
        ["calls", "total ms", "mean ms", "rows", "role", "statement"],
        [(*row[:5], _one_line(row[5] or "")) for row in rows],
    )
    return True


def write_report(conn: psycopg.Connection, out: TextIOBase, *, limit: int = 15) -> None:
    """The whole report, read in one connection; every section is shown even where
    pg_stat_statements is not available."""
    cursor = conn.cursor()
    cursor.execute("SELECT current_database()")
    database = one_row(cursor)[0]
    role, sees_all = role_privileges(cursor)
    out.write(f"Database metrics of {database}, as role {role}.\n")
    if not sees_all:
        out.write(
            f"Note: {role} is neither a superuser nor a member of pg_read_all_stats, so "
            "PostgreSQL hides other roles' statement text (shown as <insufficient "
            "privilege>) and their sessions' state; timings and counts are complete. "
            f"GRANT pg_monitor TO {role}; or set DATABASE_METRICS_URL to a role that has it.\n"
        )
    write_sizes(cursor, out, limit)
    write_cache_hit_ratio(cursor, out)
    write_connections(cursor, out, sees_all)
    write_dead_tuples(cursor, out, limit)
    write_top_statements(conn, out, limit)
