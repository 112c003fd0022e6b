"""Every custom migration operation, in one module: what our migrations import.

- `Migration`, the base of our migrations: their locks wait at most
  MIGRATION_LOCK_TIMEOUT (docs/operations.md).
- The DDL every tenant table needs (docs/security.md): `EnableTenantRLS`,
  `AddReadPolicy`, `AddTenantForeignKey` (and `MoveSetNullToTrigger`, which turned the
  keys' own ON DELETE SET NULL into the trigger Citus accepts), and the access below
  the tenant (restricted projects and documents): `AddRowAccess`, `AddAccessGrants`,
  `NarrowTenantPolicy`.
- Changes to tables that hold rows, without long locks: `ReplaceUniqueConstraint`,
  `drop_foreign_key`, `AddIndexToPartitionsConcurrently` (an index on a partitioned
  table, built partition by partition).
- `PartitionByIdMonth` (docs/operations.md; the partition logic is core.db.partitions).
- The audit trail (docs/security.md; its SQL is core.db.audit): `CreateAuditFunctions`,
  `AuditTable` on every tenant table and the global ones, `AppendOnlyTable` on the
  event tables.
- `KeepColumnInHeap`: a column out of TOAST while its row fits a page (chunks' vectors).
- `create_extension_if_missing`.

In the style of django.contrib.postgres.operations.CreateExtension: each operation is one
intention, reversible, free of app imports (tables are named, not models), and neutral to
the migration state where the models do not describe what it does (row-level security,
composite keys), so `makemigrations` never sees it. A migration then reads as a list of
intentions:

    EnableTenantRLS("chunks"),
    AddTenantForeignKey("chunks", "chunks_document_tenant_fk", column="document_id",
                        to="documents", on_delete="CASCADE", not_valid=True),

The policies use the functions of core.0001_tenant_context_functions; a migration using
these operations depends on it.

Why `Migration` sets a lock timeout: a DDL statement that waits for a strong lock (an
ALTER TABLE behind one long-running transaction) makes every later query on that table
queue behind it, so a migration stuck on a lock stops the application. With
`lock_timeout` the statement fails instead, the migration rolls back (or, if not atomic,
stops where it was), and `migrate` can be run again at a quieter moment. Every migration
of our apps subclasses it instead of Django's; its SQL (`sqlmigrate`) then starts with the
`SET lock_timeout` that squawk's require-lock-timeout rule looks for (`make lint`). Being
the migration's own class, not an operation, it also covers `migrate <app> <earlier>`,
whose operations run in reverse order.
"""

from __future__ import annotations

from django.conf import settings
from django.db import migrations, models, router
from django.db.migrations.operations.base import Operation

from core.db import audit
from core.db.backend.base import CITUS_PRESENT_SQL
from core.db.partitions import one_connection_per_node, partition_names, rebuild
from core.db.roles import SYSTEM_BYPASS_POLICY

TENANT_ISOLATION_POLICY = "tenant_isolation"
TENANT_IN_CONTEXT = "tenant_id = ANY (app_current_tenant_ids())"
ON_DELETE_ACTIONS = (None, "CASCADE", "SET NULL")


def create_extension_if_missing(
    name: str, *, reverse_sql: str = migrations.RunSQL.noop
) -> migrations.RunSQL:
    """CREATE EXTENSION only where the extension is absent.

    Not `CREATE EXTENSION IF NOT EXISTS`: on a Citus coordinator that statement is
    propagated to the workers even when the extension exists, and there it needs the
    extension's owner, so the non-superuser owner running `migrate` was refused by an
    extension the bootstrap had created (docs/operations.md, "Citus").
    """
    return migrations.RunSQL(
        sql=(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = "
            f"'{name}') THEN CREATE EXTENSION {name}; END IF; END $$"
        ),
        reverse_sql=reverse_sql,
    )


class _SQLOperation(Operation):
    """An operation that runs statements forwards and others backwards, and changes no state."""

    reversible = True
    reduces_to_sql = True

    def forwards_sql(self, quote) -> list[str]:
        raise NotImplementedError

    def backwards_sql(self, quote) -> list[str]:
        raise NotImplementedError

    def state_forwards(self, app_label, state) -> None:
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        self._run(app_label, schema_editor, self.forwards_sql(schema_editor.quote_name))

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        self._run(app_label, schema_editor, self.backwards_sql(schema_editor.quote_name))

    def _run(self, app_label, schema_editor, statements: list[str]) -> None:
        # Like RunSQL: a database the router keeps this app out of gets nothing.
        if not router.allow_migrate(schema_editor.connection.alias, app_label):
            return
        for statement in statements:
            schema_editor.execute(statement, params=None)


