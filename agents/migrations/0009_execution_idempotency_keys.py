"""execution_idempotency_keys: the per-tenant uniqueness of idempotency keys, moved off
agent_executions before agents.0010 partitions it (a partitioned table's unique keys
must include its partition key, the id, which would make (tenant_id, idempotency_key,
id) guarantee nothing).

agent_executions' idempotency_key_claim trigger writes the key row in the same
statement as the execution, so a duplicate still fails with
agent_executions_tenant_idempotency_uniq, for the ORM and raw SQL alike; the key can
no longer change (idempotency_key_immutable). The existing keys are copied (as the
owner, with the bypass on: FORCE ROW LEVEL SECURITY applies to the owner too). The
table is new: its composite key is added valid at once.
"""

import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models

import core.db.operations
from core.db.operations import AddTenantForeignKey, EnableTenantRLS


class Migration(core.db.operations.Migration):

    dependencies = [
        ('agents', '0008_distribution_ready_keys'),
        ('tenancy', '0002_row_level_security'),
    ]

    operations = [
        migrations.CreateModel(
            name='ExecutionIdempotencyKey',
            fields=[
                ('id', models.UUIDField(db_default=core.models.UUIDv7(), default=core.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('updated_at', models.DateTimeField(db_default=core.models.TransactionNow(), editable=False)),
                ('idempotency_key', models.CharField(max_length=200)),
            ],
            options={
                'db_table': 'execution_idempotency_keys',
                'get_latest_by': 'created_at',
                'abstract': False,
            },
        ),
        migrations.RemoveConstraint(
            model_name='agentexecution',
            name='agent_executions_tenant_idempotency_uniq',
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='agentexecution',
            trigger=pgtrigger.compiler.Trigger(name='idempotency_key_claim', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NEW.idempotency_key IS NOT NULL)', func='INSERT INTO execution_idempotency_keys (tenant_id, execution_id, idempotency_key) VALUES (NEW.tenant_id, NEW.id, NEW.idempotency_key); RETURN NULL;', hash='8fb92e4e401166190f353ecb1e5b4ce31269b317', operation='INSERT', pgid='pgtrigger_idempotency_key_claim_0ca55', table='agent_executions', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='agentexecution',
            trigger=pgtrigger.compiler.Trigger(name='idempotency_key_immutable', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (OLD.idempotency_key IS DISTINCT FROM NEW.idempotency_key)', func="RAISE EXCEPTION 'agent execution %: the idempotency key cannot change', OLD.id USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;", hash='32cea0baf670af7677a346884ebf07ebc0dd6c7e', operation='UPDATE', pgid='pgtrigger_idempotency_key_immutable_df9f4', table='agent_executions', when='BEFORE')),
        ),
        migrations.AddField(
            model_name='executionidempotencykey',
            name='execution',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='agents.agentexecution'),
        ),
        migrations.AddField(
            model_name='executionidempotencykey',
            name='tenant',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenancy.tenant'),
        ),
        migrations.AddConstraint(
            model_name='executionidempotencykey',
            constraint=models.UniqueConstraint(fields=('tenant', 'idempotency_key'), name='agent_executions_tenant_idempotency_uniq'),
        ),
        migrations.AddConstraint(
            model_name='executionidempotencykey',
            constraint=models.UniqueConstraint(fields=('tenant', 'execution'), name='execution_idempotency_keys_exec_uniq'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='executionidempotencykey',
            trigger=pgtrigger.compiler.Trigger(name='set_updated_at', sql=pgtrigger.compiler.UpsertTriggerSql(func='NEW.updated_at = now(); RETURN NEW;', hash='501b819711b978f63c424648b73aa24546c39b4d', operation='UPDATE', pgid='pgtrigger_set_updated_at_6d0c5', table='execution_idempotency_keys', when='BEFORE')),
        ),
        AddTenantForeignKey(
            'execution_idempotency_keys',
            'execution_idempotency_keys_exec_tenant_fk',
            column='execution_id',
            to='agent_executions',
            on_delete='CASCADE',
        ),
        EnableTenantRLS('execution_idempotency_keys'),
        migrations.RunSQL(
            sql="""
SELECT set_config('app.rls_bypass', 'on', true);
INSERT INTO execution_idempotency_keys (tenant_id, execution_id, idempotency_key)
    SELECT tenant_id, id, idempotency_key FROM agent_executions WHERE idempotency_key IS NOT NULL;
""",
            # The rows go with the table (and the unique index agents.0008 had comes back).
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
