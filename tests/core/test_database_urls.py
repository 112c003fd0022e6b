"""Every option of DATABASE_URL and DATABASE_OWNER_URL reaches its role's connections.

TLS (sslmode, sslrootcert), a socket directory given as `?host=`, connect_timeout and
server `options` must hold for the runtime role, which serves every request, as much
as for the owner. Settings are loaded in a subprocess with the URLs set, and the
connection parameters are read without connecting.
"""

import json
import os
import subprocess
import sys

import pytest

PRINT_PARAMETERS = """
import json, django
django.setup()
from django.db import connection
from core.db.connections import owner_connection
runtime = connection.get_connection_params()
with owner_connection():
    owner = connection.get_connection_params()
print(json.dumps({"runtime": runtime, "owner": owner}, default=str))
"""


def connection_parameters(runtime_url: str, owner_url: str) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": runtime_url,
        "DATABASE_OWNER_URL": owner_url,
    }
    result = subprocess.run(
        [sys.executable, "-c", PRINT_PARAMETERS],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def parameters() -> dict:
    return connection_parameters(
        "postgres://app:app-pw@/agentic?host=/run/app-socket&sslmode=verify-full"
        "&sslrootcert=/etc/ssl/app-ca.pem&connect_timeout=4"
        "&options=-c%20statement_timeout%3D7s",
        "postgres://owner:owner-pw@db.internal:6432/agentic?sslmode=require&connect_timeout=9",
    )


def test_the_runtime_connection_keeps_tls_socket_timeout_and_options(parameters):
    runtime = parameters["runtime"]
    assert runtime["host"] == "/run/app-socket"
    assert runtime["sslmode"] == "verify-full"
    assert runtime["sslrootcert"] == "/etc/ssl/app-ca.pem"
    assert runtime["connect_timeout"] == 4
    assert runtime["options"] == "-c statement_timeout=7s"
    assert (runtime["user"], runtime["password"], runtime["dbname"]) == ("app", "app-pw", "agentic")


def test_the_owner_connection_keeps_its_own_url_options(parameters):
    owner = parameters["owner"]
    assert (owner["host"], owner["port"], owner["user"]) == ("db.internal", 6432, "owner")
    assert owner["password"] == "owner-pw"
    assert owner["sslmode"] == "require"
    assert owner["connect_timeout"] == 9


def test_the_pool_settings_are_not_connection_parameters(parameters):
    assert "pool" not in parameters["runtime"]


def test_the_owner_does_not_inherit_the_runtime_urls_options(parameters):
    owner = parameters["owner"]
    assert "sslrootcert" not in owner
    assert "options" not in owner
