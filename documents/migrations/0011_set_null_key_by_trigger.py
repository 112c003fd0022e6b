"""documents.project_id: its ON DELETE SET NULL done by a trigger on projects, not the key.

Citus refuses a foreign key whose ON DELETE is SET NULL when the key holds the
distribution column, even PostgreSQL's `SET NULL (project_id)` that leaves tenant_id
alone. The key becomes NO ACTION (added again NOT VALID, validated by the next
migration) and an AFTER DELETE trigger on projects clears project_id in the deleted
project's tenant's documents before the key checks
(core.db.operations.AddTenantForeignKey). Deleting a project still leaves its
documents, unassigned.
"""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0010_json_value_validators'),
    ]

    operations = [
        core.db.operations.MoveSetNullToTrigger('documents', 'documents_project_tenant_fk', column='project_id', to='projects'),
    ]
