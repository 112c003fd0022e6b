"""Validate the checks documents.0018_document_ingestion_stages added NOT VALID.

In a migration of its own: VALIDATE CONSTRAINT scans the rows under a lock that blocks
neither reads nor writes. Going back leaves them valid.
"""

from django.contrib.postgres.operations import ValidateConstraint

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0018_document_ingestion_stages'),
    ]

    operations = [
        ValidateConstraint(model_name='document', name='documents_status_valid'),
        ValidateConstraint(model_name='document', name='documents_attempts_gte_0'),
    ]
