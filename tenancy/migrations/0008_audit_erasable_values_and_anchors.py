"""Audit events whose values can be erased, and chains that retention can cut
(docs/security.md, "Redaction" and "Retention of audit events").

- `changes_sha256` (the hex SHA-256 of the changes' jsonb text, written by the trigger
  with the event) and `redacted_at` on both event tables. From here an event's hash
  covers changes_sha256 instead of the changes themselves (tenancy.audit), so
  redact_events can replace the changes with {"redacted": true} and the chain still
  verifies.
- `audit_chain_anchors`: where a tenant chain starts once retention removed its
  oldest events (the last removed event's seq and hash); a tenant table like any other
  (row-level security forced, audited, distributed on Citus).
- The trigger functions (core.db.audit): the writers store changes_sha256; the
  append-only trigger lets a redaction through, and retention's delete of a sealed
  event at or below its chain's anchor.
- The events sealed before: every chain is verified by the old rule (RESEAL below); if
  one is broken the migration refuses, naming the event, and nothing changes.
  Otherwise each event gets its changes_sha256 and every sealed chain is sealed again
  in place under the new rule (same seq, new prev_hash and hash), with the append-only
  trigger off for the migration's transaction. Heads kept elsewhere change: read them
  again from `manage.py audit_verify` afterwards.

Backwards: refused while an event is redacted or a chain has an anchor (the old rule
cannot verify either); otherwise every chain is verified by the new rule and sealed
again by the old one, and the tenancy.0006 functions come back (frozen below).

The two rules are frozen here, as written when this migration was: tenancy.audit keeps
the new one only.
"""

import hashlib
from datetime import UTC, datetime

import core.db.operations
import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from core.db import audit
from django.db import migrations, models

