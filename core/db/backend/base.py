"""PostgreSQL backend that starts its server when first needed, and whose test
databases are created and dropped by the owner role.

The runtime role in DATABASES["default"] may not create databases or tables; tests
still run as that role, so row-level security is exercised exactly as in production.

It also lets statements bind pgvector vectors in binary (server_binding_cursor), and
SQL of several statements bind on the client (client_side_binding), and remembers per
connection whether its database is a Citus coordinator (citus).
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import psycopg
import sqlparse
from django.db.backends.postgresql import base, client, creation, schema
from pgvector import Vector
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

from core.db.connections import ensure_database_server, owner_connection, unreachable
from core.db.distributed import DISTRIBUTION_COLUMN, distribute_new_table_sql


class DatabaseCreation(creation.DatabaseCreation):
    def create_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().create_test_db(*args, **kwargs)

    def destroy_test_db(self, *args, **kwargs):
        with owner_connection(self.connection.alias):
            return super().destroy_test_db(*args, **kwargs)


# How a pgvector Vector parameter travels. No type oid (0, "unknown"): the statement says
# `::vector`, and the server reads the value with the type's own input function. So no
# lookup of the type's oid on each new connection, and a database without the extension
# works until a statement actually sends a vector.
class VectorTextDumper(Dumper):
    """A Vector in pgvector's text form: what Django's client-side binding cursors quote."""

    format = Format.TEXT

    def dump(self, obj: Vector) -> bytes:
        return obj.to_text().encode()


class VectorBinaryDumper(Dumper):
    """A Vector in pgvector's binary form (4 bytes a dimension): server-side binding only."""

    format = Format.BINARY

    def dump(self, obj: Vector) -> bytes:
        return obj.to_binary()


class DatabaseClient(client.DatabaseClient):
    def runshell(self, parameters):
        # dbshell runs psql from the settings alone, without a connection of its own.
        ensure_database_server()
        return super().runshell(parameters)


# The select-list term that says whether the database is a Citus coordinator: the citus
# extension is created in every database Citus distributes (docs/operations.md).
CITUS_PRESENT_SQL = "EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"


