"""One document per tenant and SHA-256 (unless kept with allow_duplicate), as a unique
index built concurrently.

Documents uploaded twice before this rule existed are kept, not refused: first every
such document but the oldest of its tenant and hash is marked `duplicate_allowed`
(one UPDATE, as the owner with the logged bypass, audited as `job:migration`), then the
index is built CONCURRENTLY (no lock on writes). An upload of the same bytes by an
application server still running the old code, between the UPDATE and the end of the
build, fails the build and leaves an INVALID index: run `migrate` again. It drops the
invalid index first (IF EXISTS) and marks again, so a re-run starts clean.
"""

from django.db import migrations, models

import core.db.operations

INDEX = 'documents_tenant_sha256_uniq'

MARK_EARLIER_DUPLICATES = """
DO $$
BEGIN
    PERFORM set_config('app.rls_bypass', 'on', true);
    PERFORM set_config('app.actor', 'job:migration', true);
    UPDATE documents d SET duplicate_allowed = true
      FROM (SELECT tenant_id, id,
                   row_number() OVER (PARTITION BY tenant_id, sha256 ORDER BY id) AS n
              FROM documents
             WHERE sha256 <> '' AND NOT duplicate_allowed) ranked
     WHERE d.tenant_id = ranked.tenant_id AND d.id = ranked.id AND ranked.n > 1;
END
$$;
"""


class Migration(core.db.operations.Migration):
    # CREATE UNIQUE INDEX CONCURRENTLY cannot run in a transaction.
    atomic = False

    dependencies = [
        ('documents', '0021_embedding_cache_and_allowed_duplicates'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}";',
                    reverse_sql=migrations.RunSQL.noop,
                ),
                # Going back keeps the marks: they only exempt documents from a rule
                # that is then gone.
                migrations.RunSQL(sql=MARK_EARLIER_DUPLICATES, reverse_sql=migrations.RunSQL.noop),
                # The index Django makes for the constraint below, concurrently. IF NOT
                # EXISTS cannot keep an INVALID index of a failed build: the DROP above
                # removed it.
                migrations.RunSQL(
                    sql=(
                        f'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" ON "documents" '
                        '("tenant_id", "sha256") '
                        """WHERE (NOT "duplicate_allowed" AND NOT ("sha256" = ''));"""
                    ),
                    reverse_sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}";',
                ),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name='document',
                    constraint=models.UniqueConstraint(condition=models.Q(('duplicate_allowed', False), models.Q(('sha256', ''), _negated=True)), fields=('tenant', 'sha256'), name=INDEX),
                ),
            ],
        ),
    ]
