"""A reviewer's erasure clears their review note with their name on the proposals they
reviewed (docs/security.md, "Erasure"); the proposal itself stays immutable."""

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0019_validate_sources_erasure'),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(
            model_name='changeproposal',
            name='proposal_immutable',
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='changeproposal',
            trigger=pgtrigger.compiler.Trigger(name='proposal_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (ROW(OLD.tenant_id, OLD.project_id, OLD.document_type, OLD.base_version_id, OLD.content, OLD.content_sha256, OLD.impact, OLD.affected_sections) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.project_id, NEW.document_type, NEW.base_version_id, NEW.content, NEW.content_sha256, NEW.impact, NEW.affected_sections) OR (NEW.execution_id IS NOT NULL AND NEW.execution_id IS DISTINCT FROM OLD.execution_id) OR (OLD.status <> 'pending' AND (NEW.reviewed_at IS DISTINCT FROM OLD.reviewed_at OR (NEW.review_note IS DISTINCT FROM OLD.review_note AND NOT (NEW.review_note = '' AND NEW.reviewed_by_id IS NULL)) OR (NEW.reviewed_by_id IS NOT NULL AND NEW.reviewed_by_id IS DISTINCT FROM OLD.reviewed_by_id))) OR (NEW.applied_version_id IS DISTINCT FROM OLD.applied_version_id AND NOT (OLD.status = 'approved' AND NEW.status = 'applied')) OR (NEW.failure_reason IS DISTINCT FROM OLD.failure_reason AND NOT (OLD.status = 'approved' AND NEW.status = 'failed')))", func="RAISE EXCEPTION 'change proposal %: its content, base and analysis are immutable, and so is its review once written', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='823590704fdd9a4a725ca7a4b20e10dca3da4c10', operation='UPDATE', pgid='pgtrigger_proposal_immutable_3ab05', table='change_proposals', when='BEFORE')),
        ),
    ]
