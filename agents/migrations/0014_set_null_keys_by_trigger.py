"""The five agents keys with ON DELETE SET NULL: the clearing done by triggers, not keys.

Citus refuses a foreign key whose ON DELETE is SET NULL when the key holds the
distribution column, even PostgreSQL's `SET NULL (column)` that leaves tenant_id alone.
Each key becomes NO ACTION (added again NOT VALID, validated by the next migration)
and an AFTER DELETE trigger on the referenced table clears the column in the deleted
row's tenant's rows before the key checks (core.db.operations.AddTenantForeignKey):

- a deleted chunk leaves its execution sources, without chunk_id;
- a deleted document version leaves the executions that produced it, without
  produced_version_id;
- a deleted execution leaves its proposals, messages and decisions, without
  execution_id.

The immutability triggers of those tables already let exactly that column go NULL.
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0013_tenant_filtered_triggers'),
        ('documents', '0011_set_null_key_by_trigger'),
    ]

    operations = [
        core.db.operations.MoveSetNullToTrigger('execution_sources', 'execution_sources_chunk_tenant_fk', column='chunk_id', to='chunks'),
        core.db.operations.MoveSetNullToTrigger('agent_executions', 'agent_executions_version_tenant_fk', column='produced_version_id', to='document_versions'),
        core.db.operations.MoveSetNullToTrigger('change_proposals', 'change_proposals_execution_tenant_fk', column='execution_id', to='agent_executions'),
        core.db.operations.MoveSetNullToTrigger('conversation_messages', 'conversation_messages_execution_tenant_fk', column='execution_id', to='agent_executions'),
        core.db.operations.MoveSetNullToTrigger('decisions', 'decisions_execution_tenant_fk', column='execution_id', to='agent_executions'),
    ]
