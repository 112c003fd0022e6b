"""A restricted project's exports are hidden with it (docs/security.md, "Restricted
rows"; documents.0014): restricted_to from the project (AddRowAccess)."""

import core.db.operations

ROW_ACCESS = [core.db.operations.AddRowAccess('exports', parents={'project_id': 'projects'})]


class Migration(core.db.operations.Migration):
    dependencies = [
        ('exports', '0008_audit_trail'),
        ('documents', '0014_restricted_rows_and_access_grants'),
    ]

    operations = ROW_ACCESS
