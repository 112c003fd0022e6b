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
        ('documents', '0008_distribution_ready_keys'),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name='document',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NEW.project_id IS NOT NULL)', declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='15ce461a99580340c7f4ded93198a416597ca341', operation='INSERT', pgid='pgtrigger_project_live_8cc94', table='documents', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='documentversion',
            trigger=pgtrigger.compiler.Trigger(name='project_live', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE deleted timestamptz; project_name text;', func='SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; IF NOT FOUND THEN RETURN NEW; END IF; IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it takes no new %.\', project_name, replace(TG_TABLE_NAME, \'_\', \' \') USING ERRCODE = \'55D01\', COLUMN = \'project\'; END IF; RETURN NEW;', hash='5ad5f94c20de3121267f5045ea4b588e8db1de7f', operation='INSERT', pgid='pgtrigger_project_live_5c850', table='document_versions', when='BEFORE')),
        ),
    ]
