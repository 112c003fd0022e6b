"""The LEAKPROOF marks on the operators our GIN indexes serve under row-level security.

Under row-level security PostgreSQL only lets an index serve operators it knows cannot
leak rows through errors (LEAKPROOF). These back the full-text (@@), array (@>, &&),
jsonb (@>) and ILIKE searches that our GIN indexes exist for (ILIKE through pg_trgm's
trigram indexes, the admin's text search); none of them raises on the row's data (ILIKE
only on a malformed pattern, which is the query's, not the row's).
Only a superuser can mark them, and the marks live in each database's catalog:
pg_dump does not carry them (they change built-in functions), so the embedded
bootstrap, a restore and DATABASE_URL set-ups (docs/operations.md, "Your own PostgreSQL") apply
them, and a health check fails where they are missing.

Imports nothing from Django: the embedded bootstrap runs before settings exist.
"""

LEAKPROOF_FUNCTIONS = (
    "ts_match_vq(tsvector, tsquery)",
    "arraycontains(anyarray, anyarray)",
    "arrayoverlap(anyarray, anyarray)",
    "jsonb_contains(jsonb, jsonb)",
    "texticlike(text, text)",
)


def mark_statements() -> list[str]:
    return [f"ALTER FUNCTION {function} LEAKPROOF" for function in LEAKPROOF_FUNCTIONS]


def mark(cursor) -> None:
    """Apply the marks (as a superuser) in the connected database."""
    for statement in mark_statements():
        cursor.execute(statement)


def missing(cursor) -> list[str]:
    """The functions of LEAKPROOF_FUNCTIONS not marked in the connected database."""
    cursor.execute(
        "SELECT wanted FROM unnest(%s::text[]) AS wanted "
        "WHERE NOT (SELECT proleakproof FROM pg_proc WHERE oid = wanted::regprocedure) "
        "ORDER BY 1",
        [list(LEAKPROOF_FUNCTIONS)],
    )
    return [wanted for (wanted,) in cursor.fetchall()]
