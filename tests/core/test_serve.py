"""`manage.py serve` (`make run`): the web server and the worker as one command.

Real processes on the test database: Ctrl-C (SIGINT) stops both and serve exits 0; a
worker killed with SIGKILL stops the web server too and serve exits non-zero.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest
from django.conf import settings
from django.db import connection

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEADLINE_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url_of_the_tests() -> str:
    params = connection.settings_dict
    return f"postgres://{params['USER']}@/{params['NAME']}?host={params['HOST']}"


@pytest.fixture
def serve(tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url_of_the_tests()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process, port, tmp_path / "serve.log"
    if process.poll() is None:
        process.kill()
        process.wait(30)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def descendants(process) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def worker_of(process) -> psutil.Process | None:
    for child in descendants(process):
        try:
            if "procrastinate" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for(condition, what: str, log) -> object:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    pytest.fail(f"waited {DEADLINE_SECONDS} s for {what}:\n{log.read_text()[-4000:]}")


def test_ctrl_c_stops_the_web_server_and_the_worker(serve):
    process, port, log = serve
    wait_for(lambda: answers(port), "the web server", log)
    wait_for(lambda: "Starting worker" in log.read_text(), "the worker", log)
    children = descendants(process)
    process.send_signal(signal.SIGINT)
    assert process.wait(DEADLINE_SECONDS) == 0
    assert "Stopped the web server and the worker." in log.read_text()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert not answers(port)


def test_a_worker_that_dies_stops_the_web_server_and_serve_fails(serve):
    process, port, log = serve
    wait_for(lambda: answers(port), "the web server", log)
    worker = wait_for(lambda: worker_of(process), "the worker", log)
    web = [child for child in descendants(process) if child.pid != worker.pid]
    worker.kill()
    assert process.wait(DEADLINE_SECONDS) != 0
    assert "The worker process ended (exit status -9); the other was stopped" in log.read_text()
    gone, alive = psutil.wait_procs(web, timeout=10)
    assert alive == []
    assert not answers(port)
