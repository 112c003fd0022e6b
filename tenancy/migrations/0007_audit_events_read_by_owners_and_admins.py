"""A tenant's audit events are read by its owners and admins only (docs/security.md,
"Audit trail"): an event's `changes` carry the values of the row it records, a
restricted project's or document's too, so a member who may not see the row may not
read its events either. Every writer still inserts them (the WITH CHECK side keeps the
tenant alone); the seal and audit_verify read with the logged bypass.

The policy reads the transaction's settings only (core.0002), as the restricted rows'
do, so it runs on a Citus shard as well.
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0002_full_access_function'),
        ('tenancy', '0006_audit_sealed_after_commit'),
    ]

    operations = [
        core.db.operations.NarrowTenantPolicy(
            'audit_events',
            using="tenant_id = ANY (app_full_access_tenant_ids())",
            check="true",
        ),
    ]
