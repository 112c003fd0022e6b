"""The base of our migrations: their locks wait at most MIGRATION_LOCK_TIMEOUT (DESIGN.md §8).

A DDL statement that waits for a strong lock (an ALTER TABLE behind one long-running
transaction) makes every later query on that table queue behind it, so a migration
stuck on a lock stops the application. With `lock_timeout` the statement fails
instead, the migration rolls back (or, if not atomic, stops where it was), and
`migrate` can be run again at a quieter moment.

Every migration of our apps subclasses `Migration` below instead of Django's; its
SQL (`sqlmigrate`) then starts with the `SET lock_timeout` that squawk's
require-lock-timeout rule looks for (`make lint`). Being the migration's own class,
not an operation, it also covers `migrate <app> <earlier>`, whose operations run in
reverse order.
"""

from django.conf import settings
from django.db import migrations


class Migration(migrations.Migration):
    """A migration whose statements give up after settings.MIGRATION_LOCK_TIMEOUT on a lock."""

    def apply(self, project_state, schema_editor, collect_sql=False):
        _set_lock_timeout(schema_editor)
        state = super().apply(project_state, schema_editor, collect_sql)
        _reset_lock_timeout(schema_editor)
        return state

    def unapply(self, project_state, schema_editor, collect_sql=False):
        _set_lock_timeout(schema_editor)
        state = super().unapply(project_state, schema_editor, collect_sql)
        _reset_lock_timeout(schema_editor)
        return state


def _set_lock_timeout(schema_editor) -> None:
    # In one transaction SET LOCAL ends with it, whether it commits or rolls back. A
    # non-atomic migration commits statement by statement, so only the session can hold it.
    scope = "LOCAL " if schema_editor.atomic_migration else ""
    schema_editor.execute(f"SET {scope}lock_timeout = %s", [settings.MIGRATION_LOCK_TIMEOUT])


def _reset_lock_timeout(schema_editor) -> None:
    if not schema_editor.atomic_migration:
        schema_editor.execute("RESET lock_timeout")
