"""System checks: the database must be PostgreSQL 18+ with pgvector 0.8+ (docs/operations.md).

Registered under the `database` tag, so they run on `migrate` (which `make run`
does first) and `check --database default`; `core.ops.health` runs the same rules.
"""

from django.core.checks import Error, Tags, register
from django.db import connections

MIN_POSTGRES = (18, 0)
MIN_PGVECTOR = (0, 8)


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def postgres_problem(server_version_num: int) -> str | None:
    """What is wrong with the server's version (`server_version_num`), if anything."""
    found = (server_version_num // 10000, server_version_num % 10000)
    if found >= MIN_POSTGRES:
        return None
    return (
        f"PostgreSQL {found[0]}.{found[1]} found, PostgreSQL {MIN_POSTGRES[0]} or newer "
        "is required."
    )


def pgvector_problem(vector_version: str | None) -> str | None:
    """What is wrong with pgvector's version (None: not available), if anything."""
    required = f"pgvector {MIN_PGVECTOR[0]}.{MIN_PGVECTOR[1]} or newer is required."
    if vector_version is None:
        return f"The pgvector extension (vector) is not available on this server; {required}"
    if parse_version(vector_version) < MIN_PGVECTOR:
        return f"pgvector {vector_version} found, {required}"
    return None


def version_problems(server_version_num: int, vector_version: str | None) -> list[str]:
    """What is wrong with the found versions, in words an operator can act on."""
    problems = (postgres_problem(server_version_num), pgvector_problem(vector_version))
    return [problem for problem in problems if problem]


def read_versions(cursor) -> tuple[int, str | None]:
    """The server's version and pgvector's: the installed one, else the one on offer.

    Before the first migration creates the extension, the version the server would
    install is what matters.
    """
    cursor.execute(
        "SELECT current_setting('server_version_num')::int, coalesce("
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
        "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'))"
    )
    return cursor.fetchone()


@register(Tags.database)
def check_database_versions(app_configs=None, databases=None, **kwargs) -> list[Error]:
    errors = []
    for alias in databases or ():
        with connections[alias].cursor() as cursor:
            problems = version_problems(*read_versions(cursor))
        errors += [Error(problem, id="core.E001") for problem in problems]
    return errors
