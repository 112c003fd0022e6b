"""The operator's Makefile targets and the commands behind them: migrate-status,
migrate-history, migrate-down, migrate-check and db-metrics.

The commands run with call_command on the test database. Each `make` target also runs
once in a subprocess from the repository root, pointed at the test database through
DATABASE_URL (the targets use the development database otherwise), and exits as
docs/development.md says.
"""

from __future__ import annotations

import os
import re
import subprocess
from io import StringIO
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from core.ops.backup import _role
from core.ops.metrics import write_report


def agents_migrations() -> list[str]:
    """The agents app's migrations on disk, in order (the app whose history these use)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return sorted(name for app, name in loader.disk_migrations if app == "agents")


def run(command: str, *args, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


def make(target: str, *variables: str, settings_module: str = "config.settings"):
    """`make <target>` from the repository root, on the test database."""
    params = connection.settings_dict
    socket = quote(params["HOST"], safe="")
    url = "postgres://{user}@/{name}?host={socket}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": url.format(user=params["USER"], name=params["NAME"], socket=socket),
        "DATABASE_OWNER_URL": url.format(
            user=settings.DATABASE_OWNER["USER"], name=params["NAME"], socket=socket
        ),
    }
    return subprocess.run(
        ["make", "--no-print-directory", target, *variables],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        # No terminal, as under a script or CI (migrate-down asks on one).
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture
def embedded_server():
    if os.environ.get("DATABASE_URL"):
        pytest.skip("the make targets are pointed at the test database by its socket")


# --- migrate-status ------------------------------------------------------------------


def test_migrate_status_lists_each_app_with_applied_and_pending(db):
    names = agents_migrations()
    output = run("migrate_status")
    assert re.search(rf"^agents +{len(names)} applied, 0 pending", output, re.MULTILINE)
    assert f"(last applied: {names[-1]})" in output
    assert output.rstrip().endswith("Every migration is applied.")


@pytest.mark.slow
def test_make_migrate_status_exits_0(db, embedded_server):
    result = make("migrate-status")
    assert result.returncode == 0, result.stderr
    assert "Every migration is applied." in result.stdout


# --- migrate-history -------------------------------------------------------------------


def test_migrate_history_lists_applied_migrations_in_order_with_their_time(db):
    lines = run("migrate_history", app="agents").splitlines()
    names = agents_migrations()
    assert [line.split()[-1] for line in lines[:-1]] == names
    assert names[:6] == [
        "0001_initial",
        "0002_tenant_integrity_and_rls",
        "0003_lifecycle_sources_messages_evaluations",
        "0004_new_tables_tenant_integrity_and_rls",
        "0005_validate_tenant_foreign_keys",
        "0006_change_proposals_decisions_execution_errors",
    ]
    assert all(line[26:30] == " UTC" for line in lines[:-1])  # 2026-12-01 10:07:12.123456 UTC
    assert lines[-1] == f"{len(names)} applied migration(s)."


def test_make_migrate_history_exits_0(db, embedded_server):
    result = make("migrate-history")
    assert result.returncode == 0, result.stderr
    # The app column is as wide as the longest label (procrastinate's, since the worker).
    assert re.search(r"\bcore +0001_tenant_context_functions\b", result.stdout)


# --- migrate-down ------------------------------------------------------------------------


@pytest.mark.parametrize("variables", [[], ["APP=agents"], ["TO=0005"]])
def test_make_migrate_down_refuses_without_app_and_to(variables):
    result = make("migrate-down", *variables)
    assert result.returncode == 2
    assert "usage: make migrate-down APP=<app label> TO=<migration name" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "0001"], "App 'nope' has no migrations."),
        (["agents", "0099"], "agents has no migration named '0099'."),
        (["agents", "000"], "More than one agents migration starts with '000'."),
    ],
)
def test_migrate_down_refuses_an_unknown_target(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("migrate_down", *args)


def test_migrate_down_to_where_the_app_is_does_nothing(db):
    latest = agents_migrations()[-1][:4]
    assert run("migrate_down", "agents", latest).strip() == (
        f"Nothing to unapply: agents is at {latest}."
    )


@pytest.mark.django_db(transaction=True)
def test_migrate_down_without_a_terminal_unapplies_nothing_unless_confirmed():
    # Issue 17: under a script or a pipe it used to unapply without asking anyone.
    with pytest.raises(CommandError, match=r"Confirm with --yes \(make migrate-down APP=agents"):
        run("migrate_down", "agents", "0005")
    assert re.search(r"^agents +\d+ applied, 0 pending", run("migrate_status"), re.MULTILINE)


@pytest.mark.django_db(transaction=True)
def test_make_migrate_down_without_yes_refuses_and_says_how_to_confirm(embedded_server):
    result = make("migrate-down", "APP=agents", "TO=0005")

    assert result.returncode != 0
    assert "YES=1" in result.stderr
    assert "Nothing was unapplied" in result.stderr
    assert "Unapplying" not in result.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_migrate_down_shows_the_plan_then_unapplies_and_refuses_to_go_forward():
    try:
        output = run("migrate_down", "agents", "0005", yes=True)
        plan, _, applying = output.partition("Operations to perform:")
        assert "Planned operations:" in plan
        assert "agents.0006_change_proposals_decisions_execution_errors" in plan
        assert "Undo Create model ChangeProposal" in plan
        assert "Unapplying agents.0006_change_proposals_decisions_execution_errors..." in applying
        assert applying.rstrip().endswith("agents is now at 0005.")
        pending = len(agents_migrations()) - 5
        status = run("migrate_status")
        assert re.search(rf"^agents +5 applied, {pending} pending", status, re.MULTILINE)
        with pytest.raises(CommandError, match="ahead of what is applied"):
            run("migrate_down", "agents", "0006", yes=True)
        # What the pending migration looks like to the operator's check.
        result = make("migrate-check")
        assert result.returncode != 0
        assert "agents.0006_change_proposals_decisions_execution_errors" in result.stdout
        assert "migrate-check: migrations are not applied" in result.stderr
    finally:
        call_command("migrate", verbosity=0)


# --- migrate-check -----------------------------------------------------------------------


@pytest.mark.slow
def test_make_migrate_check_exits_0_on_a_clean_tree(db, embedded_server):
    result = make("migrate-check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No planned migration operations." in result.stdout
    assert "No changes detected" in result.stdout


@pytest.mark.slow
def test_make_migrate_check_exits_non_zero_on_model_drift(db, embedded_server):
    result = make("migrate-check", settings_module="tests.drift_settings")
    assert result.returncode != 0
    assert "Create model Drift" in result.stdout
    assert "models changed without a migration" in result.stderr


# --- db-metrics ----------------------------------------------------------------------------

SECTIONS = [
    "== Tables, largest first (database total ",
    "== Indexes, largest first ==",
    "== Cache hit ratio (shared buffers, since the statistics were reset) ==",
    "== Connections to this database by state (server max_connections ",
    "== Dead tuples and vacuum, most dead first ==",
    "== Top statements by total execution time (pg_stat_statements) ==",
]


def metrics_connection(config: dict) -> psycopg.Connection:
    return _role(config, "no role").connect(connection.settings_dict["NAME"])


def test_db_metrics_shows_every_section_with_the_top_statements(db, embedded_server):
    # A limit above the number of tables: which five are largest depends on what the
    # tests before this one left in the database.
    output = run("db_metrics", limit=50)
    assert [section in output for section in SECTIONS] == [True] * len(SECTIONS)
    top = output.split(SECTIONS[-1])[1].splitlines()
    assert top[1].split() == ["calls", "total", "ms", "mean", "ms", "rows", "role", "statement"]
    assert len(top) > 3  # statements listed
    assert "change_proposals" in output  # among the tables


def test_db_metrics_refuses_a_limit_below_1(db):
    with pytest.raises(CommandError, match="--limit must be at least 1"):
        run("db_metrics", limit=0)


def test_without_pg_stat_statements_db_metrics_says_how_to_enable_it_and_shows_the_rest(
    db, embedded_server
):
    out = StringIO()
    with metrics_connection(settings.DATABASE_METRICS) as conn:
        # Dropped inside this connection's transaction, rolled back when it closes.
        conn.execute("DROP EXTENSION pg_stat_statements")
        write_report(conn, out, limit=3)
        conn.rollback()
    output = out.getvalue()
    assert "pg_stat_statements is not installed in this database" in output
    assert "shared_preload_libraries" in output
    assert "CREATE EXTENSION pg_stat_statements" in output
    assert [section in output for section in SECTIONS[:-1]] == [True] * (len(SECTIONS) - 1)


def test_as_the_owner_db_metrics_says_what_it_cannot_see(db, embedded_server):
    out = StringIO()
    owner = {**settings.DATABASE_OWNER, "OPTIONS": {}}  # without Django's pool settings
    with metrics_connection(owner) as conn:
        write_report(conn, out, limit=3)
        # What PostgreSQL itself shows that role of the runtime role's statements.
        [(hidden,)] = conn.execute(
            "SELECT DISTINCT query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
            "WHERE r.rolname = %s",
            [connection.settings_dict["USER"]],
        ).fetchall()
    output = out.getvalue()
    assert f"as role {settings.DATABASE_OWNER['USER']}." in output
    assert "is neither a superuser nor a member of pg_read_all_stats" in output
    assert hidden == "<insufficient privilege>"


def test_make_db_metrics_exits_0(db, embedded_server):
    result = make("db-metrics")
    assert result.returncode == 0, result.stderr
    assert [section in result.stdout for section in SECTIONS] == [True] * len(SECTIONS)
