"""A partial index for the purge's second arm: builds that died pending or running.

exports holds every export ever made, so it is built without blocking writes
(CONCURRENTLY, which cannot run in a transaction: not atomic)."""

import core.db.operations
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import models


class Migration(core.db.operations.Migration):
    atomic = False

    dependencies = [
        ('exports', '0003_validate_tenant_foreign_keys'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='export',
            index=models.Index(condition=models.Q(('status__in', ['pending', 'running'])), fields=['expires_at'], name='exports_unfinished_expiry_idx'),
        ),
    ]
