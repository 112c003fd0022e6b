"""The partial indexes on restricted projects and documents, built concurrently.

They find a tenant's restricted rows (the admin's Restricted filter) without reading
its every row: restricted rows are few, so these indexes stay small whatever the
tenant's size.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import models

import core.db.operations


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('documents', '0014_restricted_rows_and_access_grants'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='project',
            index=models.Index(condition=models.Q(('restricted', True)), fields=['tenant'], name='projects_restricted_idx'),
        ),
        AddIndexConcurrently(
            model_name='document',
            index=models.Index(condition=models.Q(('restricted', True)), fields=['tenant'], name='documents_restricted_idx'),
        ),
    ]
