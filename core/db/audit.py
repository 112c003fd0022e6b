"""The audit trail's SQL (docs/security.md, "Audit trail"): one builder for every trigger.

Every insert, update and delete of an audited table writes one event in the same
transaction, from a row trigger (so bulk writes, `QuerySet.update()` and raw SQL are
recorded too):

- tenant tables write to `audit_events` (distributed with them on Citus: the trigger
  only touches its own row's tenant, which is what a trigger on a shard may do);
- the global tables (users, tenants) write to `audit_events_global`.

Each tenant's events (and the global events) form a hash chain, sealed after commit: the
trigger writes an event with `seq`, `prev_hash` and `hash` NULL (unsealed), taking no
lock and reading no chain head, so writers of one tenant never wait for each other.
tenancy.audit.audit_seal (`manage.py audit_seal`, as the owner) later gives the committed
unsealed events their place: seq counts from 1, `prev_hash` is the previous event's
`hash`, `hash` the SHA-256 of `prev_hash` and the canonical content, computed in Python
(tenancy.audit, the one place that defines them). The append-only trigger refuses every
UPDATE and DELETE but that one seal of an unsealed event (`seal_allowed_sql`) and the
offboarding's delete of an erased tenant's events (`tenant_erasure_delete_allowed_sql`).

What an event records in `changes`: for an insert {"new": {column: value}}, for a delete
{"old": {...}}, for an update {"old": {...}, "new": {...}} of the changed columns only
(an update that changes nothing but updated_at records nothing). A value whose text is
longer than LONG_VALUE_CHARS, and every value of a `hashed` column (vectors), is
replaced by "sha256:<hex>" of its text. Columns listed as `ignored` (generated ones) are
left out.

The trigger also stores `changes_sha256`, the SHA-256 of the changes' jsonb text
(CHANGES_SHA256_SQL): the seal hashes that digest, not the values, so an erasure can
replace `changes` with REDACTED_CHANGES and set `redacted_at` (redaction_allowed_sql)
and the chain still verifies (tenancy.audit.redact_events).

Retention cuts a tenant chain's oldest events (retention.services): it first records
the chain's anchor in `audit_chain_anchors` (the last removed event's seq and hash),
then deletes sealed events at or below it, the one DELETE the append-only trigger lets
through (anchored_delete_allowed_sql). audit_verify starts from the anchor.

Who: `actor_user_id` from app.user_id, `actor` from app.actor (`admin`, `service`,
`job:<name>`, `api:<key id>`; 'service' when unset) and `request_id` from
app.request_id, the transaction's settings of tenancy.context.

The event tables are named with their schema: an audited write made by an access
trigger (SECURITY DEFINER, with its own search_path) fires these triggers under that path.

Free of app imports, like core.db.operations, which declares these with `AuditTable`.
"""

from __future__ import annotations

TENANT_EVENTS = "audit_events"
GLOBAL_EVENTS = "audit_events_global"
TENANT_FUNCTION = "audit_tenant_row"
GLOBAL_FUNCTION = "audit_global_row"
REFUSE_FUNCTION = "audit_refuse_change"
# The trigger's name on every audited table (the catalog-driven test looks for it).
AUDIT_TRIGGER = "audit_row"
# On audit_events and audit_events_global: no UPDATE or DELETE, by any role.
APPEND_ONLY_TRIGGER = "audit_append_only"
# The audited tables without tenant_id (a shared template has none): the global chain.
GLOBAL_AUDITED_TABLES = ("users", "tenants", "project_templates")
# Tenant tables whose writes are not recorded, and why (docs/security.md, "The search
# log"). search_queries is itself the record of a read: an event per search would double
# every search's writes and copy the query text into the append-only chain, where an
# erasure can only redact it. Its rows cannot be rewritten either: a trigger allows only
# an erasure's emptying of the text and the users key's SET NULL.
# execution_usage_daily is sums of agent_executions kept by its triggers: every write it
# follows is recorded already on agent_executions, and an event per change of a sum
# would double each execution write's events (docs/architecture.md, "Usage rollup").
UNAUDITED_TABLES = {
    "search_queries": "a log of reads, itself the record",
    "execution_usage_daily": "sums derived from agent_executions, which are audited",
}
LONG_VALUE_CHARS = 1024
DEFAULT_ACTOR = "service"
ACTIONS = ("insert", "update", "delete")
# Columns the access triggers keep (core.db.operations AddRowAccess and AddAccessGrants),
# never recorded: they are derived from the restrictions and grants, which are recorded
# themselves, and a grant that reaches thousands of rows below records one event.
DERIVED_COLUMNS = ("restricted_to", "access_user_ids")
# The columns a seal writes; every other column of an event is fixed at its insert,
# but for the two a redaction writes.
SEAL_COLUMNS = ("seq", "prev_hash", "hash")
REDACTION_COLUMNS = ("changes", "redacted_at")
# What a redacted event's `changes` become (jsonb's own text of it).
REDACTED_CHANGES = '{"redacted": true}'
# Each tenant chain's cut: the last event retention removed (its seq and hash).
ANCHORS = "audit_chain_anchors"
# Set (transaction-local) by the offboarding of a tenant (erasure.services.erase_tenant)
# to the id of the tenant it erases: the one tenant whose events may then be deleted.
ERASING_TENANT_SETTING = "app.erasing_tenant_id"