# The functions as tenancy.0006 created them: unsealed events without changes_sha256, the
# seal the only change let through.
SEALED_AFTER_COMMIT_FUNCTIONS = [
    r"""
CREATE OR REPLACE FUNCTION audit_tenant_row() RETURNS trigger LANGUAGE plpgsql AS $fn$

DECLARE
    ignored text[] := string_to_array(coalesce(TG_ARGV[1], ''), ',')
        || '{restricted_to,access_user_ids}'::text[];
    hashed text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
    old_values jsonb;
    new_values jsonb;
    changes jsonb;

    event public.audit_events;
BEGIN

    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, CASE WHEN o.value IS NOT NULL AND o.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(o.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(o.value #>> '{}', o.value::text), 'UTF8')), 'hex')) ELSE o.value END),
               jsonb_object_agg(n.key, CASE WHEN n.value IS NOT NULL AND n.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(n.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(n.value #>> '{}', n.value::text), 'UTF8')), 'hex')) ELSE n.value END)
          INTO old_values, new_values
          FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value AND n.key <> ALL (ignored)
           AND n.key <> 'updated_at';
        IF new_values IS NULL THEN
            RETURN NULL;
        END IF;
        changes := jsonb_build_object('old', old_values, 'new', new_values);
    ELSIF TG_OP = 'INSERT' THEN
        SELECT jsonb_object_agg(n.key, CASE WHEN n.value IS NOT NULL AND n.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(n.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(n.value #>> '{}', n.value::text), 'UTF8')), 'hex')) ELSE n.value END) INTO new_values
          FROM jsonb_each(to_jsonb(NEW)) n WHERE n.key <> ALL (ignored);
        changes := jsonb_build_object('new', new_values);
    ELSE
        SELECT jsonb_object_agg(o.key, CASE WHEN o.value IS NOT NULL AND o.value <> 'null'::jsonb AND (o.key = ANY (hashed) OR length(o.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(o.value #>> '{}', o.value::text), 'UTF8')), 'hex')) ELSE o.value END) INTO old_values
          FROM jsonb_each(to_jsonb(OLD)) o WHERE o.key <> ALL (ignored);
        changes := jsonb_build_object('old', old_values);
    END IF;
    event.id := uuidv7();
    event.table_name := TG_ARGV[0];
    event.action := lower(TG_OP);
    event.actor_user_id := nullif(current_setting('app.user_id', true), '')::uuid;
    event.actor := coalesce(nullif(current_setting('app.actor', true), ''), 'service');
    event.request_id := coalesce(current_setting('app.request_id', true), '');
    event.changes := changes;
    event.created_at := now();

    IF TG_OP = 'DELETE' THEN

        event.tenant_id := OLD.tenant_id;
        event.row_id := OLD.id;
        -- The WHERE is always true: it names the row's tenant, as the distribution rules
        -- want of a trigger's insert into a tenant table.
        INSERT INTO public.audit_events SELECT event.*
         WHERE event.tenant_id = OLD.tenant_id;
    ELSE

        event.tenant_id := NEW.tenant_id;
        event.row_id := NEW.id;
        -- The WHERE is always true: it names the row's tenant, as the distribution rules
        -- want of a trigger's insert into a tenant table.
        INSERT INTO public.audit_events SELECT event.*
         WHERE event.tenant_id = NEW.tenant_id;
    END IF;
    RETURN NULL;
END
$fn$""",
    r"""
CREATE OR REPLACE FUNCTION audit_global_row() RETURNS trigger LANGUAGE plpgsql AS $fn$

DECLARE
    ignored text[] := string_to_array(coalesce(TG_ARGV[1], ''), ',')
        || '{restricted_to,access_user_ids}'::text[];
    hashed text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
    old_values jsonb;
    new_values jsonb;
    changes jsonb;

    event record;
BEGIN
    IF to_regclass('public.audit_events_global') IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO event FROM public.audit_events_global WHERE false;

    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, CASE WHEN o.value IS NOT NULL AND o.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(o.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(o.value #>> '{}', o.value::text), 'UTF8')), 'hex')) ELSE o.value END),
               jsonb_object_agg(n.key, CASE WHEN n.value IS NOT NULL AND n.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(n.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(n.value #>> '{}', n.value::text), 'UTF8')), 'hex')) ELSE n.value END)
          INTO old_values, new_values
          FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value AND n.key <> ALL (ignored)
           AND n.key <> 'updated_at';
        IF new_values IS NULL THEN
            RETURN NULL;
        END IF;
        changes := jsonb_build_object('old', old_values, 'new', new_values);
    ELSIF TG_OP = 'INSERT' THEN
        SELECT jsonb_object_agg(n.key, CASE WHEN n.value IS NOT NULL AND n.value <> 'null'::jsonb AND (n.key = ANY (hashed) OR length(n.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(n.value #>> '{}', n.value::text), 'UTF8')), 'hex')) ELSE n.value END) INTO new_values
          FROM jsonb_each(to_jsonb(NEW)) n WHERE n.key <> ALL (ignored);
        changes := jsonb_build_object('new', new_values);
    ELSE
        SELECT jsonb_object_agg(o.key, CASE WHEN o.value IS NOT NULL AND o.value <> 'null'::jsonb AND (o.key = ANY (hashed) OR length(o.value::text) > 1024) THEN to_jsonb('sha256:' || encode(sha256(convert_to(coalesce(o.value #>> '{}', o.value::text), 'UTF8')), 'hex')) ELSE o.value END) INTO old_values
          FROM jsonb_each(to_jsonb(OLD)) o WHERE o.key <> ALL (ignored);
        changes := jsonb_build_object('old', old_values);
    END IF;
    event.id := uuidv7();
    event.table_name := TG_ARGV[0];
    event.action := lower(TG_OP);
    event.actor_user_id := nullif(current_setting('app.user_id', true), '')::uuid;
    event.actor := coalesce(nullif(current_setting('app.actor', true), ''), 'service');
    event.request_id := coalesce(current_setting('app.request_id', true), '');
    event.changes := changes;
    event.created_at := now();

    IF TG_OP = 'DELETE' THEN
        event.row_id := OLD.id;
    ELSE
        event.row_id := NEW.id;
    END IF;
    INSERT INTO public.audit_events_global (id, table_name, row_id, action, actor_user_id, actor,
        request_id, changes, created_at)
    VALUES (event.id, event.table_name, event.row_id, event.action, event.actor_user_id,
        event.actor, event.request_id, event.changes, event.created_at);
    RETURN NULL;
END
$fn$""",
    r"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND NEW.hash IS NOT NULL AND NEW.seq IS NOT NULL AND (NEW.prev_hash IS NULL) = (NEW.seq = 1) AND to_jsonb(NEW) - '{seq,prev_hash,hash}'::text[] = to_jsonb(OLD) - '{seq,prev_hash,hash}'::text[] THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'Only the seal of an unsealed event (seq, prev_hash, hash) is allowed.';
END
$fn$""",
]


# --- The two rules, frozen ----------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.resolution
BATCH = 5000


def _content(event: dict, tenant_id, last_field: str) -> str:
    micros = (event["created_at"] - _EPOCH) // _MICROSECOND
    values = (
        event["id"], tenant_id, event["seq"], event["table_name"], event["row_id"],
        event["action"], event["actor_user_id"], event["actor"], event["request_id"],
        micros, last_field,
    )  # fmt: skip
    return "|".join(f"{len(text)}:{text}" for text in ("" if v is None else str(v) for v in values))


def _hash(prev_hash, content: str) -> str:
    return hashlib.sha256(f"{prev_hash or ''}|{content}".encode()).hexdigest()


def changes_text_rule(event: dict, tenant_id) -> str:
    """tenancy.0006's content: the changes' jsonb text itself."""
    return _content(event, tenant_id, event["changes_text"])


def changes_sha256_rule(event: dict, tenant_id) -> str:
    """This migration's content: the changes' digest (tenancy.audit.canonical_content)."""
    return _content(event, tenant_id, event["changes_sha256"])


_FIELDS = (
    "id", "seq", "table_name", "row_id", "action", "actor_user_id", "actor", "request_id",
    "created_at", "changes_text", "changes_sha256", "prev_hash", "hash",
)  # fmt: skip


def _chain(cursor, table: str, tenant_id):
    """A chain's sealed events in seq order, BATCH at a time."""
    tenant = "tenant_id = %s AND " if tenant_id else ""
    after = 0
    while True:
        cursor.execute(
            "SELECT id, seq, table_name, row_id, action, actor_user_id, actor, request_id, "
            "created_at, changes::text, changes_sha256, prev_hash, hash "
            f"FROM {table} WHERE {tenant}seq > %s ORDER BY seq LIMIT {BATCH}",
            [*([tenant_id] if tenant_id else []), after],
        )
        rows = [dict(zip(_FIELDS, row, strict=True)) for row in cursor.fetchall()]
        if not rows:
            return
        yield rows
        after = rows[-1]["seq"]


def _chains(cursor):
    cursor.execute(f"SELECT DISTINCT tenant_id FROM {audit.TENANT_EVENTS} WHERE seq IS NOT NULL")
    tenants = sorted(tenant_id for (tenant_id,) in cursor.fetchall())
    return [(audit.TENANT_EVENTS, tenant_id) for tenant_id in tenants] + [
        (audit.GLOBAL_EVENTS, None)
    ]


def _reseal(cursor, *, verified_by, sealed_by) -> None:
    """Verify every sealed chain by one rule, then seal it again in place by the other;
    an exception naming the first broken event otherwise (the transaction is undone)."""
    cursor.execute("SELECT set_config('app.rls_bypass', 'on', true)")
    for table in (audit.TENANT_EVENTS, audit.GLOBAL_EVENTS):
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {audit.APPEND_ONLY_TRIGGER}")
    for table in (audit.TENANT_EVENTS, audit.GLOBAL_EVENTS):
        cursor.execute(
            f"UPDATE {table} SET changes_sha256 = {audit.changes_sha256_sql('changes')} "
            "WHERE changes_sha256 IS NULL"
        )
    for table, tenant_id in _chains(cursor):
        chain = f"tenant {tenant_id}" if tenant_id else "global"
        old_previous = new_previous = None
        for rows in list(_chain(cursor, table, tenant_id)):
            values = []
            for expected, event in enumerate(rows, start=rows[0]["seq"]):
                if (
                    event["seq"] != expected
                    or event["prev_hash"] != old_previous
                    or _hash(old_previous, verified_by(event, tenant_id)) != event["hash"]
                ):
                    raise RuntimeError(
                        f"The audit chain of {chain} does not verify at event {event['id']} "
                        f"(seq {event['seq']}, {event['action']} {event['table_name']} "
                        f"{event['row_id']}): nothing was changed. Find out why (manage.py "
                        "audit_verify on the code before this migration) before migrating."
                    )
                old_previous = event["hash"]
                new_hash = _hash(new_previous, sealed_by(event, tenant_id))
                values += [event["id"], new_previous, new_hash]
                new_previous = new_hash
            tenant = "e.tenant_id = %s AND " if tenant_id else ""
            cursor.execute(
                f"UPDATE {table} AS e SET prev_hash = v.prev_hash, hash = v.hash FROM (VALUES "
                + ", ".join(["(%s::uuid, %s::varchar, %s::varchar)"] * len(rows))
                + f") AS v (id, prev_hash, hash) WHERE {tenant}e.id = v.id",
                [*values, *([tenant_id] if tenant_id else [])],
            )
    for table in (audit.TENANT_EVENTS, audit.GLOBAL_EVENTS):
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {audit.APPEND_ONLY_TRIGGER}")
    cursor.execute("SELECT set_config('app.rls_bypass', 'off', true)")


def seal_by_digest(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        _reseal(cursor, verified_by=changes_text_rule, sealed_by=changes_sha256_rule)


def seal_by_changes_text(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.rls_bypass', 'on', true)")
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {audit.TENANT_EVENTS} WHERE redacted_at IS NOT NULL)"
            f" + (SELECT count(*) FROM {audit.GLOBAL_EVENTS} WHERE redacted_at IS NOT NULL), "
            f"(SELECT count(*) FROM {audit.ANCHORS})"
        )
        redacted, anchors = cursor.fetchone()
        if redacted or anchors:
            raise RuntimeError(
                f"{redacted} audit events are redacted and {anchors} chains were cut by "
                "retention: the rule before this migration cannot verify them, so it "
                "cannot be undone."
            )
        _reseal(cursor, verified_by=changes_sha256_rule, sealed_by=changes_text_rule)


class Migration(core.db.operations.Migration):
    dependencies = [
        ("tenancy", "0007_audit_events_read_by_owners_and_admins"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="changes_sha256",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="redacted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="globalauditevent",
            name="changes_sha256",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="globalauditevent",
            name="redacted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="AuditChainAnchor",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=core.models.UUIDv7(),
                        default=core.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                (
                    "updated_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                ("seq", models.BigIntegerField()),
                ("hash", models.CharField(max_length=64)),
                ("cut_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenancy.tenant",
                    ),
                ),
            ],
            options={
                "db_table": "audit_chain_anchors",
                "get_latest_by": "created_at",
                "abstract": False,
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant",), name="audit_chain_anchors_tenant_uniq"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("seq__gte", 1)), name="audit_chain_anchors_seq"
                    ),
                ],
            },
        ),  # fmt: skip
        pgtrigger.migrations.AddTrigger(
            model_name="auditchainanchor",
            trigger=pgtrigger.compiler.Trigger(
                name="set_updated_at",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="NEW.updated_at = now(); RETURN NEW;",
                    hash="73b9f15f4dab1567269c8f10e777ad3379c164bb",
                    operation="UPDATE",
                    pgid="pgtrigger_set_updated_at_7b03f",
                    table="audit_chain_anchors",
                    when="BEFORE",
                ),
            ),
        ),  # fmt: skip
        core.db.operations.EnableTenantRLS("audit_chain_anchors"),
        core.db.operations.AuditTable("audit_chain_anchors"),
        migrations.RunSQL(sql=audit.functions_sql(), reverse_sql=SEALED_AFTER_COMMIT_FUNCTIONS),
        migrations.RunPython(seal_by_digest, seal_by_changes_text),
        migrations.AlterField(
            model_name="auditevent",
            name="changes_sha256",
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name="globalauditevent",
            name="changes_sha256",
            field=models.CharField(max_length=64),
        ),
    ]
