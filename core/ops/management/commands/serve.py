"""`serve [ADDRPORT]`: the development web server and the worker, as one command (`make run`).

Both run as child processes of this one: Ctrl-C (SIGINT) or SIGTERM stops both, each the
way Ctrl-C stops it alone (the worker finishes its running jobs first); and when either
ends by itself (a crash, a port in use), the other is stopped too, and serve exits with
the status of the one that ended first, so a broken half never goes unnoticed.
The children run in a process group of their own: a Ctrl-C reaches them once, from here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

# How long a child may take to stop after SIGINT (the worker finishing a job) before it
# is killed.
STOP_SECONDS = 30
POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = (
        "Run the development web server (runserver) and the worker (procrastinate worker) "
        "together; Ctrl-C stops both, and either ending stops the other."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options) -> None:
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        commands = {
            "web": [*manage, "runserver", addrport],
            "worker": [*manage, "procrastinate", "worker"],
        }
        children = {
            # Our own manage.py, no shell.
            name: subprocess.Popen(command, start_new_session=True)  # noqa: S603
            for name, command in commands.items()
        }
        stopping: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopping.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            first = self._wait_for_first_end(children, stopping)
        finally:
            self._stop_all(children)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if first is None:
            self.stdout.write("Stopped the web server and the worker.")
            return
        name, code = first
        self.stderr.write(
            f"The {name} process ended (exit status {code}); the other was stopped with it."
        )
        sys.exit(code or 1)

    def _wait_for_first_end(
        self, children: dict[str, subprocess.Popen], stopping: list[int]
    ) -> tuple[str, int] | None:
        """The first child to end by itself, with its status; None when asked to stop."""
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    return name, code
            time.sleep(POLL_SECONDS)
        return None

    def _stop_all(self, children: dict[str, subprocess.Popen]) -> None:
        # To each child's whole group: runserver's autoreloader serves from a child of its own.
        running = [child for child in children.values() if child.poll() is None]
        for child in running:
            _signal_group(child, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        for child in running:
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        for child in children.values():
            # What a child that ended by itself left behind (the reloader's server).
            _signal_group(child, signal.SIGKILL)


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass
