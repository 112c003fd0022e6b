"""A real worker process (`manage.py procrastinate worker`) on the test database.

start_worker() runs it as a subprocess with the test's settings given as environment
variables (the embedder, the retries, the lease), the uploads in the test's folder;
stop() ends it as Ctrl-C would (SIGINT, its jobs finished first), kill() as kill -9.
clear_queue() empties the queue's tables, which the test database's flush leaves alone
(procrastinate's models are unmanaged).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

# The worker: Django set up, pointed at the test database, then the real command.
WORKER = """
import sys

import django

django.setup()
from django.conf import settings

settings.DATABASES["default"]["NAME"] = sys.argv[1]
from django.core.management import execute_from_command_line

execute_from_command_line(["manage.py", "procrastinate", "worker", "--name", sys.argv[2]])
"""

# Fast enough for a test: retries 1 s apart, a dead worker noticed within seconds.
FAST = {
    "WORKER_JOB_ATTEMPTS": "3",
    "WORKER_JOB_BACKOFF_SECONDS": "1",
    "WORKER_HEARTBEAT_SECONDS": "1",
    "WORKER_STALLED_SECONDS": "3",
    "DOCUMENT_PROCESSING_LEASE_SECONDS": "3",
    "EMBEDDER_TIMEOUT_SECONDS": "2",
    # A retry's time is not notified: the worker looks for due jobs this often.
    "PROCRASTINATE_WORKER_FETCH_JOB_POLLING_INTERVAL": "0.5",
}
QUEUE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Everything the worker printed (its log)."""
        return self.log.read_text()

    def tail(self) -> str:
        return self.output()[-6000:]

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)


def start_worker(tmp_path: Path, name: str = "test-worker", **environment: str) -> Worker:
    log = tmp_path / f"{name}.log"
    media = settings.STORAGES["default"]["OPTIONS"]["location"]
    env = {**os.environ, **FAST, "MEDIA_ROOT": str(media), **environment}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, connection.settings_dict["NAME"], name],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Worker(process, log)


def wait_for(condition: Callable[[], Any], what: str, worker: Worker, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := condition():
            return found
        if worker.process.poll() is not None:
            pytest.fail(f"the worker ended waiting for {what}:\n{worker.tail()}")
        time.sleep(0.1)
    pytest.fail(f"waited {seconds} s for {what}; the worker's log:\n{worker.tail()}")


def clear_queue() -> None:
    with connection.cursor() as cursor:
        for table in QUEUE_TABLES:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (the names above)


def jobs(task_name: str | None = None) -> list[dict]:
    """The queue's jobs, oldest first: id, task, status, attempts and arguments."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, task_name, status, attempts, args FROM procrastinate_jobs "
            "WHERE %(task)s::text IS NULL OR task_name = %(task)s ORDER BY id",
            {"task": task_name},
        )
        names = [column.name for column in cursor.description]
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    # Django's cursors leave jsonb as its text.
    return [{**job, "args": json.loads(job["args"])} for job in found]