def _create_bypass_policy(quote, table: str) -> str:
    # Granted to the role running the migration (the owner), whatever its name on this
    # server: only that role's system jobs (tenancy.context.system_context) may bypass.
    # format() runs in the server, so the statement is the same in sqlmigrate's output.
    return (
        "DO $$ BEGIN EXECUTE format("
        f"'CREATE POLICY {SYSTEM_BYPASS_POLICY} ON {quote(table)} TO %I "
        "USING (app_rls_bypassed()) WITH CHECK (app_rls_bypassed())', current_user); END $$"
    )


class EnableTenantRLS(_SQLOperation):
    """Row-level security enabled and FORCED on a tenant table, with its two policies.

    - `tenant_isolation` (every command, every role): the rows of the tenants set for
      the current transaction (app.tenant_ids); none when no tenant is set.
    - `system_bypass`: the owner role, only while app.rls_bypass is on (the explicit,
      logged bypass of system jobs).

    FORCE makes the owner subject too. Policies are dropped before they are created, so a
    re-run after a partial failure converges. Backwards removes both and turns it off.
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def forwards_sql(self, quote) -> list[str]:
        table = quote(self.table)
        return [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS {TENANT_ISOLATION_POLICY} ON {table}",
            f"CREATE POLICY {TENANT_ISOLATION_POLICY} ON {table} "
            f"USING ({TENANT_IN_CONTEXT}) WITH CHECK ({TENANT_IN_CONTEXT})",
            f"DROP POLICY IF EXISTS {SYSTEM_BYPASS_POLICY} ON {table}",
            _create_bypass_policy(quote, self.table),
        ]

    def backwards_sql(self, quote) -> list[str]:
        table = quote(self.table)
        return [
            f"DROP POLICY IF EXISTS {SYSTEM_BYPASS_POLICY} ON {table}",
            f"DROP POLICY IF EXISTS {TENANT_ISOLATION_POLICY} ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ]

    def describe(self) -> str:
        return f"Enable and force row-level security on {self.table} (tenant isolation)"

    @property
    def migration_name_fragment(self) -> str:
        return f"tenant_rls_{self.table}"


class AddReadPolicy(_SQLOperation):
    """A SELECT-only policy beside tenant isolation: rows readable, never writable, by `using`.

    Permissive policies add up, so this widens what can be read (a user's own
    memberships, the templates shared by all tenants) and nothing else: every write
    still needs tenant_isolation (or the system bypass).
    """

    def __init__(self, table: str, name: str, *, using: str) -> None:
        self.table = table
        self.name = name
        self.using = using

    def forwards_sql(self, quote) -> list[str]:
        table, name = quote(self.table), quote(self.name)
        return [
            f"DROP POLICY IF EXISTS {name} ON {table}",
            f"CREATE POLICY {name} ON {table} FOR SELECT USING ({self.using})",
        ]

    def backwards_sql(self, quote) -> list[str]:
        return [f"DROP POLICY IF EXISTS {quote(self.name)} ON {quote(self.table)}"]

    def describe(self) -> str:
        return f"Create read policy {self.name} on {self.table}"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.table}_{self.name}"


class NarrowTenantPolicy(_SQLOperation):
    """tenant_isolation of `table`, and of each of its partitions, narrowed by `using`:
    the rows of the tenants in context for which `using` also holds.

    `check` (default: `using`) narrows the WITH CHECK side alone, where writes need more
    than reads (a grant is read by its user, written by owners and admins). Partitions
    made later copy their parent's policies (core.db.partitions). Backwards puts the
    plain tenant condition back.
    """

    def __init__(self, table: str, *, using: str, check: str | None = None) -> None:
        self.table = table
        self.using = using
        self.check = check

    def _alter(self, quote, using: str, check: str) -> list[str]:
        # Each expression travels as a dollar-quoted literal into format()'s %s.
        table = quote(self.table)
        return [
            "DO $do$ DECLARE part regclass; BEGIN "
            f"FOR part IN SELECT '{table}'::regclass UNION ALL "
            f"SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = '{table}'::regclass "
            f"LOOP EXECUTE format('ALTER POLICY {TENANT_ISOLATION_POLICY} ON %s "
            "USING (%s) WITH CHECK (%s)', part, "
            f"$expr${using}$expr$, $expr${check}$expr$); END LOOP; END $do$"
        ]

    def forwards_sql(self, quote) -> list[str]:
        using = f"{TENANT_IN_CONTEXT} AND ({self.using})"
        check = f"{TENANT_IN_CONTEXT} AND ({self.check or self.using})"
        return self._alter(quote, using, check)

    def backwards_sql(self, quote) -> list[str]:
        return self._alter(quote, TENANT_IN_CONTEXT, TENANT_IN_CONTEXT)

    def describe(self) -> str:
        return f"Narrow {TENANT_ISOLATION_POLICY} of {self.table} to the rows its user may see"

    @property
    def migration_name_fragment(self) -> str:
        return f"narrow_policy_{self.table}"


# Who may see a row below its tenant (docs/security.md, "Restricted rows"): the row's
# own column and the transaction's settings only, no subquery, so the policy is the same
# cheap filter on one server and on every Citus shard.
ROW_VISIBLE = (
    "restricted_to IS NULL OR tenant_id = ANY (app_full_access_tenant_ids()) "
    "OR app_current_user_id() = ANY (restricted_to)"
)
RESTRICTED_TO_TRIGGER = "restricted_to"


def access_trigger_function_sql(name: str, body: str, *, declare: str = "") -> str:
    """A trigger function of the access lists: it reads and writes the rows of its own
    tenant whoever the writer may see, so it runs as the owner (SECURITY DEFINER) with
    the owner's bypass (the system_bypass policies) on for its own statements only, and
    off again before it returns; search_path pinned, names schema-qualified."""
    return (
        f"CREATE OR REPLACE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ DECLARE "
        f"bypass text := current_setting('app.rls_bypass', true); {declare} BEGIN "
        f"PERFORM set_config('app.rls_bypass', 'on', true); {body} "
        "PERFORM set_config('app.rls_bypass', coalesce(bypass, ''), true); "
        "RETURN NEW; END $$"
    )


# Who may see a row is the owners' and admins' decision (or a system job's, or the
# grants' trigger, which runs with the bypass): the database refuses anyone else a
# change of `restricted` or `access_user_ids`, so an editor cannot put themselves on a
# list before the row is restricted. `bypass` is the writer's own setting.
OWN_LIST_GUARD = (
    "IF (CASE WHEN TG_OP = 'INSERT' THEN NEW.restricted OR NEW.access_user_ids <> '{}' "
    "ELSE (OLD.restricted, OLD.access_user_ids) IS DISTINCT FROM "
    "(NEW.restricted, NEW.access_user_ids) END) "
    "AND NOT (coalesce(NEW.tenant_id = ANY (public.app_full_access_tenant_ids()), false) "
    "OR coalesce(bypass, '') = 'on') THEN "
    'RAISE EXCEPTION \'new row violates row-level security policy for table "%": only '
    "the tenant''s owners and admins change who may see its rows', TG_TABLE_NAME "
    "USING ERRCODE = '42501'; END IF;"
)


class AddRowAccess(_SQLOperation):
    """`table` carries who may see it, `restricted_to uuid[]` (NULL: every member of the
    tenant), and its tenant_isolation policy admits a row by it (ROW_VISIBLE).

    restricted_to is derived, never written: a BEFORE INSERT OR UPDATE trigger
    (`restricted_to`) sets it from
    - the row's own list when `own` (projects, documents: `restricted` and the
      `access_user_ids` that AddAccessGrants keeps; changed by owners and admins only,
      OWN_LIST_GUARD), and
    - the restricted_to of each parent in `parents` (column -> table), read by
      (tenant_id, id): the tenant's own co-located shard on Citus. A NULL column adds
      nothing, nor does a parent not found in the row's tenant (its key refuses the
      row); `loose` names parents without a key (a snapshot that may outlive them).
    Several lists meet: a user must be in all of them. The policy's WITH CHECK then
    refuses a row its writer may not see, a child of a restricted project included.
    An AFTER UPDATE trigger on each parent (`access_<table>_<column>`) touches the rows
    of a parent whose restricted_to changed, filtered on its tenant, and their own
    trigger derives them again, so a restriction, a grant or a revocation reaches
    everything below in the same statement. Both read and write rows their writer may
    not see (access_trigger_function_sql).

    Backwards drops the triggers, the columns and puts the plain tenant policy back.
    """

    def __init__(
        self,
        table: str,
        *,
        parents: dict[str, str] | None = None,
        loose: dict[str, str] | None = None,
        own: bool = False,
    ) -> None:
        self.table = table
        self.parents = dict(parents or {})
        self.loose = dict(loose or {})
        self.own = own

    def _function(self) -> str:
        return f"{self.table}_restricted_to"

    @staticmethod
    def _follow_names(table: str, column: str) -> tuple[str, str]:
        """The trigger on the parent and its function, for table.column."""
        return f"access_{table}_{column}", f"{table}_{column}_access"

    def _all_parents(self) -> list[tuple[str, str]]:
        return [*self.parents.items(), *self.loose.items()]

    def _derive_sql(self, quote) -> str:
        steps = []
        if self.own:
            steps.append(OWN_LIST_GUARD)
            steps.append("IF NEW.restricted THEN acc := NEW.access_user_ids; END IF;")
        for column, parent in self._all_parents():
            steps.append(
                f"IF NEW.{quote(column)} IS NOT NULL THEN "
                f"SELECT p.restricted_to INTO parent FROM public.{quote(parent)} p "
                f"WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.{quote(column)}; "
                "IF FOUND AND parent IS NOT NULL THEN acc := CASE WHEN acc IS NULL "
                "THEN parent ELSE array(SELECT u FROM unnest(acc) u WHERE u = ANY (parent)) "
                "END; END IF; END IF;"
            )
        steps.append("NEW.restricted_to := acc;")
        return access_trigger_function_sql(
            self._function(), " ".join(steps), declare="acc uuid[]; parent uuid[];"
        )

    def forwards_sql(self, quote) -> list[str]:
        table = quote(self.table)
        columns = ["ADD COLUMN IF NOT EXISTS restricted_to uuid[]"]
        depends = ["restricted_to", *self.parents, *self.loose]
        if self.own:
            columns.append("ADD COLUMN IF NOT EXISTS access_user_ids uuid[] NOT NULL DEFAULT '{}'")
            depends += ["restricted", "access_user_ids"]
        trigger = quote(RESTRICTED_TO_TRIGGER)
        statements = [
            f"ALTER TABLE {table} {', '.join(columns)}",
            self._derive_sql(quote),
            f"DROP TRIGGER IF EXISTS {trigger} ON {table}",
            f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OF "
            f"{', '.join(map(quote, depends))} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {quote(self._function())}()",
        ]
        for column, parent in self._all_parents():
            name, function = self._follow_names(self.table, column)
            statements += [
                # restricted_to = NULL only names the column: the rows' own trigger
                # derives it again from every parent.
                access_trigger_function_sql(
                    function,
                    f"UPDATE public.{table} SET restricted_to = NULL "
                    f"WHERE tenant_id = NEW.tenant_id AND {quote(column)} = NEW.id;",
                ),
                f"DROP TRIGGER IF EXISTS {quote(name)} ON {quote(parent)}",
                f"CREATE TRIGGER {quote(name)} AFTER UPDATE ON {quote(parent)} FOR EACH ROW "
                "WHEN (OLD.restricted_to IS DISTINCT FROM NEW.restricted_to) "
                f"EXECUTE FUNCTION {quote(function)}()",
            ]
        return statements + NarrowTenantPolicy(self.table, using=ROW_VISIBLE).forwards_sql(quote)

    def backwards_sql(self, quote) -> list[str]:
        table = quote(self.table)
        statements = NarrowTenantPolicy(self.table, using=ROW_VISIBLE).backwards_sql(quote)
        for column, parent in self._all_parents():
            name, function = map(quote, self._follow_names(self.table, column))
            statements += [
                f"DROP TRIGGER IF EXISTS {name} ON {quote(parent)}",
                f"DROP FUNCTION IF EXISTS {function}()",
            ]
        columns = ["DROP COLUMN IF EXISTS restricted_to"]
        if self.own:
            columns.append("DROP COLUMN IF EXISTS access_user_ids")
        return [
            *statements,
            f"DROP TRIGGER IF EXISTS {quote(RESTRICTED_TO_TRIGGER)} ON {table}",
            f"DROP FUNCTION IF EXISTS {quote(self._function())}()",
            f"ALTER TABLE {table} {', '.join(columns)}",
        ]

    def describe(self) -> str:
        return f"Restrict the rows of {self.table} to the users its restricted_to lists"

    @property
    def migration_name_fragment(self) -> str:
        return f"row_access_{self.table}"


class AddAccessGrants(_SQLOperation):
    """`grants` (tenant_id, `column`, user_id) lists the users granted rows of `to`;
    an AFTER INSERT, UPDATE and DELETE row trigger keeps `to`.access_user_ids in step,
    filtered on the grant's tenant (the co-located shard on Citus), whoever its writer
    may see (access_trigger_function_sql: a user's deletion removes their grants too).
    array_append and array_remove apply to the row as locked, so concurrent grants to
    one row all land. Only owners and admins write grants (their policy).
    """

    def __init__(self, grants: str, *, column: str, to: str) -> None:
        self.grants = grants
        self.column = column
        self.to = to

    def _names(self) -> tuple[str, str]:
        return "access_user_ids", f"{self.grants}_access_user_ids"

    def forwards_sql(self, quote) -> list[str]:
        name, function = self._names()
        to, column = quote(self.to), quote(self.column)

        def change(row: str, value: str) -> str:
            return (
                f"UPDATE public.{to} SET access_user_ids = {value} "
                f"WHERE tenant_id = {row}.tenant_id AND id = {row}.{column};"
            )

        body = (
            "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
            + change("OLD", "array_remove(access_user_ids, OLD.user_id)")
            + " END IF; IF TG_OP IN ('INSERT', 'UPDATE') THEN "
            + change("NEW", "array_append(array_remove(access_user_ids, NEW.user_id), NEW.user_id)")
            + " END IF;"
        )
        return [
            access_trigger_function_sql(function, body),
            f"DROP TRIGGER IF EXISTS {quote(name)} ON {quote(self.grants)}",
            f"CREATE TRIGGER {quote(name)} AFTER INSERT OR UPDATE OF {column}, user_id "
            f"OR DELETE ON {quote(self.grants)} FOR EACH ROW EXECUTE FUNCTION {quote(function)}()",
        ]

    def backwards_sql(self, quote) -> list[str]:
        name, function = map(quote, self._names())
        return [
            f"DROP TRIGGER IF EXISTS {name} ON {quote(self.grants)}",
            f"DROP FUNCTION IF EXISTS {function}()",
        ]

    def describe(self) -> str:
        return f"Keep {self.to}.access_user_ids in step with {self.grants}"

    @property
    def migration_name_fragment(self) -> str:
        return f"access_grants_{self.grants}"


class AddTenantForeignKey(_SQLOperation):
    """A composite foreign key (tenant_id, column) -> to (tenant_id, id): a child row's
    tenant is its parent's, for every role, the owner included.

    `to` must have a unique (tenant_id, id). `on_delete` is None (NO ACTION), "CASCADE" or
    "SET NULL". `not_valid` adds the key to an existing table without scanning it under
    the ALTER's lock: new rows are checked at once, and a later migration of its own runs
    ValidateConstraint under a lock that blocks no one.

    "SET NULL" clears `column` only, never tenant_id, so the row keeps its tenant. It is
    not the key's own action: Citus refuses ON DELETE SET NULL (even PostgreSQL 15's
    `SET NULL (column)`) on a key that includes the distribution column. The key is NO
    ACTION, and an AFTER DELETE row trigger on `to` (`set_null_trigger_sql`) clears the
    column in the rows of the deleted row's tenant. Filtered on tenant_id, its UPDATE
    runs on the tenant's own co-located shard on a cluster, the one kind of query Citus
    lets a trigger on a shard run. It runs as the deleting role, under its row-level
    security: a child row always has its parent's tenant, so whoever may delete the
    parent sees it.
    """

    def __init__(
        self,
        table: str,
        name: str,
        *,
        column: str,
        to: str,
        on_delete: str | None = None,
        not_valid: bool = False,
    ) -> None:
        if on_delete not in ON_DELETE_ACTIONS:
            raise ValueError(
                f"on_delete of {name}: {on_delete!r} is not one of {ON_DELETE_ACTIONS}"
            )
        self.table = table
        self.name = name
        self.column = column
        self.to = to
        self.on_delete = on_delete
        self.not_valid = not_valid

    def forwards_sql(self, quote) -> list[str]:
        action = " ON DELETE CASCADE" if self.on_delete == "CASCADE" else ""
        statements = [
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} "
            f"FOREIGN KEY (tenant_id, {quote(self.column)}) REFERENCES {quote(self.to)} "
            f"(tenant_id, id){action}{' NOT VALID' if self.not_valid else ''}"
        ]
        if self.on_delete == "SET NULL":
            statements += set_null_trigger_sql(
                quote, self.table, self.name, column=self.column, to=self.to
            )
        return statements

    def backwards_sql(self, quote) -> list[str]:
        return [
            *drop_set_null_trigger_sql(quote, self.name, to=self.to),
            f"ALTER TABLE {quote(self.table)} DROP CONSTRAINT IF EXISTS {quote(self.name)}",
        ]

    def describe(self) -> str:
        return (
            f"Add tenant foreign key {self.name} on {self.table} "
            f"(tenant_id, {self.column}) -> {self.to}"
        )

    @property
    def migration_name_fragment(self) -> str:
        return self.name


def set_null_trigger_name(key: str) -> str:
    """The trigger that does the ON DELETE SET NULL of the key `key`.

    Upper case (quoted) so that it sorts before "RI_ConstraintTrigger_...": the AFTER
    triggers of one row fire in name order, and the key's own NO ACTION check must come
    after the clearing. AFTER, not BEFORE, for the same reason the key's own action was
    an AFTER trigger: when a delete cascades to the row from higher up (a project's
    delete reaching its versions and its executions), the clearing waits for the end
    of that statement, when the sibling cascade has deleted the referencing rows; a
    BEFORE trigger would update them first, and the update of a row inserted in the
    same transaction checks its other keys again, against a project already gone.
    """
    return f"ON_DELETE_SET_NULL_{key}"


def set_null_function_name(key: str) -> str:
    return f"{key}_set_null"


def set_null_trigger_sql(quote, table: str, key: str, *, column: str, to: str) -> list[str]:
    """The function and the AFTER DELETE row trigger on `to` that clear table.column.

    Dropped before it is created, so a re-run converges; the referencing rows are found
    by the key's own index (tenant_id first), as the key's action found them.
    """
    trigger, function = quote(set_null_trigger_name(key)), quote(set_null_function_name(key))
    column = quote(column)
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN UPDATE {quote(table)} SET {column} = NULL "
        f"WHERE tenant_id = OLD.tenant_id AND {column} = OLD.id; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS {trigger} ON {quote(to)}",
        f"CREATE TRIGGER {trigger} AFTER DELETE ON {quote(to)} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def drop_set_null_trigger_sql(quote, key: str, *, to: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {quote(set_null_trigger_name(key))} ON {quote(to)}",
        f"DROP FUNCTION IF EXISTS {quote(set_null_function_name(key))}()",
    ]


class MoveSetNullToTrigger(_SQLOperation):
    """Turn an existing `ON DELETE SET NULL (column)` tenant key into the form
    AddTenantForeignKey(on_delete="SET NULL") now declares: the key NO ACTION, the
    clearing done by its trigger (why: AddTenantForeignKey).

    In one transaction: the key is dropped and added again NOT VALID (no scan under the
    ALTER's lock; a later migration validates it), with the trigger. Converges on a
    database that already has the new form (built by the current AddTenantForeignKey).
    Backwards puts the key's own SET NULL action back and drops the trigger.
    """

    def __init__(self, table: str, name: str, *, column: str, to: str) -> None:
        self.table = table
        self.name = name
        self.column = column
        self.to = to

    def _key(self) -> AddTenantForeignKey:
        return AddTenantForeignKey(
            self.table,
            self.name,
            column=self.column,
            to=self.to,
            on_delete="SET NULL",
            not_valid=True,
        )

    def forwards_sql(self, quote) -> list[str]:
        return [
            f"ALTER TABLE {quote(self.table)} DROP CONSTRAINT IF EXISTS {quote(self.name)}",
            *self._key().forwards_sql(quote),
        ]

    def backwards_sql(self, quote) -> list[str]:
        column = quote(self.column)
        return [
            *self._key().backwards_sql(quote),
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} "
            f"FOREIGN KEY (tenant_id, {column}) REFERENCES {quote(self.to)} (tenant_id, id) "
            f"ON DELETE SET NULL ({column}) NOT VALID",
        ]

    def describe(self) -> str:
        return f"Move the ON DELETE SET NULL of {self.name} into a trigger on {self.to}"

    @property
    def migration_name_fragment(self) -> str:
        return f"set_null_trigger_{self.name}"


class Migration(migrations.Migration):
    """A migration whose statements give up after settings.MIGRATION_LOCK_TIMEOUT on a lock."""

    def apply(self, project_state, schema_editor, collect_sql=False):
        _set_lock_timeout(schema_editor)
        state = super().apply(project_state, schema_editor, collect_sql)
        _reset_lock_timeout(schema_editor)
        return state

    def unapply(self, project_state, schema_editor, collect_sql=False):
        _set_lock_timeout(schema_editor)
        if schema_editor.atomic_migration:
            # Unapplying drops a distributed table's triggers, then their functions: on
            # Citus a function command after a parallel operation in one transaction
            # must run over one connection per node (nothing on plain PostgreSQL).
            connection = schema_editor.connection
            with connection.cursor() as cursor:
                if connection.citus is None:
                    cursor.execute(f"SELECT {CITUS_PRESENT_SQL}")
                    connection.remember_citus(cursor.fetchone()[0])
                one_connection_per_node(cursor)
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


class AddIndexToPartitionsConcurrently(migrations.AddIndex):
    """`AddIndexConcurrently` for a partitioned table, where PostgreSQL has no CREATE INDEX
    CONCURRENTLY: the index is declared on the parent alone (`ON ONLY`: no row read, an
    index that stays invalid until it covers every partition), then built CONCURRENTLY on
    each partition and attached to it; once the last is attached PostgreSQL marks it
    valid. Writes go on all along; each ATTACH is a catalog change under lock_timeout.
    Partitions made later (`manage.py partitions`) get it from the parent by themselves.

    The migration must be `atomic = False`. Run again after a failure, it goes on where
    it stopped: partitions already attached are skipped, and a partition's index left
    INVALID by a failed concurrent build is dropped and built again (so IF NOT EXISTS
    never keeps a broken one). `sqlmigrate` shows the whole plan, every partition. On
    Citus each statement reaches the shards (Citus runs CREATE INDEX ON ONLY, CREATE
    INDEX CONCURRENTLY and ALTER INDEX ... ATTACH PARTITION on distributed tables).
    Backwards, dropping the parent's index drops the partitions' with it.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        quote = schema_editor.quote_name
        table = model._meta.db_table
        parent = self.index.create_sql(model, schema_editor)
        parent.template = parent.template.replace(
            "CREATE INDEX %(name)s ON %(table)s",
            "CREATE INDEX IF NOT EXISTS %(name)s ON ONLY %(table)s",
        )
        schema_editor.execute(parent)
        with schema_editor.connection.cursor() as cursor:
            names = partition_names(cursor, table)
            attached = set() if schema_editor.collect_sql else self._attached(cursor)
            for partition in names:
                if partition in attached:
                    continue
                name = self.partition_index_name(partition)
                if not schema_editor.collect_sql and self._invalid(cursor, name):
                    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(name)}")
                built = self.index.create_sql(model, schema_editor, concurrently=True)
                built.rename_table_references(table, partition)
                built.parts["name"] = quote(name)
                built.template = built.template.replace(
                    "CONCURRENTLY %(name)s", "CONCURRENTLY IF NOT EXISTS %(name)s"
                )
                schema_editor.execute(built)
                schema_editor.execute(
                    f"ALTER INDEX {quote(self.index.name)} ATTACH PARTITION {quote(name)}"
                )

    def partition_index_name(self, partition: str) -> str:
        name = f"{partition}_{self.index.name}"
        if len(name) > 63:  # PostgreSQL would cut it, and two could then collide
            raise ValueError(f"{name}: longer than 63 characters; name the index shorter")
        return name

    def _attached(self, cursor) -> set[str]:
        """The partitions whose index is already attached to the parent's."""
        cursor.execute(
            "SELECT t.relname FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE i.inhparent = to_regclass(%s)",
            [self.index.name],
        )
        return {name for (name,) in cursor.fetchall()}

    @staticmethod
    def _invalid(cursor, name: str) -> bool:
        cursor.execute(
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name]
        )
        row = cursor.fetchone()
        return bool(row and row[0])

    def describe(self):
        return f"Create index {self.index.name} on {self.model_name}'s partitions, concurrently"


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


