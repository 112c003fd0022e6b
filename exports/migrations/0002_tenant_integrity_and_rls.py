"""Row-level security on exports, and the composite key that pins an export to its
project's tenant (docs/security.md; core.db.operations).

The table existed before this migration, so the key is added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
exports.0003_validate_tenant_foreign_keys validates it afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.db.operations
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('exports', '0001_initial'),
        ('documents', '0002_tenant_integrity_and_rls'),
    ]

    operations = [
        core.db.operations.AddTenantForeignKey('exports', 'exports_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE', not_valid=True),
        core.db.operations.EnableTenantRLS('exports'),
    ]
