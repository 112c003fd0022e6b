"""The default connection pointed at another database of the same server, for a while."""

from contextlib import contextmanager

from django.db import connection


@contextmanager
def connected_to(database: str):
    """The default connection on `database` for the block; its pool too, so no pooled
    connection to the usual database is handed out meanwhile."""
    settings_dict = connection.settings_dict
    real = settings_dict["NAME"]
    connection.close()
    connection.close_pool()
    settings_dict["NAME"] = database
    try:
        yield
    finally:
        connection.close()
        connection.close_pool()
        settings_dict["NAME"] = real
