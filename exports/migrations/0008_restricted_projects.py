"""A restricted project's exports are hidden with it (docs/security.md, "Restricted
rows"; documents.0013)."""

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('exports', '0007_json_value_validators'),
        ('documents', '0013_restricted_rows_and_access_grants'),
    ]

    operations = [
        core.db.operations.NarrowTenantPolicy(
            'exports', using="project_id <> ALL ((SELECT app_hidden_project_ids())::uuid[])"
        ),
    ]
