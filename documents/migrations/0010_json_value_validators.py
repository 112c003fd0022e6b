"""Every JSON field becomes core.models.JSONField (DESIGN.md section 8).

Its validation refuses NaN, Infinity, numbers beyond a double's range, values nested
deeper than JSON_MAX_DEPTH and larger than JSON_MAX_BYTES, naming the field. Python-side
only: the column stays jsonb and no SQL runs (sqlmigrate prints none).
"""

from django.db import migrations

import core.models
import core.safe_migration


class Migration(core.safe_migration.Migration):

    dependencies = [
        ('documents', '0008_distribution_ready_keys'),
    ]

    operations = [
        migrations.AlterField(
            model_name='chunk',
            name='metadata',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='document',
            name='metadata',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='documentversion',
            name='metadata',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='project',
            name='metadata',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='projecttemplate',
            name='files',
            field=core.models.JSONField(blank=True, default=dict),
        ),
    ]
