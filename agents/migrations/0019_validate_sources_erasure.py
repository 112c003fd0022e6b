"""Validate the constraints agents.0018_sources_erasure added NOT VALID.

In a migration of its own: VALIDATE CONSTRAINT scans the rows under a lock that blocks
neither reads nor writes. Going back leaves them valid.
"""

from django.contrib.postgres.operations import ValidateConstraint

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0018_sources_erasure'),
    ]

    operations = [
        ValidateConstraint(model_name='executionsource', name='execution_sources_chunk_sha256_matches'),
        ValidateConstraint(model_name='executionsource', name='execution_sources_erased_empty'),
    ]
