"""A soft-deleted project takes no new rows here, refused by the database (docs/services.md).

The `project_live` triggers (documents.models.project_live_trigger) read the project's
row FOR SHARE and refuse, with the SQLSTATE services report as a ValidationError
naming `project`, a row for a project that is deleted or gone.
"""

import core.db.operations
import pgtrigger.compiler
import pgtrigger.migrations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0010_partition_agent_executions'),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name='agentexecution',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='04272b767ac7ddf2a6f4883cfa67f9576d6d0594', operation='INSERT', pgid='pgtrigger_project_live_7d113', table='agent_executions', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='changeproposal',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='1017d6887bec6d7d78ec89d1bdce728172e66a18', operation='INSERT', pgid='pgtrigger_project_live_5a2f1', table='change_proposals', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='conversationmessage',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='49f09f5bd5b3c4c59684397ef32421fed9f3b802', operation='INSERT', pgid='pgtrigger_project_live_6ad4f', table='conversation_messages', when='BEFORE')),
        ),
    ]