def changes_sha256_sql(changes: str) -> str:
    """The SQL of a changes value's digest: hex SHA-256 of its jsonb text in UTF-8, the
    text psycopg reads as `changes::text` (tenancy.audit.changes_sha256, the same in
    Python)."""
    return f"encode(sha256(convert_to({changes}::text, 'UTF8')), 'hex')"


def _value_sql(key: str, value: str) -> str:
    """A column's value as recorded: hashed when long or of a `hashed` column."""
    return (
        f"CASE WHEN {value} IS NOT NULL AND {value} <> 'null'::jsonb AND ({key} = ANY (hashed) "
        f"OR length({value}::text) > {LONG_VALUE_CHARS}) "
        f"THEN to_jsonb('sha256:' || encode(sha256(convert_to("
        f"coalesce({value} #>> '{{}}', {value}::text), 'UTF8')), 'hex')) ELSE {value} END"
    )


# The body shared by both trigger functions up to the changes: TG_ARGV[0] is the table's
# name (a partition or a Citus shard has its own TG_TABLE_NAME), [1] the ignored columns,
# [2] the hashed ones, comma-separated.
_CHANGES = f"""
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, {_value_sql("n.key", "o.value")}),
               jsonb_object_agg(n.key, {_value_sql("n.key", "n.value")})
          INTO old_values, new_values
          FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value AND n.key <> ALL (ignored)
           AND n.key <> 'updated_at';
        IF new_values IS NULL THEN
            RETURN NULL;
        END IF;
        changes := jsonb_build_object('old', old_values, 'new', new_values);
    ELSIF TG_OP = 'INSERT' THEN
        SELECT jsonb_object_agg(n.key, {_value_sql("n.key", "n.value")}) INTO new_values
          FROM jsonb_each(to_jsonb(NEW)) n WHERE n.key <> ALL (ignored);
        changes := jsonb_build_object('new', new_values);
    ELSE
        SELECT jsonb_object_agg(o.key, {_value_sql("o.key", "o.value")}) INTO old_values
          FROM jsonb_each(to_jsonb(OLD)) o WHERE o.key <> ALL (ignored);
        changes := jsonb_build_object('old', old_values);
    END IF;
    event.id := uuidv7();
    event.table_name := TG_ARGV[0];
    event.action := lower(TG_OP);
    event.actor_user_id := nullif(current_setting('app.user_id', true), '')::uuid;
    event.actor := coalesce(nullif(current_setting('app.actor', true), ''), '{DEFAULT_ACTOR}');
    event.request_id := coalesce(current_setting('app.request_id', true), '');
    event.changes := changes;
    event.changes_sha256 := {changes_sha256_sql("changes")};
    event.created_at := now();
"""

_DECLARE = f"""
DECLARE
    ignored text[] := string_to_array(coalesce(TG_ARGV[1], ''), ',')
        || '{{{",".join(DERIVED_COLUMNS)}}}'::text[];
    hashed text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
    old_values jsonb;
    new_values jsonb;
    changes jsonb;
"""


