"""Readiness to distribute by tenant (docs/operations.md): the catalog's rules and Citus's plan.

A Citus cluster co-locates a tenant's rows on one node when every tenant table is
distributed by `tenant_id`. It then requires that every primary key and unique
constraint of a distributed table includes `tenant_id`, and that every foreign key
between distributed tables does too; the global tables (users, tenants, shared
templates, Django's own) become reference tables, copied to every node.

Everything here reads the catalog (pg_class, pg_attribute, pg_index, pg_constraint),
not a list of our models, so a new table is judged the day it is created:
tests/core/test_distribution.py fails on any problem `distribution_problems` finds, and
`manage.py citus_plan` prints the statements of `citus_plan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import TopologicalSorter

from core.db.distributed import DISTRIBUTION_COLUMN, distribute_sql, widen_primary_key_sql

# Tables without a NOT NULL tenant_id, and where each goes in a Citus cluster. A table
# found in the catalog that is neither a tenant table nor listed here fails the test.
REFERENCE_TABLES = {
    "tenants": "every tenant table's tenant_id points here",
    "users": "memberships, authors and reviewers point here",
    "project_templates": "shared templates (tenant_id NULL) next to a tenant's own",
    "auth_group": "Django's permissions, referenced by users",
    "auth_group_permissions": "Django's permissions",
    "auth_permission": "Django's permissions",
    "django_content_type": "referenced by permissions and the admin log",
    "django_admin_log": "the admin's history; references users and content types",
}
# Read and written only by the coordinator's own processes, never joined with tenant rows.
COORDINATOR_TABLES = {
    "django_migrations": "the migration history, written by migrate on the coordinator",
    "django_session": "sessions, looked up by their key alone",
    "axes_accessattempt": "the admin login lockout",
    "axes_accessattemptexpiration": "the admin login lockout",
    "axes_accessfailurelog": "the admin login lockout",
    "axes_accesslog": "the admin login lockout",
    "audit_events_global": "the audit trail of users, tenants and shared templates",
    "erasure_receipts": "proof of each erasure, outliving the tenant erased; written by the "
    "operator's commands on the coordinator",
    # The worker's queue (tenancy.jobs): a job names its tenant in its arguments; the
    # queue's functions, triggers and LISTEN/NOTIFY live on the coordinator, where every
    # job is deferred and fetched. Their keys point only at each other.
    "procrastinate_jobs": "the worker's queue: its jobs",
    "procrastinate_events": "the worker's queue: each job's history",
    "procrastinate_periodic_defers": "the worker's queue: periodic jobs already deferred",
    "procrastinate_workers": "the worker's queue: running workers and their heartbeats",
}
# Coordinator tables that the triggers of reference tables may read and write: the
# global audit trail (core.db.audit). Citus runs a reference table's trigger on every
# node's copy; the trigger function records only where the table exists (the
# coordinator, whose copy every write reaches), and does nothing on the workers.
AUDITED_FROM_REFERENCE_TRIGGERS = {"audit_events_global"}
GLOBAL_TABLES = {**REFERENCE_TABLES, **COORDINATOR_TABLES}


@dataclass
class Table:
    name: str
    tenant_column: int | None  # attnum of a NOT NULL tenant_id, None for a global table
    primary_key: list[str] = field(default_factory=list)
    unique_keys: dict[str, list[str]] = field(default_factory=dict)  # name -> columns
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    # The functions of its triggers: name -> source (pg_proc.prosrc).
    trigger_functions: dict[str, str] = field(default_factory=dict)


# pg_constraint's action codes (confdeltype, confupdtype).
NO_ACTION, RESTRICT, CASCADE, SET_NULL, SET_DEFAULT = "a", "r", "c", "n", "d"
_ACTION_NAMES = {
    NO_ACTION: "NO ACTION",
    RESTRICT: "RESTRICT",
    CASCADE: "CASCADE",
    SET_NULL: "SET NULL",
    SET_DEFAULT: "SET DEFAULT",
}


@dataclass
class ForeignKey:
    name: str
    columns: list[str]
    target: str
    target_columns: list[str]
    on_delete: str = NO_ACTION
    on_update: str = NO_ACTION


_TABLES_SQL = """
SELECT c.oid, c.relname,
    (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %s
     AND a.attnotnull AND NOT a.attisdropped)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""
