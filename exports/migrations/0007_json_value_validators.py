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
        ('exports', '0006_refuse_writes_to_deleted_projects'),
    ]

    operations = [
        migrations.AlterField(
            model_name='export',
            name='manifest',
            field=core.models.JSONField(blank=True, default=dict),
        ),
    ]