class PartitionByIdMonth(migrations.operations.base.Operation):
    """Turn an existing table into monthly partitions of its UUIDv7 id, rows and all.

    Reversible: backwards rebuilds one plain table from the partitions. Either way the
    table's constraints, indexes, triggers, row-level security and the foreign keys
    pointing at it are read from the catalog and declared again (`rebuild`).
    """

    reversible = True

    def __init__(self, table: str):
        self.table = table

    def deconstruct(self):
        return (self.__class__.__name__, [self.table], {})

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        with schema_editor.connection.cursor() as cursor:
            rebuild(cursor, self.table, partitioned=True, execute=schema_editor.execute)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        with schema_editor.connection.cursor() as cursor:
            rebuild(cursor, self.table, partitioned=False, execute=schema_editor.execute)

    def describe(self):
        return f"Partition {self.table} by month of its UUIDv7 id"


class CreateAuditFunctions(_SQLOperation):
    """The audit trail's trigger functions (core.db.audit); AuditTable's triggers call them."""

    def forwards_sql(self, quote) -> list[str]:
        return audit.functions_sql()

    def backwards_sql(self, quote) -> list[str]:
        return audit.drop_functions_sql()

    def describe(self) -> str:
        return "Create the audit trail's trigger functions"

    @property
    def migration_name_fragment(self) -> str:
        return "audit_functions"


