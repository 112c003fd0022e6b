"""The audit trail's hash chain sealed after commit, outside the writers' transactions
(docs/security.md, "The hash chain").

Until now each trigger extended its tenant's chain under an advisory lock held to the
commit, so a tenant's writers took turns. From here the triggers write events unsealed
(seq, prev_hash and hash NULL) and tenancy.audit.audit_seal seals the committed ones:

- seq and hash become nullable (a CHECK such as seq >= 1 lets a NULL through);
- the trigger functions are replaced (core.db.audit): no lock, no head read, no hash;
  the append-only trigger now lets one change through, the seal of an unsealed event;
- partial indexes hold the unsealed events in the order audit_seal reads them. The
  head read (WHERE seq IS NOT NULL ORDER BY seq DESC) keeps the (tenant_id, seq DESC)
  index, which skips the NULLs as an index condition.

Backwards needs every event sealed (`manage.py audit_seal` first): the columns become
NOT NULL again, and the functions of tenancy.0004 come back as they were written then
(frozen below, since core.db.audit no longer builds them).
"""

import core.db.operations
from core.db import audit
from django.db import migrations, models

# The functions as tenancy.0004 created them: the chain extended inside the trigger.
CHAINED_IN_TRIGGER_FUNCTIONS = [
    r"""CREATE OR REPLACE FUNCTION audit_tenant_row() RETURNS trigger LANGUAGE plpgsql AS $fn$

DECLARE
    ignored text[] := string_to_array(coalesce(TG_ARGV[1], ''), ',');
    hashed text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
    old_values jsonb;
    new_values jsonb;
    changes jsonb;
    head record;

    event audit_events;
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
        PERFORM pg_advisory_xact_lock(
            hashtextextended('audit_events:' || OLD.tenant_id::text, 0));
        SELECT a.seq, a.hash INTO head FROM audit_events a
         WHERE a.tenant_id = OLD.tenant_id ORDER BY a.seq DESC LIMIT 1;
        event.seq := coalesce(head.seq, 0) + 1;
        event.prev_hash := head.hash;
        event.hash := encode(sha256(convert_to(coalesce(event.prev_hash, '') || '|' || length(event.id::text)::text || ':' || event.id::text || '|' || length(coalesce(event.tenant_id::text, ''))::text || ':' || coalesce(event.tenant_id::text, '') || '|' || length(event.seq::text)::text || ':' || event.seq::text || '|' || length(event.table_name)::text || ':' || event.table_name || '|' || length(event.row_id::text)::text || ':' || event.row_id::text || '|' || length(event.action)::text || ':' || event.action || '|' || length(coalesce(event.actor_user_id::text, ''))::text || ':' || coalesce(event.actor_user_id::text, '') || '|' || length(event.actor)::text || ':' || event.actor || '|' || length(event.request_id)::text || ':' || event.request_id || '|' || length((extract(epoch FROM event.created_at) * 1000000)::bigint::text)::text || ':' || (extract(epoch FROM event.created_at) * 1000000)::bigint::text || '|' || length(event.changes::text)::text || ':' || event.changes::text, 'UTF8')), 'hex');
        -- The WHERE is always true: it names the row's tenant, as the distribution rules
        -- want of a trigger's insert into a tenant table.
        INSERT INTO audit_events SELECT event.* WHERE event.tenant_id = OLD.tenant_id;
    ELSE

        event.tenant_id := NEW.tenant_id;
        event.row_id := NEW.id;
        PERFORM pg_advisory_xact_lock(
            hashtextextended('audit_events:' || NEW.tenant_id::text, 0));
        SELECT a.seq, a.hash INTO head FROM audit_events a
         WHERE a.tenant_id = NEW.tenant_id ORDER BY a.seq DESC LIMIT 1;
        event.seq := coalesce(head.seq, 0) + 1;
        event.prev_hash := head.hash;
        event.hash := encode(sha256(convert_to(coalesce(event.prev_hash, '') || '|' || length(event.id::text)::text || ':' || event.id::text || '|' || length(coalesce(event.tenant_id::text, ''))::text || ':' || coalesce(event.tenant_id::text, '') || '|' || length(event.seq::text)::text || ':' || event.seq::text || '|' || length(event.table_name)::text || ':' || event.table_name || '|' || length(event.row_id::text)::text || ':' || event.row_id::text || '|' || length(event.action)::text || ':' || event.action || '|' || length(coalesce(event.actor_user_id::text, ''))::text || ':' || coalesce(event.actor_user_id::text, '') || '|' || length(event.actor)::text || ':' || event.actor || '|' || length(event.request_id)::text || ':' || event.request_id || '|' || length((extract(epoch FROM event.created_at) * 1000000)::bigint::text)::text || ':' || (extract(epoch FROM event.created_at) * 1000000)::bigint::text || '|' || length(event.changes::text)::text || ':' || event.changes::text, 'UTF8')), 'hex');
        -- The WHERE is always true: it names the row's tenant, as the distribution rules
        -- want of a trigger's insert into a tenant table.
        INSERT INTO audit_events SELECT event.* WHERE event.tenant_id = NEW.tenant_id;
    END IF;
    RETURN NULL;
END
$fn$""",
    r"""CREATE OR REPLACE FUNCTION audit_global_row() RETURNS trigger LANGUAGE plpgsql AS $fn$

DECLARE
    ignored text[] := string_to_array(coalesce(TG_ARGV[1], ''), ',');
    hashed text[] := string_to_array(coalesce(TG_ARGV[2], ''), ',');
    old_values jsonb;
    new_values jsonb;
    changes jsonb;
    head record;

    event record;
BEGIN
    IF to_regclass('public.audit_events_global') IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO event FROM audit_events_global WHERE false;

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
    PERFORM pg_advisory_xact_lock(hashtextextended('audit_events_global', 0));
    SELECT a.seq, a.hash INTO head FROM audit_events_global a ORDER BY a.seq DESC LIMIT 1;
    event.seq := coalesce(head.seq, 0) + 1;
    event.prev_hash := head.hash;
    event.hash := encode(sha256(convert_to(coalesce(event.prev_hash, '') || '|' || length(event.id::text)::text || ':' || event.id::text || '|' || length('')::text || ':' || '' || '|' || length(event.seq::text)::text || ':' || event.seq::text || '|' || length(event.table_name)::text || ':' || event.table_name || '|' || length(event.row_id::text)::text || ':' || event.row_id::text || '|' || length(event.action)::text || ':' || event.action || '|' || length(coalesce(event.actor_user_id::text, ''))::text || ':' || coalesce(event.actor_user_id::text, '') || '|' || length(event.actor)::text || ':' || event.actor || '|' || length(event.request_id)::text || ':' || event.request_id || '|' || length((extract(epoch FROM event.created_at) * 1000000)::bigint::text)::text || ':' || (extract(epoch FROM event.created_at) * 1000000)::bigint::text || '|' || length(event.changes::text)::text || ':' || event.changes::text, 'UTF8')), 'hex');
    INSERT INTO audit_events_global (id, seq, table_name, row_id, action, actor_user_id, actor,
        request_id, changes, created_at, prev_hash, hash)
    VALUES (event.id, event.seq, event.table_name, event.row_id, event.action,
        event.actor_user_id, event.actor, event.request_id, event.changes, event.created_at,
        event.prev_hash, event.hash);
    RETURN NULL;
END
$fn$""",
    r"""CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$""",
]

