"""PostgreSQL backend whose test databases are created and dropped by the owner role.

The runtime role in DATABASES["default"] may not create databases or tables; tests
still run as that role, so row-level security is exercised exactly as in production.
"""

from django.db.backends.postgresql import base, creation

from core.db import owner_connection


class DatabaseCreation(creation.DatabaseCreation):
    def create_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().create_test_db(*args, **kwargs)

    def destroy_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().destroy_test_db(*args, **kwargs)


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation
