"""Documents show their ingestion stage (docs/services.md, "Ingestion on the worker").

`uploaded` becomes `queued` and `processing` becomes `chunking` (a worker held it: the
processing lease still applies); `attempts` counts the times a worker took a document on.
The status check is replaced, and the attempts' check added, NOT VALID in the same transaction (no scan under the lock);
documents.0019 validates both. Back: queued -> uploaded, chunking and embedding -> processing.
"""

from django.conf import settings
from django.contrib.postgres.operations import AddConstraintNotValid
from django.db import migrations, models

import core.db.operations

# The owner passes row-level security only with the bypass on (the system_bypass policy);
# the audit trail records the change as this migration's.
_AS_MIGRATION = """
SELECT set_config('app.rls_bypass', 'on', true),
       set_config('app.actor', 'job:migration documents.0018', true);
"""
FORWARD = _AS_MIGRATION + """
UPDATE documents SET status = 'queued' WHERE status = 'uploaded';
UPDATE documents SET status = 'chunking' WHERE status = 'processing';
"""
BACKWARD = _AS_MIGRATION + """
UPDATE documents SET status = 'uploaded' WHERE status = 'queued';
UPDATE documents SET status = 'processing' WHERE status IN ('chunking', 'embedding');
"""


class Migration(core.db.operations.Migration):

    dependencies = [
        ('documents', '0017_validate_versions_redaction'),
        ('tenancy', '0008_audit_erasable_values_and_anchors'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='document',
            name='documents_status_valid',
        ),
        migrations.AddField(
            model_name='document',
            name='attempts',
            field=models.SmallIntegerField(db_default=0, default=0),
        ),
        migrations.AlterField(
            model_name='document',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('chunking', 'Chunking'), ('embedding', 'Embedding'), ('ready', 'Ready'), ('failed', 'Failed')], default='queued', max_length=16),
        ),
        migrations.RunSQL(sql=FORWARD, reverse_sql=BACKWARD),
        AddConstraintNotValid(
            model_name='document',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['queued', 'chunking', 'embedding', 'ready', 'failed'])), name='documents_status_valid'),
        ),
        AddConstraintNotValid(
            model_name='document',
            constraint=models.CheckConstraint(condition=models.Q(('attempts__gte', 0)), name='documents_attempts_gte_0'),
        ),
    ]