class DatabaseSchemaEditor(schema.DatabaseSchemaEditor):
    connection: DatabaseWrapper

    def execute(self, sql, params=()):
        """Each statement on its own on a Citus coordinator.

        Citus carries DDL on a distributed table to its shards with the text it was
        given, as a prepared statement, which holds one command only: pgtrigger's
        installation (functions, then the trigger and its comment in one text) would be
        refused once its table is distributed. On plain PostgreSQL nothing changes.
        """
        if not params and self._on_citus():
            statements = [text for text in sqlparse.split(str(sql)) if text.strip()]
            if len(statements) > 1:
                for statement in statements:
                    super().execute(statement, params)
                return
        super().execute(sql, params)

    def _on_citus(self) -> bool:
        if self.collect_sql:
            return False
        if self.connection.citus is None:
            with self.connection.cursor() as cursor:
                cursor.execute(f"SELECT {CITUS_PRESENT_SQL}")
                self.connection.remember_citus(cursor.fetchone()[0])
        return bool(self.connection.citus)

    def create_model(self, model):
        """CREATE TABLE, and in a database Citus has distributed, a tenant table
        (a NOT NULL tenant_id) distributed with the others before its foreign keys, which
        Django adds at the end of the migration (core.db.distributed)."""
        super().create_model(model)
        tenant_table = any(
            field.column == DISTRIBUTION_COLUMN and not field.null
            for field in model._meta.local_fields
        )
        if not tenant_table or not model._meta.managed:
            return
        with self.connection.cursor() as cursor:
            statements = distribute_new_table_sql(
                cursor, model._meta.db_table, widen_primary_key=model._meta.pk.column == "id"
            )
        for statement in statements:
            self.execute(statement, params=None)


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient
    creation_class = DatabaseCreation
    SchemaEditorClass = DatabaseSchemaEditor

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Per driver connection, so a reconnect (owner_connection, another of the pool's
        # connections, a test database) is asked again; nothing is kept for a closed one.
        self._citus_by_connection: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def citus(self) -> bool | None:
        """Whether this connection's database is a Citus coordinator; None until told.

        Not asked with a statement of its own: tenancy.context adds CITUS_PRESENT_SQL to
        the first statement it sends on a connection and tells the answer
        (remember_citus), so plain PostgreSQL pays no round trip for it.
        """
        if self.connection is None:
            return None
        return self._citus_by_connection.get(self.connection)

    def remember_citus(self, present: bool) -> None:
        self._citus_by_connection[self.connection] = present

    def get_connection_params(self):
        # Every way to a connection asks for its parameters first: connect(), the pool
        # (which opens its connections from them), the test database's creation and
        # the health probes. The server starts here (again, if it died) rather than at import.
        ensure_database_server()
        params = super().get_connection_params()
        adapters = AdaptersMap(params["context"])
        adapters.register_dumper(Vector, VectorTextDumper)
        # Registered last: the one a server-side binding cursor picks for a Vector.
        adapters.register_dumper(Vector, VectorBinaryDumper)
        params["context"] = adapters
        return params

    # The servers (host, port, database, role) this process has reached once.
    _reached: set[tuple] = set()
    _reached_lock = threading.Lock()

    def get_new_connection(self, conn_params):
        if self.pool:  # type: ignore[attr-defined]  # Django 5.1's, not in django-stubs
            self._check_reachable(conn_params)
        return super().get_new_connection(conn_params)

    def check_reachable(self) -> None:
        """Raise DatabaseUnreachable, within connect_timeout, unless the server answers."""
        self._check_reachable(self.get_connection_params())

    def _check_reachable(self, conn_params: dict) -> None:
        """Connect once directly before a pool's first connection to a server.

        A pool retries a failing server in the background and only says "couldn't get a
        connection after 30.00 sec" (DATABASE_POOL_TIMEOUT): a wrong host, port or
        password would hang every command that long and hide the reason. This attempt
        fails within connect_timeout with libpq's reason instead (DatabaseUnreachable).
        """
        target = tuple(conn_params.get(key) for key in ("host", "port", "dbname", "user"))
        if target in self._reached:
            return
        try:
            psycopg.connect(**conn_params).close()
        except psycopg.OperationalError as error:
            raise unreachable(error, conn_params) from None
        with self._reached_lock:
            self._reached.add(target)

    def server_binding_cursor(self):
        """A cursor like cursor(), but binding its parameters on the server.

        Where DATABASE_PREPARED_STATEMENTS is off (behind PgBouncer), Django's cursors
        merge the parameters into the SQL text (psycopg's ClientCursor), so a
        1536-dimension vector travels as some 15,000 characters that Python formats and
        the server parses. This one sends them apart (the extended protocol), a pgvector
        Vector in binary; it prepares only what the connection's prepare_threshold says
        (None behind PgBouncer), so it is as safe there as cursor(). Where prepared
        statements are on, every cursor is one of these already.
        """
        with self._cursors_of(base.ServerBindingCursor):  # type: ignore[attr-defined]  # as above
            return self.cursor()

    def client_side_binding(self):
        """A block whose cursors merge their parameters into the SQL text.

        For SQL of several statements with parameters, which the extended protocol of a
        server-binding cursor refuses ("cannot insert multiple commands into a prepared
        statement"): pgtrigger.ignore(), for one, prepends a set_config to every
        statement of its block, its own last one included.
        """
        return self._cursors_of(base.Cursor)  # type: ignore[attr-defined]  # as above

    @contextmanager
    def _cursors_of(self, cursor_class):
        self.ensure_connection()
        raw = self.connection
        # The psycopg connection belongs to this thread: switching its cursor class for
        # the block reuses Django's whole cursor set-up without copying it.
        factory, raw.cursor_factory = raw.cursor_factory, cursor_class
        try:
            yield
        finally:
            raw.cursor_factory = factory
