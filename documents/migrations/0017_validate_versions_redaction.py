"""Validate the constraints documents.0016_versions_redaction added NOT VALID.

In a migration of its own: VALIDATE CONSTRAINT scans the rows under a lock that blocks
neither reads nor writes. Going back leaves them valid.
"""

from django.contrib.postgres.operations import ValidateConstraint

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0016_versions_redaction'),
    ]

    operations = [
        ValidateConstraint(model_name='documentversion', name='document_versions_content_sha256_matches'),
        ValidateConstraint(model_name='documentversion', name='document_versions_redacted_tombstone'),
    ]
