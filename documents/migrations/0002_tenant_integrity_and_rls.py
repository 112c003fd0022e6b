"""Row-level security on projects, document_versions, documents and chunks, and the
composite keys that pin a child row to its parent's tenant (docs/security.md;
core.db.operations).

The tables existed before this migration, so the keys are added NOT VALID: new rows are
checked at once, and no scan of existing rows holds both tables locked.
documents.0006_validate_tenant_foreign_keys validates them afterwards in a transaction of its
own, under a lock that blocks neither reads nor writes."""

import core.db.operations
import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('core', '0001_tenant_context_functions'),
        ('documents', '0001_initial'),
    ]

    operations = [
        core.db.operations.AddTenantForeignKey('document_versions', 'document_versions_project_tenant_fk', column='project_id', to='projects', on_delete='CASCADE', not_valid=True),
        core.db.operations.AddTenantForeignKey('documents', 'documents_project_tenant_fk', column='project_id', to='projects', on_delete='SET NULL', not_valid=True),
        core.db.operations.AddTenantForeignKey('chunks', 'chunks_document_tenant_fk', column='document_id', to='documents', on_delete='CASCADE', not_valid=True),
        core.db.operations.EnableTenantRLS('projects'),
        core.db.operations.EnableTenantRLS('document_versions'),
        core.db.operations.EnableTenantRLS('documents'),
        core.db.operations.EnableTenantRLS('chunks'),
    ]
