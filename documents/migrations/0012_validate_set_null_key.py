"""Validate documents_project_tenant_fk, added again NOT VALID by documents.0011.

In a migration of its own, as documents.0006: VALIDATE CONSTRAINT scans the rows under
a lock that blocks neither reads nor writes. Going back leaves the key valid.
"""

from django.contrib.postgres.operations import ValidateConstraint

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0011_set_null_key_by_trigger'),
    ]

    operations = [
        ValidateConstraint(model_name='document', name='documents_project_tenant_fk'),
    ]
