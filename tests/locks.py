"""Waiting, in concurrency tests, until another session is blocked on a lock.

A test that wants "B waits for A's lock, then A commits" must know B is waiting before
it lets A go; sleeping would only make that likely. This polls pg_locks instead, and
fails the test if nobody is waiting within the timeout (the lock was not taken).
"""

from __future__ import annotations

import time

import pytest
from django.db import connection


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
