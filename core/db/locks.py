"""Transaction-scoped advisory locks: how writers of one sequence take turns."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

# The SQL of advisory_xact_lock, for a statement that takes the lock along with other
# work (one round trip instead of two); its one parameter is the key.
ADVISORY_XACT_LOCK_SQL = "pg_advisory_xact_lock(hashtextextended(%s, 0))"


def advisory_xact_lock(key: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Hold an advisory lock on `key` until the current transaction ends.

    Serialises writers of one sequence (versions of a document, messages of a
    conversation): the next one reads the latest row only after this one committed.
    Transaction-scoped, so it is safe behind PgBouncer's transaction pooling.
    """
    if not connections[using].in_atomic_block:
        raise RuntimeError("advisory_xact_lock needs a transaction")
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {ADVISORY_XACT_LOCK_SQL}", [key])


def try_advisory_xact_lock(key: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """advisory_xact_lock without waiting: whether this transaction now holds the lock."""
    if not connections[using].in_atomic_block:
        raise RuntimeError("try_advisory_xact_lock needs a transaction")
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [key])
        return cursor.fetchone()[0]