REFUSE_BACK_WHILE_UNSEALED = f"""
DO $$ BEGIN
    IF EXISTS (SELECT FROM {audit.TENANT_EVENTS} WHERE hash IS NULL)
       OR EXISTS (SELECT FROM {audit.GLOBAL_EVENTS} WHERE hash IS NULL) THEN
        RAISE EXCEPTION 'the audit trail has unsealed events: run manage.py audit_seal, '
            'then migrate back';
    END IF;
END $$"""


class Migration(core.db.operations.Migration):
    dependencies = [
        ("tenancy", "0005_partition_audit_trail"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="seq",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="globalauditevent",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="globalauditevent",
            name="seq",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunSQL(sql=audit.functions_sql(), reverse_sql=CHAINED_IN_TRIGGER_FUNCTIONS),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("hash__isnull", True)),
                fields=["tenant", "created_at", "id"],
                name="audit_events_unsealed_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="globalauditevent",
            index=models.Index(
                condition=models.Q(("hash__isnull", True)),
                fields=["created_at", "id"],
                name="audit_global_unsealed_idx",
            ),
        ),
        # Backwards, first: refused while an event is unsealed.
        migrations.RunSQL(sql=migrations.RunSQL.noop, reverse_sql=REFUSE_BACK_WHILE_UNSEALED),
    ]
