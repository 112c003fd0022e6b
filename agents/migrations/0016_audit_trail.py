"""Every write of this app's tables recorded in the audit trail (docs/security.md,
"Audit trail"; the triggers are core.db.audit's)."""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0015_validate_set_null_keys'),
        ('tenancy', '0005_partition_audit_trail'),
    ]

    operations = [
        core.db.operations.AuditTable('agent_executions'),
        core.db.operations.AuditTable('execution_idempotency_keys'),
        core.db.operations.AuditTable('execution_sources'),
        core.db.operations.AuditTable('conversation_messages'),
        core.db.operations.AuditTable('evaluation_runs'),
        core.db.operations.AuditTable('change_proposals'),
        core.db.operations.AuditTable('decisions'),
        core.db.operations.AuditTable('execution_errors'),
    ]
