"""Two `make install` at once (two `make run` in two terminals, issue 17): the second
waits for the first and installs nothing, instead of a second pip writing the same
virtualenv (an OSError). The Makefile's real recipe runs, with a stand-in Python whose
`venv` and `pip` only record when they run: nothing is downloaded."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.system_programs import require

FAKE_PYTHON = """#!/bin/bash
# A stand-in for python3: `-c` checks pass, `-m venv DIR` copies this script as DIR's
# python, `-m pip` logs its start and end around a pause.
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip") echo "start $$" >> "$FAKE_PIP_LOG"; sleep 1; echo "end $$" >> "$FAKE_PIP_LOG" ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "python3"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return path


def test_two_installs_at_once_run_one_after_the_other(tmp_path, fake_python):
    require("flock", "util-linux")
    if not shutil.which("make"):
        pytest.skip("make is not installed: apt-get install make")
    log = tmp_path / "pip.log"
    command = ["make", "--no-print-directory", "install", f"VENV={tmp_path / 'venv'}"]
    command.append(f"PYTHON={fake_python}")
    env = {**os.environ, "FAKE_PIP_LOG": str(log)}
    makes = [
        subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [make.communicate(timeout=120) for make in makes]

    assert [make.returncode for make in makes] == [0, 0], results
    # One install: pip upgraded itself, then installed the project, in one process each,
    # each finished before the next began.
    lines = log.read_text().split()[::2]
    assert lines == ["start", "end", "start", "end"]
    output = "".join(out + err for out, err in results)
    assert "Another make is installing into" in output
    assert "is installed (by the other make)" in output
