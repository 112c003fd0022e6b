"""A version can be redacted by an erasure (docs/security.md, "Erasure"): `redacted_at`, the
tombstone constraint, and the immutability trigger and hash check that allow that one
change. The hash check is replaced by a weaker one in the same transaction, NOT VALID (no
scan under the lock); documents.0017 validates both.
"""

import core.expressions
import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.contrib.postgres.operations import AddConstraintNotValid
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('documents', '0015_restricted_rows_indexes'),
        ('tenancy', '0007_audit_events_read_by_owners_and_admins'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(
            model_name='documentversion',
            name='versions_immutable',
        ),
        migrations.RemoveConstraint(
            model_name='documentversion',
            name='document_versions_content_sha256_matches',
        ),
        migrations.AddField(
            model_name='documentversion',
            name='redacted_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='documentversion',
            trigger=pgtrigger.compiler.Trigger(name='versions_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (ROW(OLD.content, OLD.redacted_at) IS DISTINCT FROM ROW(NEW.content, NEW.redacted_at) AND NOT (OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL) OR ROW(OLD.content_sha256, OLD.prev_sha256, OLD.version, OLD.document_type, OLD.project_id, OLD.tenant_id) IS DISTINCT FROM ROW(NEW.content_sha256, NEW.prev_sha256, NEW.version, NEW.document_type, NEW.project_id, NEW.tenant_id))', func="RAISE EXCEPTION 'document version % is immutable: content, hashes, version, type, project and tenant cannot change (only an erasure redacts the content, once)', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='b1798865d6632ad9be8eccf10eb219840fb8e454', operation='UPDATE', pgid='pgtrigger_versions_immutable_9f7cf', table='document_versions', when='BEFORE')),
        ),
        AddConstraintNotValid(
            model_name='documentversion',
            constraint=models.CheckConstraint(condition=models.Q(('content_sha256', core.expressions.Sha256Hex('content')), ('redacted_at__isnull', False), _connector='OR'), name='document_versions_content_sha256_matches'),
        ),
        AddConstraintNotValid(
            model_name='documentversion',
            constraint=models.CheckConstraint(condition=models.Q(('redacted_at__isnull', True), ('content', '[erased]'), _connector='OR'), name='document_versions_redacted_tombstone'),
        ),
    ]
