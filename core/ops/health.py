"""Health checks for /health/ and `manage.py health` (docs/operations.md, docs/security.md).

Built on django-health-check's v4 API. Each database check opens its own short
connection with a connect timeout and a statement timeout, bypassing the pool, so an
unreachable database answers in seconds rather than after the pool's timeout.
Messages name what is wrong and never carry hostnames, socket paths, users,
passwords or driver messages (which can contain all of them): those go to the log.

Each check has two names (`NamedCheck`): a stable snake_case `key` for machines (the
JSON answer, OpenMetrics labels, `manage.py health`) and a `title` in words for people
(its repr, which django-health-check shows in the HTML page, text answer, feeds and
logs). Neither may hold anything secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ClassVar

import psycopg
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from django.http import JsonResponse
from django.utils import timezone
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from core.db import partitions, replicas
from core.db.connections import one_row, runtime_role_name
from core.health_notes import health_note_providers
from core.ops import leakproof, vector_work
from core.ops.checks import pgvector_problem, postgres_problem

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
# Each under django-health-check's 5 s budget per check, so our message, not its timeout, shows.
STATEMENT_TIMEOUT = "3s"
# Long lists of names would bury the message; the rest are counted.
MAX_NAMES = 5


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    more = len(names) - MAX_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


@contextmanager
def probe_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator[psycopg.Cursor]:
    """A cursor on a fresh connection with the alias's settings, not from its pool.

    Connection and query failures become ServiceUnavailable with a fixed message;
    the driver's own message (host, socket path, user) is logged only.
    """
    params = connections[using].get_connection_params()
    params["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        conn = psycopg.connect(**params)
    except psycopg.Error as error:
        logger.warning("health probe could not connect: %s", error)
        raise ServiceUnavailable("database unreachable") from error
    try:
        with conn, conn.cursor() as cursor:
            # SET LOCAL: behind PgBouncer a session setting would outlive the probe.
            cursor.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            yield cursor
    except psycopg.Error as error:
        logger.warning("health probe query failed: %s", error)
        raise ServiceUnavailable(f"database query failed ({type(error).__name__})") from error


class NamedCheck(HealthCheck):
    """A check with a stable key for machines and a title for people.

    django-health-check labels every answer with the check's repr, which for a dataclass
    is a Python expression such as `StorageWritable(alias='exports')`: neither words a
    person reads nor a key a monitor can rely on across refactorings.
    """

    # Stable: monitors and load balancers match on it; never derive it from the class name.
    key: ClassVar[str]
    title: ClassVar[str]

    def __repr__(self) -> str:
        return self.title

    @property
    def labels(self) -> dict[str, str]:
        return {"check": self.key}


class DatabaseReachable(NamedCheck):
    """The database accepts a connection and answers a query."""

    key = "database_reachable"
    title = "Database reachable"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute("SELECT 1")


class PostgresVersion(NamedCheck):
    """The server is PostgreSQL 18 or newer."""

    key = "postgres_version"
    title = "PostgreSQL 18 or newer"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version_num')::int")
            (server_version,) = one_row(cursor)
        if problem := postgres_problem(server_version):
            raise ServiceUnavailable(problem)


class VectorExtension(NamedCheck):
    """The vector extension is installed in the database, version 0.8 or newer."""

    key = "vector_extension"
    title = "Extension vector 0.8 or newer installed"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        if row is None:
            raise ServiceUnavailable("extension vector is not installed in the database")
        if problem := pgvector_problem(row[0]):
            raise ServiceUnavailable(problem)


class VectorOperations(NamedCheck):
    """pgvector computes real 1536-dim distances correctly (not only that it is installed).

    A pgvector built for another CPU passes VectorExtension and then kills the
    backend, and with it every connection, on the first distance.
    """

    key = "vector_operations"
    title = "Vector operations work"

    def run(self) -> None:
        with probe_cursor() as cursor:
            try:
                wrong = vector_work.run(cursor)
            except psycopg.OperationalError as error:
                logger.warning("health vector work failed: %s", error)
                raise ServiceUnavailable(
                    "vector operations failed: the database backend died computing "
                    "1536-dim distances (is its pgvector built for another CPU?)"
                ) from error
        if wrong:
            raise ServiceUnavailable(f"vector operations give wrong results: {_names(wrong)}")


class MigrationsApplied(NamedCheck):
    """Every migration on disk is recorded as applied."""

    key = "migrations_applied"
    title = "Every migration applied"

    def run(self) -> None:
        # No connection: the loader only reads the migration files.
        loader = MigrationLoader(None, ignore_no_migrations=True)
        with probe_cursor() as cursor:
            cursor.execute("SELECT to_regclass('django_migrations') IS NOT NULL")
            applied = set()
            if one_row(cursor)[0]:
                cursor.execute("SELECT app, name FROM django_migrations")
                applied = set(cursor.fetchall())

        def is_applied(key: tuple[str, str]) -> bool:
            # A squashed migration counts as applied once everything it replaces is.
            replacing = loader.replacements.get(key)
            return key in applied or bool(replacing and set(replacing.replaces) <= applied)

        unapplied = sorted(key for key in loader.graph.nodes if not is_applied(key))
        if unapplied:
            names = _names([f"{app}.{name}" for app, name in unapplied])
            raise ServiceUnavailable(f"{len(unapplied)} unapplied migrations: {names}")


class HnswIndexesValid(NamedCheck):
    """HNSW indexes exist and none is left invalid (a failed CREATE INDEX CONCURRENTLY)."""

    key = "hnsw_indexes_valid"
    title = "HNSW indexes valid"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute(
                "SELECT c.relname::text, i.indisvalid AND i.indisready FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'hnsw'"
            )
            rows = cursor.fetchall()
        if not rows:
            raise ServiceUnavailable("no HNSW index found (chunks_embedding_hnsw_idx)")
        invalid = sorted(name for name, valid in rows if not valid)
        if invalid:
            raise ServiceUnavailable(f"invalid HNSW indexes: {_names(invalid)}")


class PartitionsAhead(NamedCheck):
    """Every monthly-partitioned table has this month's and next month's partition.

    There is no default partition (core.db.partitions), so an insert into a month
    without one fails: this fails a month ahead, while `manage.py partitions --ahead N`
    (run it monthly) can still add it.
    """

    key = "partitions_ahead"
    title = "Partitions of this month and the next in place"

    def run(self) -> None:
        current = partitions.month_start(timezone.now())
        needed = [current, partitions.add_months(current, 1)]
        with probe_cursor() as cursor:
            cursor.execute(
                "SELECT relname::text FROM pg_class WHERE relkind = 'p' "
                "AND relnamespace = 'public'::regnamespace ORDER BY 1"
            )
            tables = [name for (name,) in cursor.fetchall()]
            missing = [
                partitions.partition_name(table, month)
                for table in tables
                for month in needed
                if month not in partitions.partitions(cursor, table)
            ]
        if missing:
            raise ServiceUnavailable(
                f"missing partitions {_names(missing)}: inserts for that month will fail; "
                "run manage.py partitions --ahead 3"
            )


class RowLevelSecurityEnforced(NamedCheck):
    """Every table with a tenant_id column has row-level security enabled, forced and a policy.

    docs/security.md: PostgreSQL enforces tenant isolation. Partitions count as
    tables: they can be queried directly.
    """

    key = "row_level_security_enforced"
    title = "Row-level security forced on tenant tables"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute(
                "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, "
                "EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND EXISTS ("
                "SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
                "AND a.attname = 'tenant_id' AND NOT a.attisdropped) "
                "ORDER BY c.relname"
            )
            rows = cursor.fetchall()
        problems = []
        for table, enabled, forced, has_policy in rows:
            missing = [
                label for label, ok in (("not enabled", enabled), ("not forced", forced)) if not ok
            ]
            if not has_policy:
                missing.append("no policy")
            if missing:
                problems.append(f"{table} ({', '.join(missing)})")
        if problems:
            raise ServiceUnavailable(
                f"row-level security incomplete on {len(problems)} tenant tables: "
                f"{_names(problems)}"
            )


class LeakproofMarks(NamedCheck):
    """The search operators behind the GIN indexes are marked LEAKPROOF (core.ops.leakproof).

    Without the marks nothing breaks loudly: full-text, tag and metadata searches just
    stop using their indexes under row-level security. A restore that forgot them is
    the usual cause.
    """

    key = "leakproof_marks"
    title = "LEAKPROOF marks present"

    def run(self) -> None:
        with probe_cursor() as cursor:
            absent = leakproof.missing(cursor)
        if absent:
            raise ServiceUnavailable(
                f"LEAKPROOF marks missing on {_names(absent)}: searches under row-level "
                "security cannot use their GIN indexes (docs/operations.md, 'Your own PostgreSQL')"
            )


class RuntimeRoleRestricted(NamedCheck):
    """The role the app connects as cannot get around row-level security.

    It must not be a superuser, have BYPASSRLS, or own a table (an owner may switch
    row-level security off), neither itself nor through a role it is a member of.
    The role is never named in the answer.
    """

    key = "runtime_role_restricted"
    title = "Runtime role restricted"

    def run(self) -> None:
        with probe_cursor() as cursor:
            cursor.execute(
                "SELECT r.rolsuper, r.rolbypassrls, EXISTS ("
                "  SELECT 1 FROM pg_roles m WHERE m.oid <> r.oid"
                "  AND pg_has_role(r.oid, m.oid, 'MEMBER') AND (m.rolsuper OR m.rolbypassrls)"
                "), ARRAY("
                "  SELECT c.relname::text FROM pg_class c"
                "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                "  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                "  AND pg_has_role(r.oid, c.relowner, 'MEMBER') ORDER BY 1"
                ") FROM pg_roles r WHERE r.rolname = coalesce(nullif(%s, ''), current_user)",
                [runtime_role_name()],
            )
            row = cursor.fetchone()
        if row is None:
            raise ServiceUnavailable("the runtime role does not exist")
        superuser, bypassrls, privileged_member, owned = row
        problems = [
            message
            for message, wrong in (
                ("is a superuser", superuser),
                ("has BYPASSRLS", bypassrls),
                ("is a member of a superuser or BYPASSRLS role", privileged_member),
            )
            if wrong
        ]
        if owned:
            problems.append(f"owns (or is a member of the owner of) tables: {_names(owned)}")
        if problems:
            raise ServiceUnavailable(f"the runtime role {'; '.join(problems)}")


# repr=False: the dataclass's generated repr would replace NamedCheck's title.
@dataclasses.dataclass(repr=False)
class StorageWritable(NamedCheck):
    """The storage alias can write, read back and delete a file."""

    alias: str = "exports"

    # One check per storage alias: the key and title are the instance's.
    @property
    def key(self) -> str:  # type: ignore[override]
        return f"storage_{self.alias}_writable"

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"Storage '{self.alias}' writable"

    def run(self) -> None:
        storage = storages[self.alias]
        content = uuid.uuid4().hex.encode()
        try:
            name = storage.save(f"health-check-{uuid.uuid4().hex}.txt", ContentFile(content))
            try:
                with storage.open(name) as handle:
                    read_back = handle.read()
            finally:
                storage.delete(name)
        except OSError as error:
            logger.warning("storage %s not writable: %s", self.alias, error)
            raise ServiceUnavailable(
                f"storage '{self.alias}' is not writable ({type(error).__name__})"
            ) from error
        if read_back != content:
            raise ServiceUnavailable(f"storage '{self.alias}' returned other content")


@dataclasses.dataclass(repr=False)
class ReplicasLag(NamedCheck):
    """Each read replica's lag (core.db.replicas, the router's own measurement).

    Unhealthy only when replicas are set and none can take reads, every one unreachable
    or more than DATABASE_REPLICA_MAX_LAG behind: then reads have nowhere to go but the
    primary, which was sized without them. One down of several shows in the answer and
    passes. Names the aliases (replica_1, ...), never their hosts.
    """

    key = "replicas_lag"
    title = "Read replicas within their lag bound"
    summary: str = dataclasses.field(default="", init=False, repr=False)

    def run(self) -> None:
        aliases = replicas.replica_aliases()
        if not aliases:
            return
        # Concurrently: each may take its connect timeout, together within the budget.
        with ThreadPoolExecutor(max_workers=len(aliases)) as executor:
            states = list(
                executor.map(lambda alias: replicas.replica_state(alias, fresh=True), aliases)
            )
        self.summary = "; ".join(state.describe() for state in states)
        if not any(state.usable for state in states):
            raise ServiceUnavailable(f"no replica can take reads: {self.summary}")

    def pretty_status(self) -> str:
        return f"OK: {self.summary}" if self.summary else "OK"


# The oldest job due to run and not taken: since its retry time, or since it was deferred
# (procrastinate records that as an event; its jobs have no creation time of their own).
OLDEST_WAITING_JOB_SQL = """
SELECT extract(epoch FROM now() - min(coalesce(j.scheduled_at, e.at)))::float8, count(*)
FROM procrastinate_jobs j
LEFT JOIN LATERAL (
    SELECT max(at) AS at FROM procrastinate_events
    WHERE job_id = j.id AND type = 'deferred'
) e ON true
WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
"""


@dataclasses.dataclass(repr=False)
class WorkerQueue(NamedCheck):
    """The worker keeps up: no job due to run has waited longer than
    WORKER_QUEUE_MAX_AGE_SECONDS (no worker running, or too few for the work).

    Passing with jobs waiting, it says the oldest one's age and how many wait.
    """

    key = "worker_queue"
    title = "Worker queue moving"
    summary: str = dataclasses.field(default="", init=False, repr=False)

    def run(self) -> None:
        limit = settings.WORKER_QUEUE_MAX_AGE_SECONDS
        with probe_cursor() as cursor:
            cursor.execute(OLDEST_WAITING_JOB_SQL)
            oldest, waiting = one_row(cursor)
        if not waiting:
            return
        age = max(oldest or 0.0, 0.0)
        self.summary = f"oldest waiting job {age:.0f} s old, {waiting} waiting"
        if age > limit:
            raise ServiceUnavailable(
                f"{self.summary}: past WORKER_QUEUE_MAX_AGE_SECONDS ({limit} s); is a worker "
                "running (manage.py procrastinate worker)?"
            )

    def pretty_status(self) -> str:
        return f"OK: {self.summary}" if self.summary else "OK"


@dataclasses.dataclass(repr=False)
class Notes(NamedCheck):
    """What the apps want an operator to see without it being a failure (core.health_notes:
    the quota warnings of agents). Always passes: `OK`, or `OK: ` and the notes; a
    provider that fails is a note itself, never a failure (the database's own checks
    report an outage)."""

    key = "notes"
    title = "Notes from the apps (never failing)"
    summary: str = dataclasses.field(default="", init=False, repr=False)

    def run(self) -> None:
        said: list[str] = []
        for name, provider in sorted(health_note_providers().items()):
            try:
                with probe_cursor() as cursor:
                    said.extend(f"{name}: {note}" for note in provider(cursor))
            except Exception as error:  # noqa: BLE001 - a note must not fail /health/
                logger.warning("health note %s could not be read: %s", name, error)
                said.append(f"{name}: could not be read ({type(error).__name__})")
        self.summary = "; ".join(said)

    def pretty_status(self) -> str:
        return f"OK: {self.summary}" if self.summary else "OK"


class HealthView(HealthCheckView):
    """/health/: HTML for people, `?format=json` or `Accept: application/json` for machines."""

    # The one list of checks: `manage.py health` runs these too.
    checks = (
        DatabaseReachable,
        PostgresVersion,
        VectorExtension,
        VectorOperations,
        MigrationsApplied,
        HnswIndexesValid,
        PartitionsAhead,
        RowLevelSecurityEnforced,
        LeakproofMarks,
        RuntimeRoleRestricted,
        (StorageWritable, {"alias": "exports"}),
        ReplicasLag,
        WorkerQueue,
        Notes,
    )

    def render_to_response_json(self, status: int) -> JsonResponse:
        # django-health-check keys the answer by repr, which is the title for people;
        # a passing check may say more than OK (ReplicasLag: each replica's lag).
        return JsonResponse(
            {
                result.check.key: str(result.error or result.check.pretty_status())
                for result in self.results
            },
            status=status,
        )

    def get_executor(self) -> ThreadPoolExecutor:
        # A thread per check: with the default pool (CPUs + 4 threads) the checks past
        # it would wait for a first round of connect timeouts, and an unreachable
        # database would then be reported after two of them, past the checks' budget.
        return ThreadPoolExecutor(max_workers=len(self.checks), thread_name_prefix="health")


def run_checks() -> list[HealthCheckResult]:
    """Run HealthView's checks outside a request, concurrently as the view does."""
    view = HealthView()

    async def gather() -> list[HealthCheckResult]:
        with view.get_executor() as executor:
            return await asyncio.gather(
                *(check.get_result(executor) for check in view.get_checks())
            )

    return asyncio.run(gather())
