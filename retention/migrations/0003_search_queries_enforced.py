"""Search queries are enforced by `manage.py retention` from here (docs/operations.md,
"Retention"): the field's help text says so. A state-only change."""

import core.db.operations
import django.core.validators
from django.db import migrations, models


class Migration(core.db.operations.Migration):

    dependencies = [
        ('retention', '0002_audit_events_enforced'),
    ]

    operations = [
        migrations.AlterField(
            model_name='retentionpolicy',
            name='search_queries_days',
            field=models.IntegerField(blank=True, help_text='Days to keep search queries (the search log); empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)]),
        ),
    ]
