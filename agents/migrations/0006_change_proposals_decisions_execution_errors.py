"""change_proposals, decisions and execution_errors (docs/architecture.md), with their
lifecycle and recovery triggers, composite tenant keys and row-level security.

The tables are new, so their composite foreign keys are added valid at once (there is
no row to scan) in the migration that creates them. Row-level security as on every
tenant table (core.db.operations.EnableTenantRLS).

A proposal's base and applied versions have no ON DELETE action (RESTRICT in Django): a
version goes only with its project, whose deletion removes its proposals in the same
statement. A deleted execution leaves proposals and decisions behind with a NULL
execution_id (ON DELETE SET NULL of that column only) and takes its error records along.

The trigger on agent_executions (errors_recovered) is created under a SHARE ROW
EXCLUSIVE lock, which waits at most MIGRATION_LOCK_TIMEOUT (core.db.operations).
"""

import core.expressions
import core.db.operations
import core.db.operations
import core.ids
import core.models
import django.contrib.postgres.fields
import django.contrib.postgres.indexes
import django.core.validators
import django.db.models.deletion
import django.db.models.functions.json
import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0005_validate_tenant_foreign_keys'),
        ('documents', '0006_validate_tenant_foreign_keys'),
        ('tenancy', '0002_row_level_security'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ChangeProposal',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('document_type', models.CharField(choices=[('about', 'About'), ('specification', 'Specification'), ('architecture', 'Architecture'), ('plan', 'Plan')], max_length=16)),
                ('content', models.TextField()),
                ('content_sha256', models.CharField(max_length=64)),
                ('impact', models.JSONField(blank=True, default=dict)),
                ('affected_sections', django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=200), blank=True, default=list, size=None)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('approved', 'Approved'), ('applied', 'Applied'), ('rejected', 'Rejected'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('reviewed_at', models.DateTimeField(blank=True, null=True)),
                ('review_note', models.TextField(blank=True)),
                ('failure_reason', models.TextField(blank=True)),
                ('applied_version', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='applied_proposals', to='documents.documentversion')),
                ('base_version', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.RESTRICT, related_name='proposals', to='documents.documentversion')),
                ('execution', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='proposals', to='agents.agentexecution')),
                ('project', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='proposals', to='documents.project')),
                ('reviewed_by', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'change_proposals',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(models.F('project'), models.F('status'), models.OrderBy(models.F('created_at'), descending=True), name='change_proposals_proj_idx'), models.Index(fields=['tenant', 'status', 'created_at'], name='change_proposals_queue_idx'), models.Index(fields=['execution', 'tenant'], name='change_proposals_exec_idx'), models.Index(fields=['base_version', 'tenant'], name='change_proposals_base_idx'), models.Index(fields=['applied_version', 'tenant'], name='change_prop_applied_idx'), models.Index(fields=['reviewed_by'], name='change_prop_reviewer_idx'), django.contrib.postgres.indexes.GinIndex(fields=['affected_sections'], name='change_prop_sections_gin')],
                'constraints': [models.CheckConstraint(condition=models.Q(('status__in', ['pending', 'approved', 'applied', 'rejected', 'failed'])), name='change_proposals_status_valid'), models.CheckConstraint(condition=models.Q(('document_type__in', ['about', 'specification', 'architecture', 'plan'])), name='change_proposals_type_valid'), models.CheckConstraint(condition=models.Q(('content_sha256__regex', '^[0-9a-f]{64}$')), name='change_proposals_content_sha256_hex'), models.CheckConstraint(condition=models.Q(('content_sha256', core.expressions.Sha256Hex('content'))), name='change_proposals_content_sha256_matches'), models.CheckConstraint(condition=models.Q(models.Q(('reviewed_at__isnull', True), ('status', 'pending')), models.Q(models.Q(('status', 'pending'), _negated=True), ('reviewed_at__isnull', False)), _connector='OR'), name='change_proposals_reviewed_at_when_reviewed'), models.CheckConstraint(condition=models.Q(models.Q(('applied_version__isnull', False), ('status', 'applied')), models.Q(models.Q(('status', 'applied'), _negated=True), ('applied_version__isnull', True)), _connector='OR'), name='change_proposals_applied_has_version'), models.CheckConstraint(condition=models.Q(models.Q(('status', 'failed'), models.Q(('failure_reason', ''), _negated=True)), models.Q(models.Q(('status', 'failed'), _negated=True), ('failure_reason', '')), _connector='OR'), name='change_proposals_failed_has_reason')],
                'triggers': [pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='95cc945319b4c9e8909c73895b601c0809f10b32', operation='UPDATE', pgid='pgtrigger_set_updated_at_76c75', table='change_proposals', when='BEFORE')), pgtrigger.compiler.Trigger(name='proposal_status_initial', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (NEW.status <> 'pending')", func="RAISE EXCEPTION 'change proposal %: a new proposal is pending, not %', NEW.id, NEW.status USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='ffd42ea8437c95389752ff8fd3d8ee5a1fd47350', operation='INSERT', pgid='pgtrigger_proposal_status_initial_65e78', table='change_proposals', when='BEFORE')), pgtrigger.compiler.Trigger(name='proposal_base_version', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE base document_versions;', func="SELECT * INTO base FROM document_versions WHERE id = NEW.base_version_id; IF FOUND AND (base.project_id, base.document_type) IS DISTINCT FROM (NEW.project_id, NEW.document_type) THEN RAISE EXCEPTION 'change proposal %: the base version is not a % version of project %', NEW.id, NEW.document_type, NEW.project_id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NULL;", hash='dc253b22f7e1cda0802f55455bab1f67ec13161b', operation='INSERT', pgid='pgtrigger_proposal_base_version_01b7c', table='change_proposals', when='AFTER')), pgtrigger.compiler.Trigger(name='proposal_status_transition', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (OLD.status IS DISTINCT FROM NEW.status)', func="IF NOT ((OLD.status = 'approved' AND NEW.status = 'applied') OR (OLD.status = 'approved' AND NEW.status = 'failed') OR (OLD.status = 'pending' AND NEW.status = 'approved') OR (OLD.status = 'pending' AND NEW.status = 'rejected')) THEN RAISE EXCEPTION 'change proposal %: status cannot change from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = 'integrity_constraint_violation'; END IF; IF NEW.status = 'applied' AND NOT EXISTS (SELECT 1 FROM document_versions v JOIN document_versions b ON b.id = NEW.base_version_id WHERE v.id = NEW.applied_version_id AND v.project_id = NEW.project_id AND v.document_type = NEW.document_type AND v.version = b.version + 1 AND v.content_sha256 = NEW.content_sha256) THEN RAISE EXCEPTION 'change proposal %: the applied version must be the version right after the base, with the proposed content (was another version written since?)', NEW.id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW;", hash='e5bf8af322bb1a857639128fc168249b26345c81', operation='UPDATE', pgid='pgtrigger_proposal_status_transition_2eb51', table='change_proposals', when='BEFORE')), pgtrigger.compiler.Trigger(name='proposal_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (ROW(OLD.tenant_id, OLD.project_id, OLD.document_type, OLD.base_version_id, OLD.content, OLD.content_sha256, OLD.impact, OLD.affected_sections) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.project_id, NEW.document_type, NEW.base_version_id, NEW.content, NEW.content_sha256, NEW.impact, NEW.affected_sections) OR (NEW.execution_id IS NOT NULL AND NEW.execution_id IS DISTINCT FROM OLD.execution_id) OR (OLD.status <> 'pending' AND (NEW.reviewed_at IS DISTINCT FROM OLD.reviewed_at OR NEW.review_note IS DISTINCT FROM OLD.review_note OR (NEW.reviewed_by_id IS NOT NULL AND NEW.reviewed_by_id IS DISTINCT FROM OLD.reviewed_by_id))) OR (NEW.applied_version_id IS DISTINCT FROM OLD.applied_version_id AND NOT (OLD.status = 'approved' AND NEW.status = 'applied')) OR (NEW.failure_reason IS DISTINCT FROM OLD.failure_reason AND NOT (OLD.status = 'approved' AND NEW.status = 'failed')))", func="RAISE EXCEPTION 'change proposal %: its content, base and analysis are immutable, and so is its review once written', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='b4b540ed226389a74bece87e9e01f90b1d403235', operation='UPDATE', pgid='pgtrigger_proposal_immutable_3ab05', table='change_proposals', when='BEFORE'))],
            },
        ),
        migrations.CreateModel(
            name='Decision',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('category', models.CharField(max_length=100)),
                ('question', models.TextField()),
                ('options', models.JSONField(default=list)),
                ('selected', models.CharField(max_length=200)),
                ('reasoning', models.TextField(blank=True)),
                ('decided_at', models.DateTimeField(db_default=core.models.TransactionNow())),
                ('decided_by', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('execution', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='decisions', to='agents.agentexecution')),
                ('project', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='decisions', to='documents.project')),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'decisions',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(fields=['project', 'category', 'decided_at'], name='decisions_proj_cat_idx'), models.Index(fields=['tenant', 'category', 'decided_at'], name='decisions_tenant_cat_idx'), models.Index(fields=['execution', 'tenant'], name='decisions_execution_idx'), models.Index(fields=['decided_by'], name='decisions_decided_by_idx'), django.contrib.postgres.indexes.GinIndex(fields=['options'], name='decisions_options_gin')],
                'constraints': [models.CheckConstraint(condition=models.Q(('options__contains', django.db.models.functions.json.JSONArray(django.db.models.functions.json.JSONObject(name=models.F('selected'))))), name='decisions_selected_is_an_option')],
                'triggers': [pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='64055900746ddf550439cbddec57109554b53a3c', operation='UPDATE', pgid='pgtrigger_set_updated_at_ecefc', table='decisions', when='BEFORE'))],
            },
        ),
        migrations.CreateModel(
            name='ExecutionError',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('node', models.CharField(max_length=200)),
                ('error_type', models.CharField(max_length=200)),
                ('message', models.TextField(blank=True)),
                ('traceback', models.TextField(blank=True)),
                ('attempt', models.IntegerField(validators=[django.core.validators.MinValueValidator(1)])),
                ('recovered', models.BooleanField(default=False)),
                ('recovery_strategy', models.CharField(blank=True, max_length=200)),
                ('execution', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='errors', to='agents.agentexecution')),
                ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant')),
            ],
            options={
                'db_table': 'execution_errors',
                'get_latest_by': 'created_at',
                'abstract': False,
                'indexes': [models.Index(fields=['tenant', 'node', 'created_at'], name='exec_errors_node_idx'), models.Index(condition=models.Q(('recovered', False)), fields=['tenant', 'node', 'created_at'], name='exec_errors_unrecovered_idx')],
                'constraints': [models.UniqueConstraint(fields=('execution', 'tenant'), name='execution_errors_execution_uniq'), models.CheckConstraint(condition=models.Q(('attempt__gte', 1)), name='execution_errors_attempt_gte_1')],
                'triggers': [pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='1cb7ffd91f11e75d8ae5280a371ffb7c76a584b8', operation='UPDATE', pgid='pgtrigger_set_updated_at_880ee', table='execution_errors', when='BEFORE')), pgtrigger.compiler.Trigger(name='error_recovered_on_insert', sql=pgtrigger.compiler.UpsertTriggerSql(declare='DECLARE failed agent_executions;', func="SELECT * INTO failed FROM agent_executions WHERE id = NEW.execution_id; IF NOT FOUND THEN RETURN NEW; END IF; PERFORM pg_advisory_xact_lock(hashtextextended('execution_errors:' || failed.correlation_id::text || ':' || failed.agent_type || ':' || coalesce(failed.parent_id::text, ''), 0)); IF EXISTS (SELECT 1 FROM agent_executions f JOIN agent_executions s ON s.tenant_id = f.tenant_id AND s.correlation_id = f.correlation_id AND s.agent_type = f.agent_type AND s.parent_id IS NOT DISTINCT FROM f.parent_id AND s.attempt > f.attempt AND s.status = 'succeeded' WHERE f.id = NEW.execution_id) THEN NEW.recovered := true; END IF; RETURN NEW;", hash='3e0e0a8d903e48410fb27f39964c76c4662515c3', operation='INSERT', pgid='pgtrigger_error_recovered_on_insert_78e4f', table='execution_errors', when='BEFORE')), pgtrigger.compiler.Trigger(name='error_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (ROW(OLD.tenant_id, OLD.execution_id, OLD.node, OLD.error_type, OLD.message, OLD.traceback, OLD.attempt) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.node, NEW.error_type, NEW.message, NEW.traceback, NEW.attempt) OR (OLD.recovered AND NOT NEW.recovered))', func="RAISE EXCEPTION 'execution error % is a record: only recovery_strategy may change, and recovered only to true', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='ea60752f028de09d4a88be5e904ee35bcb5bbd9f', operation='UPDATE', pgid='pgtrigger_error_immutable_0542d', table='execution_errors', when='BEFORE'))],
            },
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='agentexecution',
            trigger=pgtrigger.compiler.Trigger(name='errors_recovered', sql=pgtrigger.compiler.UpsertTriggerSql(condition="WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'succeeded')", func="PERFORM pg_advisory_xact_lock(hashtextextended('execution_errors:' || NEW.correlation_id::text || ':' || NEW.agent_type || ':' || coalesce(NEW.parent_id::text, ''), 0)); UPDATE execution_errors e SET recovered = true FROM agent_executions x WHERE e.execution_id = x.id AND e.tenant_id = NEW.tenant_id AND NOT e.recovered AND x.tenant_id = NEW.tenant_id AND x.correlation_id = NEW.correlation_id AND x.agent_type = NEW.agent_type AND x.parent_id IS NOT DISTINCT FROM NEW.parent_id AND x.attempt < NEW.attempt; RETURN NULL;", hash='5c235943012c1a600d4a8fdd8a3fa133119c4e87', operation='UPDATE', pgid='pgtrigger_errors_recovered_e4450', table='agent_executions', when='AFTER')),
        ),
        core.db.operations.AddTenantForeignKey('change_proposals', 'change_proposals_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE'),
        core.db.operations.AddTenantForeignKey('change_proposals', 'change_proposals_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='SET NULL'),
        core.db.operations.AddTenantForeignKey('change_proposals', 'change_proposals_base_tenant_fk', column='base_version_id', to='document_versions'),
        core.db.operations.AddTenantForeignKey('change_proposals', 'change_proposals_applied_tenant_fk', column='applied_version_id', to='document_versions'),
        core.db.operations.AddTenantForeignKey('decisions', 'decisions_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE'),
        core.db.operations.AddTenantForeignKey('decisions', 'decisions_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='SET NULL'),
        core.db.operations.AddTenantForeignKey('execution_errors', 'execution_errors_execution_tenant_fk', column='execution_id', to='agent_executions', on_delete='CASCADE'),
        core.db.operations.EnableTenantRLS('change_proposals'),
        core.db.operations.EnableTenantRLS('decisions'),
        core.db.operations.EnableTenantRLS('execution_errors'),
    ]
