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
from django.db import migrations, models


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


class ReplaceUniqueConstraint(migrations.operations.base.Operation):
    """Swap a unique constraint of a table that holds rows for `new`, without a long lock.

    The new index is built CONCURRENTLY (so the migration must be `atomic = False`),
    then one ALTER TABLE drops the old constraint and turns the index into the new one
    (ADD CONSTRAINT ... USING INDEX: no second build, a brief lock). For plain-column,
    non-partial constraints, the kind USING INDEX accepts. Reversible the same way.
    """

    reversible = True

    def __init__(self, model_name: str, old: models.UniqueConstraint, new: models.UniqueConstraint):
        self.model_name, self.old, self.new = model_name, old, new

    def deconstruct(self):
        return (self.__class__.__name__, [self.model_name, self.old, self.new], {})

    def state_forwards(self, app_label, state):
        state.remove_constraint(app_label, self.model_name.lower(), self.old.name)
        state.add_constraint(app_label, self.model_name.lower(), self.new)

    def _swap(self, app_label, schema_editor, state, drop, add) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        quote = schema_editor.quote_name
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(model._meta.get_field(name).column) for name in add.fields)
        building = quote(f"{add.name}_building")
        schema_editor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {building} ON {table} ({columns})")
        schema_editor.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {quote(drop.name)}, "
            f"ADD CONSTRAINT {quote(add.name)} UNIQUE USING INDEX {building}"
        )

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._swap(app_label, schema_editor, to_state, self.old, self.new)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._swap(app_label, schema_editor, to_state, self.new, self.old)

    def describe(self):
        return (
            f"Replace unique constraint {self.old.name} with {self.new.name} on {self.model_name}"
        )

    @property
    def migration_name_fragment(self):
        return f"replace_{self.old.name}"


def drop_foreign_key(
    alter_field: migrations.AlterField, *, table: str, column: str, target: str
) -> migrations.SeparateDatabaseAndState:
    """`alter_field` (a ForeignKey turned db_constraint=False) with SQL that names no key.

    Django's own operation finds the key's name by reading the database, so its
    `sqlmigrate` output, read from a migrated database, drops nothing (and a replay of
    it, as `make bench` does, keeps the key). This drops every single-column foreign key
    on `column` found when it runs; backwards it declares the key again.
    """
    drop = f"""
DO $$ DECLARE name text; BEGIN
    FOR name IN SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass
        AND contype = 'f' AND conkey = ARRAY[(SELECT attnum FROM pg_attribute
            WHERE attrelid = '{table}'::regclass AND attname = '{column}')]
    LOOP
        EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I', name);
    END LOOP;
END $$;
"""
    add = (
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_fk FOREIGN KEY ({column}) "
        f"REFERENCES {target} (id) DEFERRABLE INITIALLY DEFERRED;"
    )
    return migrations.SeparateDatabaseAndState(
        database_operations=[migrations.RunSQL(sql=drop, reverse_sql=add)],
        state_operations=[alter_field],
    )
