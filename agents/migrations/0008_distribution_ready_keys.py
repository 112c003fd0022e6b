"""Keys a Citus cluster can keep when it spreads tenants over nodes (docs/operations.md).

- The single-column foreign keys Django made between tenant tables are dropped
  (db_constraint=False): the composite keys (tenant_id, x_id) -> x (tenant_id, id) of
  the earlier migrations already enforce the same references, with the same ON DELETE
  actions, and also pin the tenant. Dropping a constraint is a catalog change.
- Unique constraints without tenant_id become tenant-first (an execution's sources); each new index is
  built CONCURRENTLY and swapped in with a brief lock (core.db.operations).

tests/core/test_distribution.py checks the whole catalog for both rules.
"""

import django.db.models.deletion
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):
    # CREATE UNIQUE INDEX CONCURRENTLY cannot run in a transaction.
    atomic = False

    dependencies = [
        ('agents', '0007_trigram_search_indexes'),
        ('documents', '0008_distribution_ready_keys'),
        ('tenancy', '0002_row_level_security'),
    ]

    operations = [
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='agentexecution',
                name='parent',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='agents.agentexecution'),
            ),
            table='agent_executions', column='parent_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='agentexecution',
                name='produced_version',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='produced_by', to='documents.documentversion'),
            ),
            table='agent_executions', column='produced_version_id', target='document_versions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='agentexecution',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='executions', to='documents.project'),
            ),
            table='agent_executions', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='changeproposal',
                name='applied_version',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='applied_proposals', to='documents.documentversion'),
            ),
            table='change_proposals', column='applied_version_id', target='document_versions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='changeproposal',
                name='base_version',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.RESTRICT, related_name='proposals', to='documents.documentversion'),
            ),
            table='change_proposals', column='base_version_id', target='document_versions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='changeproposal',
                name='execution',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='proposals', to='agents.agentexecution'),
            ),
            table='change_proposals', column='execution_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='changeproposal',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='proposals', to='documents.project'),
            ),
            table='change_proposals', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='conversationmessage',
                name='execution',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='messages', to='agents.agentexecution'),
            ),
            table='conversation_messages', column='execution_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='conversationmessage',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='documents.project'),
            ),
            table='conversation_messages', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='decision',
                name='execution',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='decisions', to='agents.agentexecution'),
            ),
            table='decisions', column='execution_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='decision',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='decisions', to='documents.project'),
            ),
            table='decisions', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='evaluationrun',
                name='document_version',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='evaluations', to='documents.documentversion'),
            ),
            table='evaluation_runs', column='document_version_id', target='document_versions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='evaluationrun',
                name='execution',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='evaluations', to='agents.agentexecution'),
            ),
            table='evaluation_runs', column='execution_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='evaluationrun',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='evaluations', to='documents.project'),
            ),
            table='evaluation_runs', column='project_id', target='projects',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='executionerror',
                name='execution',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='errors', to='agents.agentexecution'),
            ),
            table='execution_errors', column='execution_id', target='agent_executions',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='executionsource',
                name='chunk',
                field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='execution_sources', to='documents.chunk'),
            ),
            table='execution_sources', column='chunk_id', target='chunks',
        ),
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='executionsource',
                name='execution',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='sources', to='agents.agentexecution'),
            ),
            table='execution_sources', column='execution_id', target='agent_executions',
        ),
        core.db.operations.ReplaceUniqueConstraint(
            'executionsource',
            models.UniqueConstraint(fields=('execution', 'chunk'), name='execution_sources_execution_chunk_uniq'),
            models.UniqueConstraint(fields=('tenant', 'execution', 'chunk'), name='execution_sources_tenant_exec_chunk_uniq'),
        ),
    ]
