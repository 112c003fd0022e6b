"""A fingerprint of the database schema, read from the catalogs: what migrations made.

Every object a migration can create or change, by name and definition, never by oid:
tables and their row-level security flags and storage parameters, columns in order
(and their storage where it is not their type's), constraints (with their
definition and validity), indexes (with validity), triggers, policies, functions,
sequences, types, extensions, comments and the privileges of every role. Role names
are replaced by what they stand for (`<owner>`, `<runtime>`), so the fingerprint of
the embedded server and of a DATABASE_URL server with other role names compare equal.

tests/core/test_schema_fingerprint.py compares the test database (built by `migrate`)
with tests/core/schema_fingerprint.json, the fingerprint of the schema the migrations
produced when that file was written: rewriting migrations must leave it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.db import connection
from django.db.migrations.loader import MigrationLoader

from core.db.connections import owner_role_name, runtime_role_name

GOLDEN = Path(__file__).parent / "core" / "schema_fingerprint.json"
OUR_APPS = ("core", "tenancy", "documents", "agents", "exports", "retention", "erasure")

# `role(oid)` below stands for the role placeholder; PUBLIC (oid 0) keeps its name.
_ROLE = """CASE WHEN {oid} = 0 THEN 'PUBLIC'
    WHEN pg_get_userbyid({oid}) = %(owner)s THEN '<owner>'
    WHEN pg_get_userbyid({oid}) = %(runtime)s THEN '<runtime>'
    ELSE pg_get_userbyid({oid}) END"""


def _role(oid: str) -> str:
    return _ROLE.format(oid=oid)


QUERIES = {
    "tables": f"""
        SELECT relname, relkind, relpersistence, relrowsecurity, relforcerowsecurity,
               reloptions::text, {_role("relowner")}
        FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f')
    """,
    # Position among the live columns, so a dropped column's gap is no difference.
    "columns": """
        SELECT c.relname,
               row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity,
               CASE WHEN a.attcollation <> t.typcollation
                    THEN a.attcollation::regcollation::text END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    # A column stored otherwise than its type says (ALTER COLUMN ... SET STORAGE).
    "column_storage": """
        SELECT c.relname, a.attname, a.attstorage
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'm')
          AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage <> t.typstorage
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid),
               convalidated, condeferrable, condeferred, connoinherit
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conparentid = 0
    """,
    "indexes": """
        SELECT i.tablename, i.indexname, i.indexdef, x.indisvalid, x.indisready
        FROM pg_indexes i
        JOIN pg_index x ON x.indexrelid = format('%%I.%%I', i.schemaname, i.indexname)::regclass
        WHERE i.schemaname = 'public'
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled
        FROM pg_trigger WHERE NOT tgisinternal
    """,
    "policies": f"""
        SELECT c.relname, p.polname, p.polpermissive, p.polcmd,
               ARRAY(SELECT {_role("r")} FROM unnest(p.polroles) AS r ORDER BY 1)::text,
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = 'public'::regnamespace
    """,
    # Our functions, not those an extension installed (their definition is the extension's).
    "functions": f"""
        SELECT p.proname, pg_get_functiondef(p.oid), {_role("p.proowner")}
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    """,
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle
        FROM pg_sequences WHERE schemaname = 'public'
    """,
    "types": """
        SELECT t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
               ARRAY(SELECT enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                     ORDER BY e.enumsortorder)::text
        FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('d', 'e', 'r')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
    """,
    "extensions": "SELECT extname FROM pg_extension",
    "comments": """
        SELECT c.relname, d.objsubid, d.description
        FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
        WHERE d.classoid = 'pg_class'::regclass AND c.relnamespace = 'public'::regnamespace
    """,
    "table_grants": f"""
        SELECT c.relname, {_role("a.grantee")}, a.privilege_type, a.is_grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace
    """,
    "function_grants": f"""
        SELECT p.proname, {_role("a.grantee")}, a.privilege_type
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    """,
    "schema_grants": f"""
        SELECT {_role("a.grantee")}, a.privilege_type
        FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'public'
    """,
    "default_privileges": f"""
        SELECT {_role("d.defaclrole")}, d.defaclobjtype, {_role("a.grantee")}, a.privilege_type
        FROM pg_default_acl d, aclexplode(d.defaclacl) a
        WHERE d.defaclnamespace = 'public'::regnamespace
    """,
}


def schema_fingerprint() -> dict[str, list[list]]:
    """Everything a migration creates in this database, sorted, as JSON-ready lists.

    Partitions are left out, with what hangs on them and the foreign-key clones that
    PostgreSQL makes for each (conparentid): which months exist depends on the day the
    migrations ran (tests/agents/test_partitions.py checks that each has them all).
    """
    roles = {"owner": owner_role_name(), "runtime": runtime_role_name()}
    fingerprint = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relispartition")
        partitions = {name for (name,) in cursor.fetchall()}
        for name, sql in QUERIES.items():
            cursor.execute(sql, roles)
            rows = ([*row] for row in cursor.fetchall())
            fingerprint[name] = sorted((row for row in rows if row[0] not in partitions), key=repr)
    return fingerprint


def migration_names() -> list[list[str]]:
    """Our apps' migrations on disk: a database that applied them must find none pending."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return sorted([app, name] for app, name in loader.disk_migrations if app in OUR_APPS)


def write_golden() -> None:
    """One catalog row per line, so a schema change reads as a diff of the rows it changed."""
    parts = {"migrations": migration_names(), **schema_fingerprint()}
    lines = ["{"]
    for index, (name, rows) in enumerate(parts.items()):
        lines.append(f" {json.dumps(name)}: [")
        lines.extend(f"  {json.dumps(row, default=str)}," for row in rows)
        if rows:
            lines[-1] = lines[-1].rstrip(",")
        lines.append(" ]," if index < len(parts) - 1 else " ]")
    GOLDEN.write_text("\n".join([*lines, "}", ""]))


def read_golden() -> dict:
    """{"migrations": [...], "schema": {part: rows}} as the file holds them."""
    parts = json.loads(GOLDEN.read_text())
    return {"migrations": parts.pop("migrations"), "schema": parts}
