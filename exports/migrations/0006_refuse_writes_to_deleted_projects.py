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
        ('exports', '0005_distribution_ready_keys'),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name='export',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='982e2689bb28aa67ea269f86147ce70362c36d8d', operation='INSERT', pgid='pgtrigger_project_live_9f66a', table='exports', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='export',
            trigger=pgtrigger.compiler.Trigger(name='project_live_build', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (NEW.status IN ('running', 'completed') AND OLD.status IS DISTINCT FROM NEW.status)", declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='a141b4a62727e521f4350008dae3301daa1be226', operation='UPDATE', pgid='pgtrigger_project_live_build_eeb8d', table='exports', when='BEFORE')),
        ),
    ]