class AuditTable(_SQLOperation):
    """Every insert, update and delete of `table` recorded in the audit trail, in the
    same transaction, by an AFTER row trigger (core.db.audit).

    `tenant=False` for a table without tenant_id (users, tenants): its events go to
    audit_events_global. `ignored` columns are left out of the events (generated ones);
    `hashed` columns are recorded as their SHA-256 only (vectors).
    """

    def __init__(
        self,
        table: str,
        *,
        tenant: bool = True,
        ignored: tuple[str, ...] = (),
        hashed: tuple[str, ...] = (),
    ) -> None:
        self.table = table
        self.tenant = tenant
        self.ignored = tuple(ignored)
        self.hashed = tuple(hashed)

    def forwards_sql(self, quote) -> list[str]:
        return audit.audit_trigger_sql(
            quote, self.table, tenant=self.tenant, ignored=self.ignored, hashed=self.hashed
        )

    def backwards_sql(self, quote) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {audit.AUDIT_TRIGGER} ON {quote(self.table)}"]

    def describe(self) -> str:
        return f"Record every write of {self.table} in the audit trail"

    @property
    def migration_name_fragment(self) -> str:
        return f"audit_{self.table}"


class AppendOnlyTable(_SQLOperation):
    """UPDATE and DELETE of `table` refused by a trigger, for every role (core.db.audit)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def forwards_sql(self, quote) -> list[str]:
        return audit.append_only_sql(quote, self.table)

    def backwards_sql(self, quote) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {audit.APPEND_ONLY_TRIGGER} ON {quote(self.table)}"]

    def describe(self) -> str:
        return f"Make {self.table} append-only"

    @property
    def migration_name_fragment(self) -> str:
        return f"append_only_{self.table}"


# The largest toast_tuple_target PostgreSQL accepts on 8 KB pages (TOAST_TUPLE_TARGET_MAIN):
# a row is toasted only when it does not fit in a page.
WHOLE_PAGE_TUPLE_TARGET = 8160


def _set_storage_sql(quote, table: str, column: str, storage: str) -> str:
    """ALTER COLUMN ... SET STORAGE, also on a table Citus has already distributed.

    Citus carries a column's storage to the shards it creates, but refuses the ALTER on a
    distributed table ("alter table command is currently unsupported"): there it is run
    on the coordinator's table without propagation, then on every shard, and a shard
    that refuses fails the migration. The shards are altered over connections of their
    own, outside the migration's transaction: it must come before anything else in its
    migration that touches the table, whose shard locks they would wait for.
    """
    alter = f"ALTER TABLE %s ALTER COLUMN {quote(column)} SET STORAGE {storage}"
    relation = quote(table)
    return f"""DO $$
