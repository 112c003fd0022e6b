"""Every JSON field becomes core.models.JSONField (docs/services.md).

Its validation refuses NaN, Infinity, numbers beyond a double's range, values nested
deeper than JSON_MAX_DEPTH and larger than JSON_MAX_BYTES, naming the field. Python-side
only: the column stays jsonb and no SQL runs (sqlmigrate prints none).
"""

from django.db import migrations

import core.models
import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('tenancy', '0002_row_level_security'),
    ]

    operations = [
        migrations.AlterField(
            model_name='tenant',
            name='settings',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='user',
            name='profile_data',
            field=core.models.JSONField(blank=True, default=dict),
        ),
    ]
