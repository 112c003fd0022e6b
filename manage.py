#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # manage.py is the developer's entry point: development settings unless the
    # environment says otherwise (docker-compose and deployments set DJANGO_DEBUG=false).
    # The servers' entry points, config/wsgi.py and asgi.py, keep the production default,
    # so a deployment without SECRET_KEY still refuses to start.
    os.environ.setdefault("DJANGO_DEBUG", "true")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        # Settings refuse a missing SECRET_KEY or a malformed DATABASE_URL: one line
        # saying which, rather than the traceback of Django's set-up failing later.
        settings.INSTALLED_APPS  # noqa: B018
    except ImproperlyConfigured as error:
        sys.exit(f"Configuration error: {error}")
    # Its message names the server and the reason, never the password: the traceback of
    # a failed connection adds nothing for the person at the terminal.
    from core.db.connections import DatabaseUnreachable

    if sys.argv[1:2] == ["runserver"]:
        # The embedded database server starts with a process's first connection and
        # stops with the last process using it. runserver's reloader parent never
        # connects, so its child, restarted on every code change, would stop and start
        # PostgreSQL each time: the parent holds the server for the whole session.
        from django.db import DEFAULT_DB_ALIAS, connections

        from core.db.connections import ensure_database_server

        ensure_database_server()
        try:
            # Here, not in the reloader's child: there a failure is a thread's traceback
            # and the server goes on waiting for code changes.
            connections[DEFAULT_DB_ALIAS].check_reachable()
        except DatabaseUnreachable as error:
            sys.exit(str(error))
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except DatabaseUnreachable as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
