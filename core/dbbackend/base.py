"""PostgreSQL backend that starts its server when first needed, and whose test
databases are created and dropped by the owner role.

The runtime role in DATABASES["default"] may not create databases or tables; tests
still run as that role, so row-level security is exercised exactly as in production.
"""

from django.db.backends.postgresql import base, client, creation

from core.db import ensure_database_server, owner_connection


class DatabaseCreation(creation.DatabaseCreation):
    def create_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().create_test_db(*args, **kwargs)

    def destroy_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().destroy_test_db(*args, **kwargs)


class DatabaseClient(client.DatabaseClient):
    def runshell(self, parameters):
        # dbshell runs psql from the settings alone, without a connection of its own.
        ensure_database_server()
        return super().runshell(parameters)


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient
    creation_class = DatabaseCreation

    def get_connection_params(self) -> dict:
        # Every way to a connection asks for its parameters first: connect(), the pool
        # (which opens its connections from them), the test database's creation and
        # the health probes. The server starts here, once, rather than at import.
        ensure_database_server()
        return super().get_connection_params()
