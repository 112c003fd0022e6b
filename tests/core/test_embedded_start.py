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

pytestmark = pytest.mark.slow

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


# Kills the postmaster under a process that uses it, then connects again from that
# process; with "broken" argument, the data folder cannot start any more.
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys

    import django
    import psutil
    from django.conf import settings
    from django.db import OperationalError, connection

    from core.ops import embedded

    def query():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            return cursor.fetchone()[0]

    django.setup()
    print("before", query())
    pgdata = embedded.pgdata_path(settings.BASE_DIR)
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    postmaster.send_signal(signal.SIGKILL)
    postmaster.wait(60)
    if sys.argv[1:] == ["broken"]:
        with open(pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write("shared_buffers = 'a lot'\\n")
    connection.close()  # as at the end of a request
    for attempt in range(2):
        try:
            print("after", query())
        except OperationalError as error:
            print("failed", error)
        connection.close()
    """
)


def run_script(project: Path, script: str, *args: str, **popen) -> subprocess.Popen:
    (project / "script.py").write_text(script)
    env = {key: value for key, value in os.environ.items() if key not in DATABASE_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DEBUG="true", PYTHONPATH=".")
    return subprocess.Popen(
        [sys.executable, "script.py", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_a_killed_server_is_started_again_by_the_next_connection_of_the_same_process(
    fresh_project,
):
    process = run_script(fresh_project, KILL_SCRIPT)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert stdout.splitlines() == ["before agentic_app", "after agentic_app", "after agentic_app"]
    assert "cannot run pgvector" not in stderr
    from core.ops import embedded

    assert not embedded._is_running(embedded.pgdata_path(fresh_project))


def test_a_server_that_cannot_start_again_is_reported_with_its_own_cause_not_the_cpu(
    fresh_project,
):
    process = run_script(fresh_project, KILL_SCRIPT, "broken")
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "before agentic_app"
    # Each attempt tries the start again, and says what the server logged.
    assert len(lines) == 3
    for line in lines[1:]:
        assert line.startswith("failed The embedded PostgreSQL did not start on "), line
        assert 'invalid value for parameter "shared_buffers": "a lot"' in line
    assert "CPU" not in stdout + stderr


# Registers as a user of the server, says so, and exits once the file named by its
# argument exists.
HOLDER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time

    import django
    from django.db import connection

    django.setup()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    print("ready", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.001)
    """
)


def test_two_processes_exiting_at_once_leave_no_server_running(fresh_project, tmp_path):
    """Three users; one dies without deregistering (SIGKILL), the two others exit at the
    same moment: the last of them stops the server, whatever the interleaving."""
    from core.ops import embedded

    pgdata = embedded.pgdata_path(fresh_project)
    for attempt in range(2):
        go = tmp_path / f"go-{attempt}"
        users = []
        for _ in range(3):
            users.append(run_script(fresh_project, HOLDER_SCRIPT, str(go)))
            assert users[-1].stdout.readline() == "ready\n", users[-1].communicate()[1]
        users[2].kill()
        users[2].wait()
        go.touch()
        outputs = [user.communicate(timeout=120) for user in users[:2]]
        assert [user.returncode for user in users[:2]] == [0, 0], outputs
        assert not embedded._is_running(pgdata), (attempt, outputs)


def test_the_vector_check_of_a_server_it_cannot_reach_does_not_blame_the_cpu(tmp_path):
    """What main said after a kill -9: "cannot run pgvector on this CPU", for a server
    that was simply not running."""
    from core.ops import embedded

    with pytest.raises(embedded.EmbeddedServerUnusable) as stopped:
        embedded.check_vector_work(str(tmp_path))
    message = str(stopped.value)
    assert message.startswith(
        "The embedded PostgreSQL does not accept connections, so its vector check could not run: "
    )
    assert "CPU" not in message
