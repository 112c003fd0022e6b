"""mypy with django-stubs is clean on every app, core and config (issue 18).

`make lint` runs it; this test runs it too, so that CI, which runs the suite, checks the
types of every submission. Its files, plugin and strictness are pyproject.toml's
[tool.mypy]. django-stubs' plugin imports the settings (development mode, as manage.py
would): nothing connects to a database, so the embedded server is not started.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_errors(tmp_path):
    result = subprocess.run(
        # A cache of its own, never one that a `make lint` running beside it writes.
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT,
        env={**os.environ, "DJANGO_DEBUG": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()
    assert result.returncode == 0, f"{summary}\n{result.stdout[-6000:]}{result.stderr[-2000:]}"
    assert summary.startswith("Success: no issues found in ")
