"""DATABASE_PREPARED_STATEMENTS: server-side binding and prepared statements on direct
connections, neither behind PgBouncer (DATABASE_DISABLE_SERVER_SIDE_CURSORS=true).

The suite runs on the embedded server, so prepared statements are on; what PgBouncer
mode turns off is read from the connection parameters of settings loaded in a
subprocess, without connecting.
"""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from documents.models import Project
from tenancy.context import tenant_context

PRINT_BINDING = """
import json, django
django.setup()
from django.db import connection
params = connection.get_connection_params()
print(json.dumps({
    "cursor": params["cursor_factory"].__name__,
    "prepare_threshold": params["prepare_threshold"],
}))
"""


def binding_with(**environment: str) -> dict:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": "postgres://app:app-pw@db.internal:6432/agentic",
        **environment,
    }
    result = subprocess.run(
        [sys.executable, "-c", PRINT_BINDING], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_a_statement_run_more_than_five_times_is_prepared_on_a_direct_connection(tenant_a):
    # psycopg prepares a statement at its first execution after prepare_threshold ones.
    for _ in range(6):
        with tenant_context(tenant_a):
            list(Project.objects.filter(name="prepared-probe"))
    assert any('"projects"."name" = $1' in sql for sql in prepared_statements())


def test_a_direct_connection_binds_on_the_server_and_prepares_after_five_runs():
    assert binding_with() == {"cursor": "ServerBindingCursor", "prepare_threshold": 5}


def test_behind_pgbouncer_parameters_bind_on_the_client_and_nothing_is_prepared():
    binding = binding_with(DATABASE_DISABLE_SERVER_SIDE_CURSORS="true")
    assert binding == {"cursor": "Cursor", "prepare_threshold": None}


def test_a_pgbouncer_that_keeps_prepared_statements_may_turn_them_back_on():
    binding = binding_with(
        DATABASE_DISABLE_SERVER_SIDE_CURSORS="true",
        DATABASE_PREPARED_STATEMENTS="true",
        DATABASE_PREPARE_THRESHOLD="2",
    )
    assert binding == {"cursor": "ServerBindingCursor", "prepare_threshold": 2}
