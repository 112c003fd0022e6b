"""Health behind a real PgBouncer whose PostgreSQL is down (docs/operations.md).

PgBouncer runs with the timeouts of the shipped docker/pgbouncer/pgbouncer.ini
(tests/pgbouncer.py), so these check the configuration docker-compose runs: with
PgBouncer's defaults the first request after PostgreSQL went down took two minutes.
"""

import tempfile
import time

import psycopg
import pytest
from django.db import connection

from tests.pgbouncer import routed_through, running_pgbouncer
from tests.postgres_servers import PORT, data_folder, running_server

pytestmark = [pytest.mark.usefixtures("file_storages"), pytest.mark.system_program]

# The throwaway server's bootstrap superuser and database.
SERVER_ROLE = "postgres"
SERVER_DATABASE = "postgres"
# A deadline check, not a speed target: the answer comes after a probe's connect timeout
# or PgBouncer's query_wait_timeout, a few seconds; without them, after 120 s. The margin
# is for a loaded machine.
ANSWER_DEADLINE_SECONDS = 15
# What a probe says when its own deadlines or PgBouncer's fire, rather than django-health-
# check's "Timed out after 5 seconds" (the probe still waiting).
PROBE_FAILURES = ("Unavailable: database unreachable", "Unavailable: database query failed (")


@pytest.fixture
def pgbouncer_whose_database_went_down():
    """PgBouncer in front of a real PostgreSQL that served through it, then stopped.

    Having logged in to the server once, PgBouncer lets clients log in without it and
    queues their queries, as after a PostgreSQL crash or restart in production.
    """
    with (
        data_folder() as data,
        running_pgbouncer(host=str(data), port=str(PORT), users={SERVER_ROLE: ""}) as bouncer,
    ):
        with running_server(data):
            with psycopg.connect(
                host=bouncer.socket_dir, port=bouncer.port, user=SERVER_ROLE, dbname=SERVER_DATABASE
            ) as conn:
                conn.execute("SELECT 1")
        yield bouncer


@pytest.fixture
def pgbouncer_that_never_reached_its_database():
    """PgBouncer in front of a socket folder where no server listens."""
    with (
        tempfile.TemporaryDirectory(prefix="no-server-") as folder,
        running_pgbouncer(host=folder, port=str(PORT), users={SERVER_ROLE: ""}) as bouncer,
    ):
        yield bouncer


def health_through(client, bouncer) -> tuple[float, int, dict]:
    """Seconds /health/ took to answer through `bouncer`, its status and JSON body."""
    with routed_through(connection, bouncer, NAME=SERVER_DATABASE, USER=SERVER_ROLE):
        started = time.monotonic()
        response = client.get("/health/", {"format": "json"})
        return time.monotonic() - started, response.status_code, response.json()


def test_health_answers_unhealthy_in_bounded_time_after_the_database_went_down(
    client, pgbouncer_whose_database_went_down
):
    elapsed, status, body = health_through(client, pgbouncer_whose_database_went_down)
    assert status == 500
    assert body["database_reachable"].startswith(PROBE_FAILURES)
    assert elapsed < ANSWER_DEADLINE_SECONDS


def test_health_answers_unhealthy_in_bounded_time_when_the_database_was_never_up(
    client, pgbouncer_that_never_reached_its_database
):
    elapsed, status, body = health_through(client, pgbouncer_that_never_reached_its_database)
    assert status == 500
    assert body["database_reachable"].startswith(PROBE_FAILURES)
    assert elapsed < ANSWER_DEADLINE_SECONDS
