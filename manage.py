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
    if sys.argv[1:2] == ["runserver"]:
        # The embedded database server starts with a process's first connection and
        # stops with the last process using it. runserver's reloader parent never
        # connects, so its child, restarted on every code change, would stop and start
        # PostgreSQL each time: the parent holds the server for the whole session.
        from core.db.connections import ensure_database_server

        ensure_database_server()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
