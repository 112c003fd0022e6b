"""Row-level security on memberships (DESIGN.md section 7; core.operations).

`own_memberships` lets a user read (only read) their own memberships (app.user_id), so
the tenant middleware can learn which tenants to set; every write needs the tenant set."""

import core.operations
import core.safe_migration


class Migration(core.safe_migration.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('tenancy', '0001_initial'),
    ]

    operations = [
        core.operations.EnableTenantRLS('memberships'),
        core.operations.AddReadPolicy('memberships', 'own_memberships', using='user_id = app_current_user_id()'),
    ]
