"""A wrong DATABASE_URL fails at once, in one line naming the server and the reason and
never the password (issue 17): before, a refused port waited out the pool's 30 s and
ended in a 60-line traceback, and a URL that is not one said "Please supply the NAME".

Each case runs manage.py in a subprocess, as a newcomer does. The pool's timeout is set
far above the subprocess's: a command still waiting for the pool cannot pass.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFUSED_URL = "postgres://u:secret@127.0.0.1:1/x"


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DATABASE_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env |= {"DATABASE_URL": database_url, "DATABASE_POOL_TIMEOUT": "600"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--no-input"],
        ["shell", "-c", "from django.db import connection; connection.cursor()"],
    ],
)
def test_a_refused_port_fails_in_one_line_naming_it_without_the_password(command):
    result = manage(*command, database_url=REFUSED_URL)

    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "Connection refused" in result.stderr
    assert "secret" not in result.stdout + result.stderr


def test_runserver_refuses_to_start_in_one_line():
    result = manage("runserver", "127.0.0.1:8790", "--noreload", database_url=REFUSED_URL)

    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url", ["nonsense", "mysql://u:secret@db/x", "postgres://u:secret@db:5432"]
)
def test_a_malformed_url_is_named_as_such(url):
    result = manage("migrate", "--no-input", database_url=url)

    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "malformed" in result.stderr or "names no database" in result.stderr
    assert "postgres://USER:PASSWORD@HOST:PORT/NAME" in result.stderr
    assert "secret" not in result.stdout + result.stderr
