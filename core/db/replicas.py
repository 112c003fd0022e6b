"""Read replicas: PostgreSQL streaming standbys behind a database router (docs/operations.md).

`DATABASE_REPLICA_URLS` become the aliases replica_1..n (config/settings.py) and
`ReplicaRouter` routes between them and "default", the primary. A read goes to a
replica unless the unit of work needs the primary's view of the data:

- once it has written: any statement other than a plain SELECT on the primary pins the
  rest of the request (outside a request: of the thread) to the primary, so a read
  after a write, in its transaction or after it, sees it (except a write made inside
  `unpinned_write`, which nothing reads back: the search log);
- in a request that is not GET, HEAD or OPTIONS (a form post reads what it changes);
- outside GET/HEAD requests, inside a `transaction.atomic()` block on the primary other
  than the tenant-context ones (a service may read, then write what it read);
- while the primary connection runs as another role than the runtime role (the owner's
  system jobs and migrations: the replica connections are the runtime role's);
- for the sessions and the login lockout (their reads decide who is logged in).

Writes always go to the primary. A replica more than `DATABASE_REPLICA_MAX_LAG` seconds
behind, or unreachable, is skipped (`replica_state`), and with none left reads go to
the primary.

Row-level security holds on a replica as on the primary: `tenancy.context` declares the
transaction settings of each tenant context (`replica_scope`), and the first read routed
to a replica inside one opens a transaction there and sets the same settings, for as
long as the outermost context lasts; a context that never reads a replica costs nothing.
Outside any context a replica read runs with no tenant, so it sees no tenant row.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import psycopg
from asgiref.local import Local
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction

from core.db.connections import one_row

logger = logging.getLogger(__name__)

# How long one lag measurement is used for, so a read costs no extra query.
LAG_CACHE_SECONDS = 1.0
# An unreachable replica is tried again after this long, not on every read.
DOWN_RETRY_SECONDS = 5.0
# Their reads decide who is logged in and who is locked out: always the primary's view.
PRIMARY_ONLY_APPS = frozenset({"sessions", "axes"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Seconds the standby is behind: 0 when it has replayed all it received (an idle primary
# writes nothing new, so the last replayed commit grows old on an up-to-date standby),
# else the age of the last commit it replayed. NULL when neither is known. Also what it
# has received, for settling (below).
LAG_QUERY = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "THEN 0 ELSE greatest(0, extract(epoch FROM clock_timestamp() - "
    "pg_last_xact_replay_timestamp()))::float8 END, pg_last_wal_receive_lsn()::text"
)
# That age overstates a standby caught in the moment between receiving new WAL and
# replaying it: after minutes without a commit, any new WAL (autovacuum, hint bits, a
# commit) reads as minutes behind. A fresh measurement (the health check's) therefore
# asks again, for up to SETTLE_SECONDS, whether the standby has replayed what it had
# received; if so it is keeping up, and its lag is the time that took.
SETTLE_SECONDS = 0.5
SETTLE_STEP_SECONDS = 0.02
CAUGHT_UP_QUERY = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"


def replica_aliases() -> list[str]:
    return list(settings.DATABASE_REPLICA_ALIASES)


# --- Lag -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    """One measurement of a replica: its lag in seconds and, if it is skipped, why."""

    alias: str
    lag: float | None
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        """For the health answer: the alias and numbers only, never a host or a role."""
        if self.problem:
            return f"{self.alias}: {self.problem}"
        return f"{self.alias}: {self.lag:.1f} s behind"


class _LagProbe:
    """Measures one replica over a connection of its own, outside the pool and any
    transaction of the request, bounded by DATABASE_REPLICA_CONNECT_TIMEOUT."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.lock = threading.Lock()
        self.state: ReplicaState | None = None
        self.measured_at = 0.0
        self._conn: psycopg.Connection | None = None

    def fresh_enough(self) -> bool:
        if self.state is None:
            return False
        ttl = LAG_CACHE_SECONDS if self.state.lag is not None else DOWN_RETRY_SECONDS
        return time.monotonic() - self.measured_at < ttl

    def measure(self, *, settle: bool = False) -> ReplicaState:
        try:
            in_recovery, lag, received = self._query()
            if settle and in_recovery and lag and received is not None:
                lag = self._settled(lag, received)
        except psycopg.Error as error:
            # The driver's message names hosts and roles: the log only.
            logger.warning("replica %s unreachable: %s", self.alias, error)
            self.close()
            return self.mark_unreachable()
        self.state, self.measured_at = self._judge(in_recovery, lag), time.monotonic()
        return self.state

    def mark_unreachable(self) -> ReplicaState:
        self.state = ReplicaState(self.alias, None, "unreachable")
        self.measured_at = time.monotonic()
        return self.state

    def _judge(self, in_recovery: bool, lag: float | None) -> ReplicaState:
        if not in_recovery:
            # A promoted standby no longer follows the primary: its reads would go stale.
            return ReplicaState(self.alias, None, "not a standby (promoted?)")
        if lag is None:
            return ReplicaState(self.alias, None, "lag unknown (nothing replayed yet)")
        limit = settings.DATABASE_REPLICA_MAX_LAG
        if lag > limit:
            too_far = f"{lag:.1f} s behind, more than DATABASE_REPLICA_MAX_LAG {limit:g} s"
            return ReplicaState(self.alias, lag, too_far)
        return ReplicaState(self.alias, lag)

    def _settled(self, lag: float, received: str) -> float:
        """`lag`, or the seconds the standby took to replay the WAL it had `received`."""
        started = time.monotonic()
        while time.monotonic() - started < SETTLE_SECONDS:
            time.sleep(SETTLE_STEP_SECONDS)
            if self._query(CAUGHT_UP_QUERY, [received])[0]:
                return time.monotonic() - started
        return lag

    def _query(self, sql: str = LAG_QUERY, params: list | None = None) -> tuple:
        if self._conn is None or self._conn.closed:
            connect_params = connections[self.alias].get_connection_params()
            connect_params["connect_timeout"] = settings.DATABASE_REPLICA_CONNECT_TIMEOUT
            self._conn = psycopg.connect(**connect_params, autocommit=True)
        timeout_ms = settings.DATABASE_REPLICA_CONNECT_TIMEOUT * 1000
        with self._conn.transaction(), self._conn.cursor() as cursor:
            # SET LOCAL: behind PgBouncer a session setting would outlive the probe.
            cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            cursor.execute(sql, params)
            return one_row(cursor)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_probes: dict[str, _LagProbe] = {}