def _tenant_branch(row: str) -> str:
    # Written out for OLD and for NEW: every statement names its row's tenant_id, the
    # form core.ops.distribution accepts for a trigger on a Citus shard. seq, prev_hash
    # and hash stay NULL: the event is unsealed until audit_seal.
    return f"""
        event.tenant_id := {row}.tenant_id;
        event.row_id := {row}.id;
        -- The WHERE is always true: it names the row's tenant, as the distribution rules
        -- want of a trigger's insert into a tenant table.
        INSERT INTO public.{TENANT_EVENTS} SELECT event.*
         WHERE event.tenant_id = {row}.tenant_id;"""


def tenant_function_sql() -> str:
    """audit_tenant_row(): the AFTER row trigger function of every tenant table."""
    return f"""
CREATE OR REPLACE FUNCTION {TENANT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $fn$
{_DECLARE}
    event public.{TENANT_EVENTS};
BEGIN
{_CHANGES}
    IF TG_OP = 'DELETE' THEN
{_tenant_branch("OLD")}
    ELSE
{_tenant_branch("NEW")}
    END IF;
    RETURN NULL;
END
$fn$"""


def global_function_sql() -> str:
    """audit_global_row(): the AFTER row trigger function of users and tenants.

    On a Citus cluster these are reference tables: Citus runs the trigger on every
    node's copy, and audit_events_global lives on the coordinator only. Where the
    table is absent (a worker) the trigger records nothing; the coordinator's copy
    records the event once.
    """
    return f"""
CREATE OR REPLACE FUNCTION {GLOBAL_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $fn$
{_DECLARE}
    event record;
BEGIN
    IF to_regclass('public.{GLOBAL_EVENTS}') IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO event FROM public.{GLOBAL_EVENTS} WHERE false;
{_CHANGES}
    IF TG_OP = 'DELETE' THEN
        event.row_id := OLD.id;
    ELSE
        event.row_id := NEW.id;
    END IF;
    INSERT INTO public.{GLOBAL_EVENTS} (id, table_name, row_id, action, actor_user_id, actor,
        request_id, changes, changes_sha256, created_at)
    VALUES (event.id, event.table_name, event.row_id, event.action, event.actor_user_id,
        event.actor, event.request_id, event.changes, event.changes_sha256, event.created_at);
    RETURN NULL;
END
$fn$"""


def seal_allowed_sql() -> str:
    """The one change the append-only trigger lets through: a seal. The event was
    unsealed (OLD.hash NULL), the seal gives seq and hash (prev_hash is NULL for the
    first event of a chain only), and no other column changes."""
    sealed = "'{" + ",".join(SEAL_COLUMNS) + "}'::text[]"
    return (
        "TG_OP = 'UPDATE' AND OLD.hash IS NULL AND NEW.hash IS NOT NULL "
        "AND NEW.seq IS NOT NULL AND (NEW.prev_hash IS NULL) = (NEW.seq = 1) "
        f"AND to_jsonb(NEW) - {sealed} = to_jsonb(OLD) - {sealed}"
    )


def redaction_allowed_sql() -> str:
    """The change a redaction makes (tenancy.audit.redact_events): an event not yet
    redacted gets REDACTED_CHANGES and redacted_at, and no other column changes, so its
    changes_sha256 and, sealed or not, its place in the chain stay."""
    kept = "'{" + ",".join(REDACTION_COLUMNS) + "}'::text[]"
    return (
        "TG_OP = 'UPDATE' AND OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL "
        f"AND NEW.changes = '{REDACTED_CHANGES}'::jsonb "
        f"AND to_jsonb(NEW) - {kept} = to_jsonb(OLD) - {kept}"
    )


def anchored_delete_allowed_sql() -> str:
    """The one DELETE let through, of a tenant event: sealed, and at or below its chain's
    anchor (retention records the anchor first). Read under row-level security: only
    the owner with the system bypass sees an anchor, and only it has DELETE. The
    anchor is read for the row's own tenant, as a trigger on a Citus shard must."""
    return (
        "OLD.hash IS NOT NULL AND EXISTS (SELECT 1 FROM public."
        f"{ANCHORS} a WHERE a.tenant_id = OLD.tenant_id AND a.seq >= OLD.seq)"
    )


