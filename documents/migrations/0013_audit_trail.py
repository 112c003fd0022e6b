"""Every write of this app's tables recorded in the audit trail (docs/security.md,
"Audit trail"; the triggers are core.db.audit's)."""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0012_validate_set_null_key'),
        ('tenancy', '0005_partition_audit_trail'),
    ]

    operations = [
        core.db.operations.AuditTable('projects'),
        core.db.operations.AuditTable('document_versions'),
        core.db.operations.AuditTable('documents'),
        # The embedding as its hash only; the search vector is generated from content.
        core.db.operations.AuditTable(
            'chunks', ignored=('search_vector',), hashed=('embedding',)
        ),
        # Shared templates have no tenant: the global chain holds every template's events.
        core.db.operations.AuditTable('project_templates', tenant=False),
    ]