_probes_lock = threading.Lock()


def _probe(alias: str) -> _LagProbe:
    with _probes_lock:
        return _probes.setdefault(alias, _LagProbe(alias))


def replica_state(alias: str, *, fresh: bool = False) -> ReplicaState:
    """The replica's lag, measured at most once a second per process (`fresh`: now).

    A reader never waits for another thread's measurement: it takes the previous one,
    and a replica never measured yet counts as unusable until its first answer.
    """
    probe = _probe(alias)
    # fresh_enough() is False while there is no state: the `is not None` tells mypy so.
    if not fresh and probe.fresh_enough() and probe.state is not None:
        return probe.state
    if probe.lock.acquire(blocking=fresh, timeout=-1):
        try:
            if fresh or not probe.fresh_enough() or probe.state is None:
                return probe.measure(settle=fresh)
            return probe.state
        finally:
            probe.lock.release()
    return probe.state or ReplicaState(alias, None, "being measured")


def forget_measurements() -> None:
    """Drop every cached measurement and probe connection (tests, after a fork)."""
    with _probes_lock:
        for probe in _probes.values():
            with probe.lock:
                probe.close()
        _probes.clear()


# --- What the unit of work needs -------------------------------------------------------


@dataclass
class _Scope:
    """A tenant context on the primary: its atomic block and its transaction settings."""

    block: object
    settings: dict[str, str]


@dataclass
class _Routing:
    """Per thread (and async task, like Django's connections): where reads may go."""

    pinned: bool = False
    read_only: bool = False
    scopes: list[_Scope] = field(default_factory=list)
    # The replica the outermost tenant context reads from, its open transaction there,
    # and the settings set in it.
    replica: str | None = None
    replica_transaction: ExitStack | None = None
    applied: dict[str, str] = field(default_factory=dict)


_local = Local()


def _routing() -> _Routing:
    try:
        return _local.routing
    except AttributeError:
        _local.routing = _Routing()
        return _local.routing


@contextmanager
def unit_of_work(*, read_only: bool = False, on_primary: bool = False) -> Iterator[None]:
    """A request or a job whose reads follow the rules above, from a clean slate.

    A job (the default, say a task of a worker): reads go to a replica outside
    `transaction.atomic()` blocks until it writes. `read_only=True` (GET, HEAD): inside
    atomic blocks too (the admin opens one around every change page), until it writes.
    `on_primary=True` (a form post): every read goes to the primary. Outside any unit,
    a thread is a job that lasts as long as it does.
    """
    routing = _routing()
    saved = (routing.pinned, routing.read_only)
    routing.pinned, routing.read_only = on_primary, read_only
    try:
        yield
    finally:
        routing.pinned, routing.read_only = saved


@contextmanager
def unpinned_write() -> Iterator[None]:
    """A write the unit of work never reads back (the search log, documents.search): it
    leaves the pin as it was, so the reads after it may still go to a replica. Writes
    themselves always go to the primary."""
    routing = _routing()
    pinned = routing.pinned
    try:
        yield
    finally:
        routing.pinned = pinned


