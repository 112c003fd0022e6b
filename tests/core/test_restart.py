"""A database restart costs at most one failed request (DESIGN.md section 8).

Django's pool hands out a connection only after checking it (CONN_HEALTH_CHECKS), so
connections the restart killed are replaced instead of failing requests. The test
points the default connection at a throwaway server, runs a client loop in a thread
and restarts that server under it.
"""

import threading
import time

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, connections

from tests.servers import ThrowawayServer

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS_AFTER_RESTART = 20


@pytest.fixture
def throwaway_default():
    """The default connection, with its real pool settings, on a server of our own."""
    settings_dict = connection.settings_dict
    keys = ("HOST", "PORT", "NAME", "USER", "PASSWORD")
    real = {key: settings_dict[key] for key in keys}
    with ThrowawayServer() as server:
        connection.close()
        connection.close_pool()
        settings_dict.update(HOST=server.socket_dir, PORT="", NAME="postgres", USER="postgres")
        settings_dict["PASSWORD"] = ""
        try:
            yield server
        finally:
            connection.close()
            connection.close_pool()
            settings_dict.update(real)


def request() -> bool:
    """One request's worth of database work: take a pooled connection, query, give it back."""
    db = connections["default"]
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_class")
        return True
    except DatabaseError:
        return False
    finally:
        db.close()  # back to the pool, as at the end of a request


def test_the_pool_checks_connections_before_handing_them_out():
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]["min_size"] >= 1


def test_a_restart_under_a_client_loop_fails_at_most_one_request(throwaway_default):
    outcomes: list[tuple[float, bool]] = []
    restarted_at: list[float] = []
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            outcomes.append((time.monotonic(), request()))
            time.sleep(0.02)
        connections["default"].close()

    assert request(), "the throwaway server must answer before the restart"
    client = threading.Thread(target=client_loop)
    client.start()
    try:
        time.sleep(0.5)
        throwaway_default.restart()
        restarted_at.append(time.monotonic())
        deadline = time.monotonic() + 60
        while sum(at > restarted_at[0] for at, _ in outcomes) < REQUESTS_AFTER_RESTART:
            assert time.monotonic() < deadline, "the client loop stalled"
            time.sleep(0.05)
    finally:
        stop.set()
        client.join()

    after = [ok for at, ok in outcomes if at > restarted_at[0]]
    failures = [ok for _, ok in outcomes if not ok]
    assert len(failures) <= 1, outcomes
    assert all(after[1:]), "every request after the first one past the restart succeeds"
