"""Health checks for /health/ (DESIGN.md section 5), on django-health-check's v4 API.

Each check opens its own short connection with a connect timeout, bypassing the
pool, so an unreachable database answers in seconds rather than a pool timeout.
Messages name what is wrong and never carry hostnames, users, passwords or
driver messages (which can contain all three): unexpected errors are logged,
not shown.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from core.checks import read_versions, version_problems

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3


@contextmanager
def probe_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator[psycopg.Cursor]:
    params = connections[using].get_connection_params()
    params = {
        k: v for k, v in params.items() if k in {"dbname", "user", "password", "host", "port"}
    }
    try:
        with psycopg.connect(**params, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            with conn.cursor() as cursor:
                yield cursor
    except psycopg.OperationalError as error:
        logger.warning("health probe could not reach the database", exc_info=True)
        raise ServiceUnavailable("database unreachable") from error
    except psycopg.Error as error:
        logger.warning("health probe query failed", exc_info=True)
        raise ServiceUnavailable(f"database query failed ({type(error).__name__})") from error


@dataclasses.dataclass
class DatabaseReachable(HealthCheck):
    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute("SELECT 1")


@dataclasses.dataclass
class DatabaseVersions(HealthCheck):
    """PostgreSQL >= 18 and the vector extension >= 0.8 installed."""

    def run(self) -> None:
        with probe_cursor() as cursor:
            server_version, _ = read_versions(cursor)
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        if row is None:
            raise ServiceUnavailable("extension vector is not installed")
        problems = version_problems(server_version, row[0])
        if problems:
            raise ServiceUnavailable(" ".join(problems))


@dataclasses.dataclass
class MigrationsApplied(HealthCheck):
    def run(self) -> None:
        on_disk = set(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)
        with probe_cursor() as cursor:
            cursor.execute("SELECT to_regclass('django_migrations') IS NOT NULL")
            applied = set()
            if cursor.fetchone()[0]:
                cursor.execute("SELECT app, name FROM django_migrations")
                applied = set(cursor.fetchall())
        unapplied = sorted(on_disk - applied)
        if unapplied:
            names = ", ".join(f"{app}.{name}" for app, name in unapplied[:5])
            more = f" and {len(unapplied) - 5} more" if len(unapplied) > 5 else ""
            raise ServiceUnavailable(f"{len(unapplied)} unapplied migrations: {names}{more}")


@dataclasses.dataclass
class HnswIndexesValid(HealthCheck):
    """No HNSW index left invalid (a failed CREATE INDEX CONCURRENTLY, say)."""

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'hnsw'"
            )
            rows = cursor.fetchall()
        if not rows:
            raise ServiceUnavailable("no HNSW index found (chunks_embedding_hnsw_idx)")
        invalid = sorted(name for name, valid in rows if not valid)
        if invalid:
            raise ServiceUnavailable(f"invalid HNSW indexes: {', '.join(invalid)}")


@dataclasses.dataclass
class StorageWritable(HealthCheck):
    """The storage alias can write, read back and delete a file."""

    alias: str = "exports"

    def run(self) -> None:
        storage = storages[self.alias]
        content = uuid.uuid4().hex.encode()
        try:
            name = storage.save(f".health/{uuid.uuid4().hex}.txt", ContentFile(content))
            with storage.open(name) as handle:
                read_back = handle.read()
            storage.delete(name)
        except OSError as error:
            logger.warning("storage %s is not writable", self.alias, exc_info=True)
            raise ServiceUnavailable(
                f"storage '{self.alias}' is not writable ({type(error).__name__})"
            ) from error
        if read_back != content:
            raise ServiceUnavailable(f"storage '{self.alias}' returned other content")


class HealthView(HealthCheckView):
    checks = (
        DatabaseReachable,
        DatabaseVersions,
        MigrationsApplied,
        HnswIndexesValid,
        (StorageWritable, {"alias": "exports"}),
    )
