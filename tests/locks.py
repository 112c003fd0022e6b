"""Concurrency tests: sessions started together, and waiting until one is blocked on a lock.

`run_together` starts calls in threads released at once by a barrier, each thread on
its own connection, and hands back what they raised, for the test to assert on.

A test that wants "B waits for A's lock, then A commits" must know B is waiting before
it lets A go; sleeping would only make that likely. This polls pg_locks instead, and
fails the test if nobody is waiting within the timeout (the lock was not taken).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from django.db import connection


def in_thread(target: Callable[[], object], errors: list[Exception]) -> threading.Thread:
    """Start `target` in a thread; what it raises goes to `errors` for the test to assert.

    The thread's connection is closed at the end: Django opens one per thread, and one
    left open would keep the test database from being flushed or dropped.
    """

    def body() -> None:
        try:
            target()
        except Exception as error:  # noqa: BLE001 - asserted by the test
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def run_together(calls: Sequence[Callable[[], object]]) -> list[Exception]:
    """Run each call in its own thread, all released at once by a barrier; what they raised.

    The barrier makes the calls race for real instead of running one after another as
    their threads happen to start.
    """
    barrier = threading.Barrier(len(calls))

    def released(call: Callable[[], object]) -> Callable[[], None]:
        def body() -> None:
            barrier.wait()
            call()

        return body

    errors: list[Exception] = []
    threads = [in_thread(released(call), errors) for call in calls]
    for thread in threads:
        thread.join()
    return errors


def lock_waiters(locktype: str = "advisory") -> int:
    """Sessions of this database waiting for a lock of `locktype`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE d.datname = current_database() AND l.locktype = %s AND NOT l.granted",
            [locktype],
        )
        return cursor.fetchone()[0]


def wait_for_lock_waiters(count: int = 1, *, locktype: str = "advisory", timeout: float = 120):
    """Return once `count` sessions wait for a lock of `locktype`; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while lock_waiters(locktype) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no session waited for an {locktype} lock within {timeout} s")
        time.sleep(0.05)


def row_lock_waiters() -> int:
    """Sessions waiting for another transaction's row lock (on its transaction id).

    pg_locks gives a transaction id lock no database, so these are counted server-wide:
    each worktree's tests have their own server.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
        )
        return cursor.fetchone()[0]
