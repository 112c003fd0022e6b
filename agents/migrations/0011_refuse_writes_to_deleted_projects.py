"""A soft-deleted project takes no new rows here, refused by the database (DESIGN.md section 8).

The `project_live` triggers (documents.models.project_live_trigger) read the project's
row FOR SHARE and refuse, with the SQLSTATE services report as a ValidationError
naming `project`, a row for a project that is deleted or gone.
"""

import core.safe_migration
import pgtrigger.compiler
import pgtrigger.migrations


class Migration(core.safe_migration.Migration):

    dependencies = [
        ('agents', '0010_partition_agent_executions'),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name='agentexecution',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz;', func="SELECT p.deleted_at INTO deleted FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RAISE EXCEPTION 'Project % does not exist.', NEW.project_id USING ERRCODE = '55D01', COLUMN = 'project'; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION 'Project % was deleted; it takes no new %.', NEW.project_id, replace(TG_TABLE_NAME, '_', ' ') USING ERRCODE = '55D01', COLUMN = 'project'; END IF; RETURN NEW;", hash='3a2484a9670eb00606d2852cf0bbf2ec16948dc9', operation='INSERT', pgid='pgtrigger_project_live_7d113', table='agent_executions', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='changeproposal',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz;', func="SELECT p.deleted_at INTO deleted FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RAISE EXCEPTION 'Project % does not exist.', NEW.project_id USING ERRCODE = '55D01', COLUMN = 'project'; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION 'Project % was deleted; it takes no new %.', NEW.project_id, replace(TG_TABLE_NAME, '_', ' ') USING ERRCODE = '55D01', COLUMN = 'project'; END IF; RETURN NEW;", hash='f2520ed4ff82d7f557d81173524236a9c2f1f6e7', operation='INSERT', pgid='pgtrigger_project_live_5a2f1', table='change_proposals', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='conversationmessage',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz;', func="SELECT p.deleted_at INTO deleted FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RAISE EXCEPTION 'Project % does not exist.', NEW.project_id USING ERRCODE = '55D01', COLUMN = 'project'; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION 'Project % was deleted; it takes no new %.', NEW.project_id, replace(TG_TABLE_NAME, '_', ' ') USING ERRCODE = '55D01', COLUMN = 'project'; END IF; RETURN NEW;", hash='6693194e03bc6b643729a2a3cc288e44a297b3f7', operation='INSERT', pgid='pgtrigger_project_live_6ad4f', table='conversation_messages', when='BEFORE')),
        ),
    ]