def tenant_erasure_delete_allowed_sql() -> str:
    """The one DELETE let through, of a tenant event (audit_events only): by the offboarding
    of its tenant, which sets ERASING_TENANT_SETTING to that tenant's id in its own
    transaction, after that transaction deleted the tenant's row, as the role that owns
    the table (the only role granted DELETE; the runtime role never is). A tenant that
    still exists keeps its chain whole; a stray setting cannot reach another tenant's.
    The tenants row is read for the event's own tenant (a reference table, on every
    Citus node), the owner from the catalog of the table (or shard) the trigger fires on.
    """
    return (
        f"OLD.tenant_id::text = current_setting('{ERASING_TENANT_SETTING}', true) "
        "AND NOT EXISTS (SELECT 1 FROM public.tenants t WHERE t.id = OLD.tenant_id) "
        "AND current_user = (SELECT pg_get_userbyid(c.relowner) FROM pg_class c "
        "WHERE c.oid = TG_RELID)"
    )


def refuse_function_sql() -> str:
    """The BEFORE UPDATE OR DELETE trigger function of the event tables: refuses all but
    the seal of an unsealed event, the redaction of an event, retention's delete of a
    tenant event below its chain's anchor, and the offboarding's delete of an erased
    tenant's events (deletes only the owner, who has UPDATE and DELETE, can try). The
    exceptions read the event tables' own columns, the deletes' OLD.tenant_id too, which
    audit_events_global has not: tested for those tables alone (erasure_receipts shares
    the function and has no exception)."""
    return f"""
CREATE OR REPLACE FUNCTION {REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_ARGV[0] IN ('{TENANT_EVENTS}', '{GLOBAL_EVENTS}') THEN
        IF TG_OP = 'DELETE' THEN
            IF TG_ARGV[0] = '{TENANT_EVENTS}' THEN
                IF ({anchored_delete_allowed_sql()})
                   OR ({tenant_erasure_delete_allowed_sql()}) THEN
                    RETURN OLD;
                END IF;
            END IF;
        ELSIF ({seal_allowed_sql()}) OR ({redaction_allowed_sql()}) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'Only the seal of an unsealed event (seq, prev_hash, hash), the '
                       'redaction of its changes, the delete of a sealed event below its '
                       'chain''s anchor and the delete of an erased tenant''s events by its '
                       'offboarding are allowed.';
END
$fn$"""


def functions_sql() -> list[str]:
    return [tenant_function_sql(), global_function_sql(), refuse_function_sql()]


def drop_functions_sql() -> list[str]:
    return [
        f"DROP FUNCTION IF EXISTS {name}()"
        for name in (TENANT_FUNCTION, GLOBAL_FUNCTION, REFUSE_FUNCTION)
    ]


def audit_trigger_sql(
    quote, table: str, *, tenant: bool, ignored: tuple[str, ...], hashed: tuple[str, ...]
) -> list[str]:
    function = TENANT_FUNCTION if tenant else GLOBAL_FUNCTION
    arguments = ", ".join(f"'{value}'" for value in (table, ",".join(ignored), ",".join(hashed)))
    return [
        f"DROP TRIGGER IF EXISTS {AUDIT_TRIGGER} ON {quote(table)}",
        f"CREATE TRIGGER {AUDIT_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {quote(table)} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}({arguments})",
    ]


def append_only_sql(quote, table: str) -> list[str]:
    """UPDATE and DELETE refused by a trigger (for every role but one that turns triggers
    off: a superuser). TRUNCATE is not granted to the runtime role at all
    (core.db.roles), and the owner keeps it for test flushes and the offboarding."""
    return [
        f"DROP TRIGGER IF EXISTS {APPEND_ONLY_TRIGGER} ON {quote(table)}",
        f"CREATE TRIGGER {APPEND_ONLY_TRIGGER} BEFORE UPDATE OR DELETE ON {quote(table)} "
        f"FOR EACH ROW EXECUTE FUNCTION {REFUSE_FUNCTION}('{table}')",
    ]