# Unique indexes, whether behind a constraint or not: Citus refuses both kinds.
_UNIQUE_SQL = """
SELECT i.indrelid, ic.relname, i.indisprimary,
    array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k (attnum, n)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indisunique AND i.indrelid = ANY (%s)
"""
_FOREIGN_KEYS_SQL = """
SELECT con.conrelid, con.conname, con.confrelid::regclass::text,
    array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k (attnum, n)
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.n),
    array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k (attnum, n)
          JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.n),
    con.confdeltype, con.confupdtype
FROM pg_constraint con
WHERE con.contype = 'f' AND con.conrelid = ANY (%s)
    -- a key referencing a partitioned table has a clone per partition: count it once
    AND con.conparentid = 0
"""
# The functions of the user triggers (not the foreign keys' own); a partition's clone of
# its parent's trigger runs the same function.
_TRIGGER_FUNCTIONS_SQL = """
SELECT t.tgrelid, p.proname, p.prosrc
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgrelid = ANY (%s)
"""


def read_tables(cursor) -> dict[str, Table]:
    """Every table of the public schema (partitions fold into their parent)."""
    cursor.execute(_TABLES_SQL, [DISTRIBUTION_COLUMN])
    by_oid = {oid: Table(name, attnum) for oid, name, attnum in cursor.fetchall()}
    oids = list(by_oid)
    cursor.execute(_UNIQUE_SQL, [oids])
    for oid, name, primary, columns in cursor.fetchall():
        if primary:
            by_oid[oid].primary_key = columns
        else:
            by_oid[oid].unique_keys[name] = columns
    cursor.execute(_FOREIGN_KEYS_SQL, [oids])
    for oid, name, target, columns, target_columns, on_delete, on_update in cursor.fetchall():
        by_oid[oid].foreign_keys.append(
            ForeignKey(name, columns, target, target_columns, on_delete, on_update)
        )
    cursor.execute(_TRIGGER_FUNCTIONS_SQL, [oids])
    for oid, name, source in cursor.fetchall():
        by_oid[oid].trigger_functions[name] = source
    return {table.name: table for table in by_oid.values()}


