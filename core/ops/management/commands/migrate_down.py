"""`manage.py migrate_down APP TO` (`make migrate-down APP=... TO=...`): unapply an app's
migrations back to TO (a migration name or prefix, or `zero`), after showing the plan.

It only goes back: a TO ahead of what is applied is refused (that is `make migrate`).
The plan is `migrate APP TO --plan`. Going back may drop tables and their rows, so it
unapplies only when confirmed: `--yes` (`make migrate-down ... YES=1`), or `yes` typed
on a terminal. Without a terminal and without `--yes` (a script, a pipe, CI) it refuses
rather than going on unasked. The migrations run as the owner role, like `migrate`.
"""

import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.exceptions import AmbiguityError
from django.db.migrations.executor import MigrationExecutor


class Command(BaseCommand):
    help = "Unapply APP's migrations back to TO (a name or prefix, or zero), showing the plan."

    def add_arguments(self, parser) -> None:
        parser.add_argument("app_label")
        parser.add_argument("target", metavar="TO", help="migration name or prefix, or zero")
        parser.add_argument(
            "--yes", action="store_true", help="unapply without asking (needed without a terminal)"
        )

    def _target(self, executor: MigrationExecutor, app: str, target: str) -> tuple:
        loader = executor.loader
        if app not in loader.migrated_apps:
            raise CommandError(f"App {app!r} has no migrations.")
        if target == "zero":
            return (app, None)
        try:
            migration = loader.get_migration_by_prefix(app, target)
        except AmbiguityError:
            raise CommandError(f"More than one {app} migration starts with {target!r}.") from None
        except KeyError:
            raise CommandError(f"{app} has no migration named {target!r}.") from None
        return (app, migration.name)

    def handle(self, *args, app_label: str, target: str, yes: bool, **options) -> None:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        node = self._target(executor, app_label, target)
        plan = executor.migration_plan([node])
        forwards = [str(migration) for migration, backwards in plan if not backwards]
        if forwards:
            raise CommandError(
                f"{app_label} {target} is ahead of what is applied ({', '.join(forwards)} "
                "would be applied): migrate-down only goes back. Use `make migrate`."
            )
        if not plan:
            self.stdout.write(f"Nothing to unapply: {app_label} is at {target}.")
            return
        call_command("migrate", app_label, node[1] or "zero", plan=True, stdout=self.stdout)
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError(
                    f"Nothing was unapplied: no terminal to confirm unapplying these "
                    f"{len(plan)} migration(s) on. Confirm with --yes (make migrate-down "
                    f"APP={app_label} TO={target} YES=1)."
                )
            answer = input(f"Unapply these {len(plan)} migration(s)? Type 'yes' to go on: ")
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing was unapplied.")
        call_command("migrate", app_label, node[1] or "zero", interactive=False, stdout=self.stdout)
        self.stdout.write(self.style.SUCCESS(f"{app_label} is now at {target}."))
