"""A source whose document was erased keeps its row (docs/security.md, "Erasure"): `erased_at`,
content and title emptied once, the immutability trigger and hash check allowing that one
change. The hash check is replaced by a weaker one in the same transaction, NOT VALID;
agents.0019 validates both.
"""

import core.expressions
import pgtrigger.compiler
import pgtrigger.migrations
from django.contrib.postgres.operations import AddConstraintNotValid
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0017_restricted_projects'),
        ('documents', '0016_versions_redaction'),
        ('tenancy', '0007_audit_events_read_by_owners_and_admins'),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(
            model_name='executionsource',
            name='sources_immutable',
        ),
        migrations.RemoveConstraint(
            model_name='executionsource',
            name='execution_sources_chunk_sha256_matches',
        ),
        migrations.AddField(
            model_name='executionsource',
            name='erased_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='executionsource',
            trigger=pgtrigger.compiler.Trigger(name='sources_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NEW.chunk_id IS NOT NULL AND NEW.chunk_id IS DISTINCT FROM OLD.chunk_id OR ROW(OLD.tenant_id, OLD.execution_id, OLD.rank, OLD.score, OLD.chunk_sha256, OLD.document_id, OLD.ordinal) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.rank, NEW.score, NEW.chunk_sha256, NEW.document_id, NEW.ordinal) OR ROW(OLD.document_title, OLD.content, OLD.erased_at) IS DISTINCT FROM ROW(NEW.document_title, NEW.content, NEW.erased_at) AND NOT (OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL))', func="RAISE EXCEPTION 'execution source % is immutable: only chunk_id may be cleared, and the content erased once', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='e4f2634058f9237f12e9128d71387fd59bb34ae5', operation='UPDATE', pgid='pgtrigger_sources_immutable_e873e', table='execution_sources', when='BEFORE')),
        ),
        AddConstraintNotValid(
            model_name='executionsource',
            constraint=models.CheckConstraint(condition=models.Q(('chunk_sha256', core.expressions.Sha256Hex('content')), ('erased_at__isnull', False), _connector='OR'), name='execution_sources_chunk_sha256_matches'),
        ),
        AddConstraintNotValid(
            model_name='executionsource',
            constraint=models.CheckConstraint(condition=models.Q(('erased_at__isnull', True), models.Q(('content', ''), ('document_title', '')), _connector='OR'), name='execution_sources_erased_empty'),
        ),
    ]