def distribution_problems(tables: dict[str, Table]) -> list[str]:
    """What would stop distributing every tenant table by tenant_id; empty when ready.

    The primary key on `id` alone is the one key allowed without tenant_id: citus_plan
    widens it to (tenant_id, id) just before distributing. Widening it now would build
    a second index on every tenant table that is redundant on one server (ids are
    UUIDv7, unique by themselves); the tables that other tables reference already have
    the unique (tenant_id, id) their composite foreign keys need.
    """
    problems = []
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    for name in sorted(set(tables) - tenant - set(GLOBAL_TABLES)):
        problems.append(f"{name}: no NOT NULL tenant_id and not in GLOBAL_TABLES")
    for name in sorted(set(GLOBAL_TABLES) - set(tables)):
        problems.append(f"{name}: in GLOBAL_TABLES but not in the database")
    for name in sorted(tenant & set(GLOBAL_TABLES)):
        problems.append(f"{name}: has a NOT NULL tenant_id but is listed in GLOBAL_TABLES")
    for name in sorted(tenant):
        table = tables[name]
        if table.primary_key not in (["id"], [DISTRIBUTION_COLUMN, "id"]):
            problems.append(
                f"{name}: primary key ({', '.join(table.primary_key)}) is neither (id) "
                "nor (tenant_id, id)"
            )
        for key, columns in sorted(table.unique_keys.items()):
            if DISTRIBUTION_COLUMN not in columns:
                problems.append(f"{name}: unique {key} ({', '.join(columns)}) lacks tenant_id")
        for fk in table.foreign_keys:
            if fk.target in tenant and not _pairs_tenant(fk):
                problems.append(
                    f"{name}: foreign key {fk.name} ({', '.join(fk.columns)}) -> {fk.target} "
                    "does not pair tenant_id with tenant_id"
                )
            if DISTRIBUTION_COLUMN in fk.columns:
                problems += _actions_refused_on_tenant_id(name, fk)
            if fk.target in COORDINATOR_TABLES:
                problems.append(
                    f"{name}: foreign key {fk.name} to the coordinator table {fk.target}"
                )
    for name in sorted(set(tables) - tenant):
        for fk in tables[name].foreign_keys:
            if fk.target in tenant:
                problems.append(f"{name}: global table with foreign key {fk.name} to {fk.target}")
            elif name in REFERENCE_TABLES and fk.target in COORDINATOR_TABLES:
                # Citus makes the target a local table it manages, and then accepts only
                # keys that change nothing in it.
                actions = {fk.on_delete, fk.on_update} - {NO_ACTION, RESTRICT}
                if actions:
                    problems.append(
                        f"{name}: reference table with foreign key {fk.name} to the "
                        f"coordinator table {fk.target} "
                        f"ON DELETE {_ACTION_NAMES[fk.on_delete]} "
                        f"ON UPDATE {_ACTION_NAMES[fk.on_update]}: only NO ACTION or RESTRICT"
                    )
    for name in sorted(tenant | (set(tables) & set(REFERENCE_TABLES))):
        for function, source in sorted(tables[name].trigger_functions.items()):
            problems += [
                f"{name}: trigger function {function} {finding}"
                for finding in trigger_reads_outside_tenant(source, tables)
            ]
    return problems


def _actions_refused_on_tenant_id(name: str, fk: ForeignKey) -> list[str]:
    """Citus never lets a key change its distribution column: on a key that holds
    tenant_id it refuses ON DELETE SET NULL / SET DEFAULT (even PostgreSQL's
    `SET NULL (column)`, which would leave tenant_id alone) and ON UPDATE SET NULL /
    SET DEFAULT / CASCADE."""
    problems = []
    if fk.on_delete in (SET_NULL, SET_DEFAULT):
        problems.append(
            f"{name}: foreign key {fk.name} holds tenant_id and is ON DELETE "
            f"{_ACTION_NAMES[fk.on_delete]} (AddTenantForeignKey does SET NULL by a trigger)"
        )
    if fk.on_update in (SET_NULL, SET_DEFAULT, CASCADE):
        problems.append(
            f"{name}: foreign key {fk.name} holds tenant_id and is ON UPDATE "
            f"{_ACTION_NAMES[fk.on_update]}"
        )
    return problems


# What trigger_reads_outside_tenant reads in a function's source.
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NOT_AN_ALIAS = (
    "where|set|on|from|into|join|inner|left|right|full|cross|natural|using|values|select"
    "|default|group|order|limit|offset|for|returning|union|except|intersect|window|having"
)
_TABLE_REFERENCE = re.compile(
    r"\b(from|join|update|into)\s+(?:only\s+)?(?:public\.)?(\w+)"
    rf"(?:\s+(?:as\s+)?(?!(?:{_NOT_AN_ALIAS})\b)(\w+))?"
)
_TENANT_OF_ROW = re.compile(r"\b(\w+)\.tenant_id\s*=\s*(\w+)\.tenant_id\b")
_UNQUALIFIED_TENANT_OF_ROW = re.compile(
    r"(?<![.\w])tenant_id\s*=\s*(?:new|old)\.tenant_id\b"
    r"|\b(?:new|old)\.tenant_id\s*=\s*tenant_id\b(?!\s*\.)"
)
_ROW_TENANT = re.compile(r"\b(?:new|old)\.tenant_id\b")


