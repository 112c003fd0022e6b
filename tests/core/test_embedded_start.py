"""The embedded server starts with a process's first connection, not when settings load.

Each test runs the project in a subprocess from a copy of `config/` in a temporary
folder (the apps are linked in), so BASE_DIR, and with it var/pgdata, is a fresh one:
what the process starts or leaves running is its own, never the suite's server.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "tenancy", "documents", "agents", "exports")
# Variables that would point the copy at another server than its own embedded one.
DATABASE_VARIABLES = {
    "DATABASE_URL",
    "DATABASE_OWNER_URL",
    "DATABASE_BACKUP_URL",
    "DATABASE_METRICS_URL",
    "POSTGRES_BIN_DIR",
}

# Reports, after each step, whether the server's data folder was made and the server runs.
SCRIPT = textwrap.dedent(
    """
    import io

    import django
    from django.conf import settings
    from django.core.management import call_command

    from core.ops import embedded

    def state(step):
        pgdata = embedded.pgdata_path(settings.BASE_DIR)
        made = (pgdata / "PG_VERSION").exists()
        print(step, "initialised" if made else "absent", end=" ")
        print("running" if made and embedded._is_running(pgdata) else "stopped")

    django.setup()
    state("setup")
    call_command("check", stdout=io.StringIO())
    state("check")
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        print("query", cursor.fetchone()[0])
    state("connected")
    """
)


@pytest.fixture
def fresh_project(tmp_path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    # Copied, not linked: settings take BASE_DIR from their own resolved path.
    (project / "config").mkdir()
    for source in (ROOT / "config").glob("*.py"):
        (project / "config" / source.name).write_text(source.read_text())
    for app in APPS:
        (project / app).symlink_to(ROOT / app)
    (project / "probe.py").write_text(SCRIPT)
    return project


def run_in(project: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in DATABASE_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DEBUG="true", PYTHONPATH=".")
    return subprocess.run(
        [sys.executable, "probe.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_settings_and_checks_start_nothing_and_the_first_query_starts_the_server(
    fresh_project,
):
    result = run_in(fresh_project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "setup absent stopped",
        "check absent stopped",
        "query agentic_app",
        "connected initialised running",
    ]
    # The process that started it was its only user: the server stopped with it.
    from core.ops import embedded

    pgdata = embedded.pgdata_path(fresh_project)
    assert (pgdata / "PG_VERSION").exists()
    assert not embedded._is_running(pgdata)
