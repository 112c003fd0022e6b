"""DATABASE_REPLICA_URLS and what pins reads to the primary (core.db.replicas), without a server.

The replica tests themselves, on a real streaming standby, are in test_replicas.py.
"""

import json
import os
import subprocess
import sys

import pytest

from core.db import replicas


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ('SELECT "projects"."id" FROM "projects"', False),
        ("  select set_config('app.tenant_ids', %s, true)", False),
        ('SAVEPOINT "s1_x1"', False),
        ('RELEASE SAVEPOINT "s1_x1"', False),
        ("SET LOCAL statement_timeout = 1000", False),
        ('SELECT "projects"."id" FROM "projects" FOR UPDATE', True),
        ('SELECT 1 FROM "projects" FOR NO KEY UPDATE SKIP LOCKED', True),
        ('INSERT INTO "projects" ("id") VALUES (%s)', True),
        ('UPDATE "projects" SET "name" = %s', True),
        ("WITH moved AS (DELETE FROM t RETURNING *) SELECT 1", True),
    ],
)
def test_which_statements_pin_the_unit_to_the_primary(sql, writes):
    assert replicas._is_write(sql) is writes


PRINT_REPLICAS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({"databases": settings.DATABASES, "routers": settings.DATABASE_ROUTERS,
                  "aliases": settings.DATABASE_REPLICA_ALIASES}, default=str))
"""


def load_settings(**environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **environment}
    return subprocess.run(
        [sys.executable, "-c", PRINT_REPLICAS], capture_output=True, text=True, timeout=120, env=env
    )


def test_replica_urls_become_aliases_that_mirror_default_in_tests():
    result = load_settings(
        DATABASE_REPLICA_URLS="postgres://app:pw@replica-a:5432/agentic?sslmode=verify-full,"
        "postgres://app:pw@/agentic?host=/run/replica-b&connect_timeout=7",
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded["aliases"] == ["replica_1", "replica_2"]
    assert loaded["routers"] == ["core.db.replicas.ReplicaRouter"]
    first, second = (loaded["databases"][alias] for alias in loaded["aliases"])
    default = loaded["databases"]["default"]
    assert first["HOST"] == "replica-a" and first["OPTIONS"]["sslmode"] == "verify-full"
    assert second["HOST"] == "/run/replica-b" and second["OPTIONS"]["connect_timeout"] == 7
    for replica in (first, second):
        assert replica["ENGINE"] == default["ENGINE"] == "core.db.backend"
        assert replica["TEST"]["MIRROR"] == "default"
        assert replica["CONN_HEALTH_CHECKS"] is True
        assert replica["OPTIONS"]["pool"]["timeout"] <= 3
    assert first["OPTIONS"]["connect_timeout"] == 3


def test_no_replica_urls_means_no_router():
    result = load_settings(DATABASE_REPLICA_URLS="")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded["aliases"] == [] and loaded["routers"] == []


def test_a_lag_bound_of_zero_is_refused():
    result = load_settings(DATABASE_REPLICA_MAX_LAG="0")
    assert result.returncode != 0
    assert "DATABASE_REPLICA_MAX_LAG must be more than 0 seconds" in result.stderr