class ReplicaRoutingMiddleware:
    """Each request is a unit of work: GET and HEAD may read on a replica, posts may not."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        safe = request.method in SAFE_METHODS
        with unit_of_work(read_only=safe, on_primary=not safe):
            return self.get_response(request)


# Statements that change nothing; a SELECT that locks rows is a write for this purpose.
_READ_PREFIXES = ("SELECT", "SAVEPOINT", "RELEASE", "ROLLBACK TO", "SHOW", "SET ")
_LOCKING_CLAUSE = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b", re.I)


def _is_write(sql) -> bool:
    if not isinstance(sql, str):
        return True  # psycopg.sql compositions: DDL and grants
    head = sql.lstrip()[:12].upper()
    if not head.startswith(_READ_PREFIXES):
        return True
    return head.startswith("SELECT") and _LOCKING_CLAUSE.search(sql) is not None


def _pin_on_write(execute, sql, params, many, context):
    if _is_write(sql):
        _routing().pinned = True
    return execute(sql, params, many, context)


def watch_primary_writes(sender, connection, **kwargs) -> None:
    """connection_created receiver (core.apps): where replicas are set, every statement
    on the primary is looked at; elsewhere none is."""
    if connection.alias != DEFAULT_DB_ALIAS:
        return
    watching = _pin_on_write in connection.execute_wrappers
    if replica_aliases() and not watching:
        connection.execute_wrappers.append(_pin_on_write)
    elif watching and not replica_aliases():
        connection.execute_wrappers.remove(_pin_on_write)


def _needs_primary(routing: _Routing) -> bool:
    if routing.pinned:
        return True
    primary = connections[DEFAULT_DB_ALIAS]
    if primary.settings_dict.get("USER") != settings.DATABASE_RUNTIME_ROLE:
        return True
    if routing.read_only:
        return False
    scope_blocks = {id(scope.block) for scope in routing.scopes}
    return any(id(block) not in scope_blocks for block in primary.atomic_blocks)


def _pick_replica() -> str | None:
    usable = [alias for alias in replica_aliases() if replica_state(alias).usable]
    return random.choice(usable) if usable else None  # noqa: S311 (spreading load)


# --- Tenant contexts on the replica ----------------------------------------------------


class replica_scope:  # noqa: N801 (used like contextlib's context managers)
    """Declares a tenant context's transaction settings, so replica reads carry them.

    Entered by tenancy.context right inside the context's atomic block on the primary,
    after setting `values` there: that block then does not count as a code transaction,
    and the settings (merged over the enclosing context's) are set on a replica's
    transaction before the first read routed to it. The replica transaction lasts as
    long as the outermost context.
    """

    def __init__(self, values: dict[str, str], *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.values = values
        # Without replicas, or for another alias, there is nothing to carry.
        self.active = using == DEFAULT_DB_ALIAS and bool(replica_aliases())

    def __enter__(self) -> None:
        if not self.active:
            return
        routing = _routing()
        outer = routing.scopes[-1].settings if routing.scopes else {}
        block = connections[DEFAULT_DB_ALIAS].atomic_blocks[-1]
        routing.scopes.append(_Scope(block, {**outer, **self.values}))

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if not self.active:
            return
        routing = _routing()
        routing.scopes.pop()
        if routing.scopes or routing.replica_transaction is None:
            return
        opened, routing.replica_transaction = routing.replica_transaction, None
        routing.replica, routing.applied = None, {}
        opened.__exit__(exc_type, exc_value, traceback)


def _scoped_replica(routing: _Routing) -> str | None:
    """The replica of the current tenant context, its transaction open and scoped."""
    if routing.replica is None:
        alias = _pick_replica()
        if alias is None:
            return None
        opened = ExitStack()
        try:
            opened.enter_context(transaction.atomic(using=alias))
        except OperationalError as error:
            # It went down since it was measured: this context reads on the primary.
            logger.warning("replica %s unreachable: %s", alias, error)
            _probe(alias).mark_unreachable()
            connections[alias].close()
            return None
        routing.replica, routing.replica_transaction = alias, opened
    wanted = routing.scopes[-1].settings
    if routing.applied != wanted:
        # A name the inner context set and this one does not is cleared.
        values = {name: wanted.get(name, "") for name in routing.applied.keys() | wanted.keys()}
        with connections[routing.replica].cursor() as cursor:
            cursor.execute(
                "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(values)),
                [part for item in values.items() for part in item],
            )
        routing.applied = dict(wanted)
    return routing.replica


# --- The router -------------------------------------------------------------------------


class ReplicaRouter:
    """DATABASE_ROUTERS entry: reads as described above, writes and migrations on the primary."""

    def db_for_read(self, model, **hints) -> str:
        routing = _routing()
        if (
            not replica_aliases()
            or model._meta.app_label in PRIMARY_ONLY_APPS
            or _needs_primary(routing)
        ):
            return DEFAULT_DB_ALIAS
        if routing.scopes:
            return _scoped_replica(routing) or DEFAULT_DB_ALIAS
        return _pick_replica() or DEFAULT_DB_ALIAS

    def db_for_write(self, model, **hints) -> str:
        # Explicit: a row read on a replica would otherwise be saved back to it.
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool | None:
        same_database = {DEFAULT_DB_ALIAS, *replica_aliases()}
        if obj1._state.db in same_database and obj2._state.db in same_database:
            return True
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool | None:
        return False if db in replica_aliases() else None
