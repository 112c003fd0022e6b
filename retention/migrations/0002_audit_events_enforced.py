"""Audit events are enforced by `manage.py retention` from here (docs/operations.md,
"Retention of audit events"): the field's help text says so. A state-only change."""

import core.db.operations
import django.core.validators
from django.db import models, migrations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('retention', '0001_retention_policies_and_runs'),
    ]

    operations = [
        migrations.AlterField(
            model_name='retentionpolicy',
            name='audit_events_days',
            field=models.IntegerField(blank=True, help_text='Days to keep audit events (the chain is cut, not broken); empty for the default (RETENTION_DEFAULT_DAYS).', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(36500)]),
        ),
    ]