DECLARE
    propagation text;
    failed text;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        IF EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = '{relation}'::regclass) THEN
            propagation := current_setting('citus.enable_ddl_propagation');
            PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
            EXECUTE format('{alter}', '{relation}');
            PERFORM set_config('citus.enable_ddl_propagation', propagation, true);
            SELECT string_agg(shardid || ': ' || result, '; ') INTO failed
            FROM run_command_on_shards('{relation}', '{alter}')
            WHERE NOT success;
            IF failed IS NOT NULL THEN
                RAISE EXCEPTION 'SET STORAGE {storage} failed on shards of {table}: %', failed;
            END IF;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('{alter}', '{relation}');
END $$"""


class KeepColumnInHeap(_SQLOperation):
    """`column` of `table` stays in the table's rows; TOAST only for a row that cannot fit.

    Two settings (docs/architecture.md, "Chunks' storage"): the column's storage MAIN,
    so it is the last value PostgreSQL moves out of a row too big for a page (the
    others, compressed first, go before it), and the table's toast_tuple_target at a
    whole page, so a row that fits is not toasted at all. Both are catalog changes: SET
    STORAGE takes an ACCESS EXCLUSIVE lock for that instant (under the migration's
    lock_timeout), the storage parameter a SHARE UPDATE EXCLUSIVE one. Rows already
    written keep their layout until rewritten. Backwards: the type's storage and the
    default target.
    """

    def __init__(self, table: str, column: str) -> None:
        self.table = table
        self.column = column

    def forwards_sql(self, quote) -> list[str]:
        return [
            _set_storage_sql(quote, self.table, self.column, "MAIN"),
            f"ALTER TABLE {quote(self.table)} SET (toast_tuple_target = {WHOLE_PAGE_TUPLE_TARGET})",
        ]

    def backwards_sql(self, quote) -> list[str]:
        # The storage first, both ways: on a distributed table run_command_on_shards
        # uses connections of its own, which would wait for ever on the shards' locks
        # that this transaction's propagated ALTER TABLE ... (RE)SET already holds.
        return [
            _set_storage_sql(quote, self.table, self.column, "DEFAULT"),
            f"ALTER TABLE {quote(self.table)} RESET (toast_tuple_target)",
        ]

    def describe(self) -> str:
        return f"Keep {self.table}.{self.column} in the table's rows"

    @property
    def migration_name_fragment(self) -> str:
        return f"keep_{self.table}_{self.column}_in_heap"
