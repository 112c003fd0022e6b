"""Validate the composite tenant keys added NOT VALID by documents.0002_tenant_integrity_and_rls.

VALIDATE CONSTRAINT scans the existing rows under a SHARE UPDATE EXCLUSIVE lock (ROW
SHARE on the referenced table), which blocks neither reads nor writes; in the
transaction that added the key it would scan under that transaction's stronger locks
(docs/operations.md), hence a migration of its own. Validating a valid key does
nothing. Going back leaves the keys valid: PostgreSQL cannot make a constraint NOT
VALID again, and the earlier migration means a valid key anyway."""

import core.db.operations
from django.contrib.postgres.operations import ValidateConstraint


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0005_versions_hash_chain_immutable'),
    ]

    operations = [
        ValidateConstraint(model_name='documentversion', name='document_versions_project_tenant_fk'),
        ValidateConstraint(model_name='document', name='documents_project_tenant_fk'),
        ValidateConstraint(model_name='chunk', name='chunks_document_tenant_fk'),
    ]
