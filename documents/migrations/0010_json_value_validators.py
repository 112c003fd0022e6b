"""Every JSON field becomes core.models.JSONField (docs/services.md), and validators.

Its validation refuses NaN, Infinity, numbers beyond a double's range, values nested
deeper than JSON_MAX_DEPTH and larger than JSON_MAX_BYTES, naming the field. The scores'
range (0-100, as their check constraints) and a bound on template tags and tech stack
items (their GIN index refuses large entries) are validated in Python too. Python-side
only: no column changes and no SQL runs (sqlmigrate prints none).
"""

import django.contrib.postgres.fields
import django.core.validators
from django.db import migrations, models

import core.models
import core.db.operations


class Migration(core.db.operations.Migration):

    dependencies = [
        ('documents', '0009_refuse_writes_to_deleted_projects'),
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
            name='grammar_score',
            field=models.FloatField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(0), django.core.validators.MaxValueValidator(100)]),
        ),
        migrations.AlterField(
            model_name='documentversion',
            name='metadata',
            field=core.models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='documentversion',
            name='readability_score',
            field=models.FloatField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(0), django.core.validators.MaxValueValidator(100)]),
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
        migrations.AlterField(
            model_name='projecttemplate',
            name='tags',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.TextField(validators=[django.core.validators.MaxLengthValidator(200)]), blank=True, default=list, size=None),
        ),
        migrations.AlterField(
            model_name='projecttemplate',
            name='tech_stack',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.TextField(validators=[django.core.validators.MaxLengthValidator(200)]), blank=True, default=list, size=None),
        ),
    ]
