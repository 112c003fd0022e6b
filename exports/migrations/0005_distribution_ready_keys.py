"""Drop the single-column foreign key exports.project_id -> projects (docs/operations.md).

The composite key (tenant_id, project_id) -> projects (tenant_id, id) of exports.0002
enforces the same reference with the same ON DELETE CASCADE; a key without tenant_id is
what a Citus cluster cannot keep between tables distributed by tenant. A catalog change.
"""

import django.db.models.deletion
from django.db import migrations, models

import core.db.operations


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0008_distribution_ready_keys'),
        ('exports', '0004_unfinished_expiry_index'),
    ]

    operations = [
        core.db.operations.drop_foreign_key(
            migrations.AlterField(
                model_name='export',
                name='project',
                field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='exports', to='documents.project'),
            ),
            table='exports', column='project_id', target='projects',
        ),
    ]
