"""Where a canary string still is: every text, varchar, jsonb and array column of every
table (read as the owner under the system bypass, so row-level security hides nothing),
every file under the storages, and chunk_search in every mode."""

from __future__ import annotations

import zipfile
from pathlib import Path

from django.conf import settings
from django.db import connection
from psycopg import sql

from documents.search import SEARCH_MODES, chunk_search
from tenancy.context import system_context

_COLUMNS_SQL = """
SELECT c.relname::text, a.attname::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND (a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'jsonb'::regtype, 'json'::regtype)
       OR a.atttypid IN (SELECT typarray FROM pg_type WHERE typname IN ('text', 'varchar')))
ORDER BY 1, 2
"""


def rows_with(canary: str) -> list[str]:
    """ "table.column" of every column holding the canary in some row."""
    found = []
    with system_context("canary scan"), connection.cursor() as cursor:
        cursor.execute(_COLUMNS_SQL)
        for table, column in cursor.fetchall():
            cursor.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE strpos({}::text, %s) > 0").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                [canary],
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def _contents(path: Path) -> bytes:
    """A file's bytes; an archive's (an export) with each member's bytes after them."""
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data += b"".join(archive.read(member) for member in archive.namelist())
    return data


def files_with(canary: str) -> list[str]:
    """The files under the storages' folders whose bytes (or archived bytes) hold the canary."""
    needle = canary.encode()
    roots = {
        Path(options["OPTIONS"]["location"])
        for options in settings.STORAGES.values()
        if "location" in options.get("OPTIONS", {})
    }
    return sorted(
        str(path)
        for root in roots
        if root.exists()
        for path in root.rglob("*")
        if path.is_file() and needle in _contents(path)
    )


def searches_with(canary: str, tenant) -> list[str]:
    """The modes of chunk_search whose results hold the canary."""
    return [
        mode
        for mode in SEARCH_MODES
        if any(
            canary in result.content
            for result in chunk_search(tenant=tenant, query=canary, mode=mode)
        )
    ]


def find_canary(canary: str, tenant) -> list[str]:
    return (
        rows_with(canary)
        + files_with(canary)
        + [f"chunk_search:{mode}" for mode in searches_with(canary, tenant)]
    )
