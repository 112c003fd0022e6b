"""Row-level security on memberships (docs/security.md; core.db.operations).

`own_memberships` lets a user read (only read) their own memberships (app.user_id), so
the tenant middleware can learn which tenants to set; every write needs the tenant set."""

import core.db.operations
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('tenancy', '0001_initial'),
    ]

    operations = [
        core.db.operations.EnableTenantRLS('memberships'),
        core.db.operations.AddReadPolicy('memberships', 'own_memberships', using='user_id = app_current_user_id()'),
    ]
