"""Every write of this app's tables recorded in the audit trail (docs/security.md,
"Audit trail"; the triggers are core.db.audit's)."""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('exports', '0007_json_value_validators'),
        ('tenancy', '0005_partition_audit_trail'),
    ]

    operations = [
        core.db.operations.AuditTable('exports'),
    ]
