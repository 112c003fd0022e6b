"""The triggers that read another table find its rows by tenant_id and id, not id alone.

On one server the id alone found the same row (ids are unique). On a Citus cluster a
trigger runs on the shard that holds the row, and there it may only query the shards
of the same tenant (co-located on that node): a query by id alone is a query of every
shard, which Citus refuses ("cannot execute a distributed query from a query on a
shard"). proposal_base_version and proposal_status_transition read the base and
applied versions, error_recovered_on_insert the failed execution and its step's later
attempts. pgtrigger replaces each (DROP, then CREATE with the new body).
"""

import pgtrigger.compiler
import pgtrigger.migrations

import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0012_json_value_validators'),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(
            model_name='changeproposal',
            name='proposal_base_version',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='changeproposal',
            name='proposal_status_transition',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='executionerror',
            name='error_recovered_on_insert',
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='changeproposal',
            trigger=pgtrigger.compiler.Trigger(name='proposal_base_version', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE base document_versions;', func="SELECT * INTO base FROM document_versions WHERE tenant_id = NEW.tenant_id AND id = NEW.base_version_id; IF FOUND AND (base.project_id, base.document_type) IS DISTINCT FROM (NEW.project_id, NEW.document_type) THEN RAISE EXCEPTION 'change proposal %: the base version is not a % version of project %', NEW.id, NEW.document_type, NEW.project_id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NULL;", hash='8bc55da47f094b6921c8a73abc0f1be46fe95ad0', operation='INSERT', pgid='pgtrigger_proposal_base_version_01b7c', table='change_proposals', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='changeproposal',
            trigger=pgtrigger.compiler.Trigger(name='proposal_status_transition', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (OLD.status IS DISTINCT FROM NEW.status)', func="IF NOT ((OLD.status = 'approved' AND NEW.status = 'applied') OR (OLD.status = 'approved' AND NEW.status = 'failed') OR (OLD.status = 'pending' AND NEW.status = 'approved') OR (OLD.status = 'pending' AND NEW.status = 'rejected')) THEN RAISE EXCEPTION 'change proposal %: status cannot change from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = 'integrity_constraint_violation'; END IF; IF NEW.status = 'applied' AND NOT EXISTS (SELECT 1 FROM document_versions v JOIN document_versions b ON b.tenant_id = NEW.tenant_id AND b.id = NEW.base_version_id WHERE v.tenant_id = NEW.tenant_id AND v.id = NEW.applied_version_id AND v.project_id = NEW.project_id AND v.document_type = NEW.document_type AND v.version = b.version + 1 AND v.content_sha256 = NEW.content_sha256) THEN RAISE EXCEPTION 'change proposal %: the applied version must be the version right after the base, with the proposed content (was another version written since?)', NEW.id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW;", hash='c14ea946698ebf5fb9e7cdbe75ebebf27c93c86f', operation='UPDATE', pgid='pgtrigger_proposal_status_transition_2eb51', table='change_proposals', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='executionerror',
            trigger=pgtrigger.compiler.Trigger(name='error_recovered_on_insert', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE failed agent_executions;', func="SELECT * INTO failed FROM agent_executions WHERE tenant_id = NEW.tenant_id AND id = NEW.execution_id; IF NOT FOUND THEN RETURN NEW; END IF; PERFORM pg_advisory_xact_lock(hashtextextended('execution_errors:' || failed.correlation_id::text || ':' || failed.agent_type || ':' || coalesce(failed.parent_id::text, ''), 0)); IF EXISTS (SELECT 1 FROM agent_executions f JOIN agent_executions s ON s.tenant_id = f.tenant_id AND s.correlation_id = f.correlation_id AND s.agent_type = f.agent_type AND s.parent_id IS NOT DISTINCT FROM f.parent_id AND s.attempt > f.attempt AND s.status = 'succeeded' WHERE f.tenant_id = NEW.tenant_id AND f.id = NEW.execution_id) THEN NEW.recovered := true; END IF; RETURN NEW;", hash='40dd9896923a0f11cc2949b4810204087db43bcf', operation='INSERT', pgid='pgtrigger_error_recovered_on_insert_78e4f', table='execution_errors', when='BEFORE')),
        ),
    ]
