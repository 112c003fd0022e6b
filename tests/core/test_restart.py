"""A database restart costs at most one failed request (docs/operations.md).

Django's pool hands out a connection only after checking it (CONN_HEALTH_CHECKS), so
connections the restart killed are replaced instead of failing requests. The test
points the default connection at a throwaway server, runs a client loop in a thread
and restarts that server under it: a fast shutdown, then a new server on the same data.
"""

import threading
import time

import pytest
from django.conf import settings
from django.db import DatabaseError, connections

from tests.postgres_servers import data_folder, default_connection_on, running_server

pytestmark = pytest.mark.django_db(transaction=True)

# Counted by when they started: the one request that meets the restart may fail.
REQUESTS_AFTER_RESTART = 20


def request() -> str | None:
    """One request's worth of database work: take a pooled connection, query, give it
    back. The error, if it failed."""
    db = connections["default"]
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_class")
        return None
    except DatabaseError as error:
        return repr(error)
    finally:
        db.close()  # back to the pool, as at the end of a request


def test_the_pool_checks_connections_before_handing_them_out():
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]["min_size"] >= 1


def test_a_restart_under_a_client_loop_fails_at_most_one_request():
    outcomes: list[tuple[float, str | None]] = []
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            outcomes.append((started, request()))
            time.sleep(0.02)
        connections["default"].close()

    client = threading.Thread(target=client_loop)
    with data_folder() as data, default_connection_on(str(data)):
        try:
            with running_server(data):
                assert request() is None, "the throwaway server must answer before the restart"
                client.start()
                time.sleep(0.5)
            # A fast shutdown under the running client loop; then the same data, again.
            with running_server(data):
                restarted_at = time.monotonic()
                deadline = restarted_at + 60
                try:
                    while sum(at > restarted_at for at, _ in outcomes) < REQUESTS_AFTER_RESTART:
                        assert time.monotonic() < deadline, "the client loop stalled"
                        time.sleep(0.05)
                finally:
                    # Before this server stops: a request meeting that stop is not the test's.
                    stop.set()
                    client.join()
        finally:
            stop.set()
            if client.is_alive():
                client.join()

    failures = [error for _, error in outcomes if error]
    assert len(failures) <= 1, failures
    assert [error for at, error in outcomes if at > restarted_at and error] == []
