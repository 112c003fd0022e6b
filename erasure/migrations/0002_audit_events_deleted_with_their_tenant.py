"""An erased tenant's audit events may be deleted, by its offboarding only
(docs/operations.md, "Offboarding a tenant").

audit_events is append-only: its trigger refuses every UPDATE and DELETE, for every
role. From here it lets one DELETE through (core.db.audit.tenant_erasure_delete_allowed_sql):
of an event whose tenant no longer exists, in a transaction that set
app.erasing_tenant_id to that tenant's id, by the role that owns the table. That is
erasure.services.erase_tenant, which deletes the tenant's row first in the same
transaction. Every other tenant's chain, and the global chain, stay as they were.

Backwards: the function as tenancy.0006 made it (frozen below).
"""

import core.db.operations
from core.db import audit
from django.db import migrations

SEAL_ONLY_REFUSE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND NEW.hash IS NOT NULL AND NEW.seq IS NOT NULL AND (NEW.prev_hash IS NULL) = (NEW.seq = 1) AND to_jsonb(NEW) - '{seq,prev_hash,hash}'::text[] = to_jsonb(OLD) - '{seq,prev_hash,hash}'::text[] THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'Only the seal of an unsealed event (seq, prev_hash, hash) is allowed.';
END
$fn$"""


class Migration(core.db.operations.Migration):

    dependencies = [
        ('erasure', '0001_erasure_receipts'),
    ]

    operations = [
        migrations.RunSQL(
            sql=[audit.refuse_function_sql()],
            reverse_sql=[SEAL_ONLY_REFUSE_FUNCTION],
        ),
    ]
