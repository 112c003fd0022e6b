"""`create_runtime_role`: set up the runtime role of a DATABASE_URL deployment (section 7).

Run as the owner (DATABASE_OWNER_URL): creates the role named by DATABASE_URL, with
its password, as LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE (or brings an
existing role to that) with its session timeouts (DATABASE_RUNTIME_ROLE_SETTINGS), then
grants it what the application needs on the owner's tables. Idempotent. Where the owner
may not manage roles, it prints the SQL an administrator must run and exits non-zero.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from core.db.connections import owner_connection, owner_role_name, runtime_role_name
from core.db.roles import (
    RoleSetupRefused,
    ensure_role_settings,
    ensure_runtime_role,
    grant_runtime_privileges,
)


class Command(BaseCommand):
    help = "Create or update the runtime role from DATABASE_URL and grant its privileges."

    def handle(self, *args, **options) -> None:
        role = runtime_role_name()
        owner = owner_role_name()
        # Read before owner_connection() puts the owner's password in the same dict.
        password = settings.DATABASES[DEFAULT_DB_ALIAS].get("PASSWORD") or ""
        if not role:
            raise CommandError("DATABASE_URL names no user: it must name the runtime role.")
        if role == owner:
            raise CommandError(
                f"The runtime role and the owner role are both {role!r}. DATABASE_URL (what "
                "the application runs as) and DATABASE_OWNER_URL (who owns the tables and "
                "runs migrations) must name different roles, or row-level security cannot "
                "hold (docs/security.md)."
            )
        with owner_connection(), transaction.atomic():
            with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
                try:
                    outcome = ensure_runtime_role(cursor, role, password=password)
                    changed = ensure_role_settings(
                        cursor, role, settings.DATABASE_RUNTIME_ROLE_SETTINGS
                    )
                except RoleSetupRefused as refusal:
                    raise CommandError(
                        f"{refusal}\nThen run `python manage.py create_runtime_role` again "
                        "to grant its privileges."
                    ) from refusal
                grant_runtime_privileges(cursor, role)
        self.stdout.write(f"Runtime role {role!r} {outcome}; privileges granted by {owner!r}.")
        if changed:
            self.stdout.write(f"Settings set on {role!r}: {', '.join(changed)}.")