def trigger_reads_outside_tenant(source: str, tables: dict[str, Table]) -> list[str]:
    """What a trigger function's statements read or write beyond the triggering row's
    tenant, from its source text; empty when nothing.

    On a Citus cluster a trigger runs on the shard that holds the row, and there it may
    only query the co-located shards of the same tenant (or reference tables): any
    other query fails with "cannot execute a distributed query from a query on a
    shard". The rule, statement by statement (the source split on `;`, string
    literals and double quotes removed, case folded):

    - every tenant table it names after FROM, JOIN, UPDATE or INTO, under an alias or
      its own name, is pinned to the row's tenant: `alias.tenant_id = NEW.tenant_id`
      (or OLD, either side), an unqualified `tenant_id = NEW.tenant_id` when it has no
      alias, or `alias.tenant_id = other.tenant_id` with `other` pinned;
    - an INSERT INTO a tenant table is pinned when the statement names NEW.tenant_id
      or OLD.tenant_id (the row it writes is the tenant's);
    - a coordinator table is never readable there.

    Its limits: a text rule, not a parser. It does not follow the functions the
    trigger calls nor EXECUTE of dynamic SQL; it takes a tenant comparison anywhere in
    the statement (an OR branch too) as a filter; a name it cannot place (a CTE named
    like a table) counts as that table. A miss is then found by the cluster tests.
    """
    text = _STRING_LITERAL.sub("''", source).replace('"', "").lower()
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    findings = []
    for statement in text.split(";"):
        statement = " ".join(statement.split())
        references = []
        for keyword, table, alias in _TABLE_REFERENCE.findall(statement):
            if table in AUDITED_FROM_REFERENCE_TRIGGERS:
                continue
            if table in COORDINATOR_TABLES:
                findings.append(f"reads the coordinator table {table}")
            elif table in tenant:
                references.append((keyword, table, alias))
        if not references:
            continue
        pinned = {"new", "old"}
        links = _TENANT_OF_ROW.findall(statement)
        while True:
            more = {a for a, b in links if b in pinned} | {b for a, b in links if a in pinned}
            if more <= pinned:
                break
            pinned |= more
        unqualified = bool(_UNQUALIFIED_TENANT_OF_ROW.search(statement))
        for keyword, table, alias in references:
            if alias in pinned or (not alias and (table in pinned or unqualified)):
                continue
            if keyword == "into" and _ROW_TENANT.search(statement):
                continue
            findings.append(f"reads {table} without tenant_id = NEW/OLD.tenant_id")
    return sorted(set(findings))


def _pairs_tenant(fk: ForeignKey) -> bool:
    pairs = set(zip(fk.columns, fk.target_columns, strict=True))
    return (DISTRIBUTION_COLUMN, DISTRIBUTION_COLUMN) in pairs


def distribution_order(tables: dict[str, Table]) -> list[str]:
    """The tenant tables, each after the tenant tables its foreign keys point to."""
    tenant = {name for name, table in tables.items() if table.tenant_column is not None}
    graph = {
        name: {fk.target for fk in tables[name].foreign_keys if fk.target in tenant} - {name}
        for name in sorted(tenant)
    }
    return list(TopologicalSorter(graph).static_order())


def citus_plan(tables: dict[str, Table]) -> list[str]:
    """The statements that distribute this schema on a Citus coordinator, in order."""
    statements = [f"SELECT create_reference_table('{name}');" for name in _reference_order(tables)]
    order = distribution_order(tables)
    for name in order:
        table = tables[name]
        if table.primary_key != [DISTRIBUTION_COLUMN, "id"]:
            statements.append(widen_primary_key_sql(name))
    first = order[0]
    for name in order:
        statements.append(distribute_sql(name, None if name == first else first))
    return statements


def _reference_order(tables: dict[str, Table]) -> list[str]:
    graph = {
        name: {fk.target for fk in tables[name].foreign_keys if fk.target in REFERENCE_TABLES}
        - {name}
        for name in sorted(REFERENCE_TABLES)
        if name in tables
    }
    return list(TopologicalSorter(graph).static_order())
