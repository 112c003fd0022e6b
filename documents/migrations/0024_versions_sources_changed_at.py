"""A version built on changed sources: `sources_changed_at`, set by agents' stale-source
triggers (agents.0021, docs/architecture.md "Stale outputs"). A nullable column without
a default: a change of the catalog only, no rewrite of the table."""

from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0022_documents_sha256_unique'),
    ]

    operations = [
        migrations.AddField(
            model_name='documentversion',
            name='sources_changed_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
