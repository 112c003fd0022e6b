"""How the references run: plain psycopg as the runtime role, under the same tenant setting.

Row-level security applies to the reference exactly as to the project, so every
reference transaction sets `app.tenant_ids` with set_config(..., true) first, the way
tenant_context does; otherwise it would see no rows (or other rows) and measure other
work. Where the reference is "the project's own query", it is taken from what the
project actually sent (an execute wrapper on Django's connection), so it cannot drift
from the code being measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg
from django.db import connection

from tenancy.context import (
    BYPASS_SETTING,
    SCOPE_SETTING,
    TENANT_IDS_SETTING,
    USER_ID_SETTING,
    normalize_tenant_ids,
)

Statement = tuple[str, Sequence | dict | None]
# Statements of tenant_context itself, which the reference replaces by its own set_config.
_CONTEXT_SETTINGS = (TENANT_IDS_SETTING, SCOPE_SETTING, USER_ID_SETTING, BYPASS_SETTING)


def tenant_ids_text(tenant_ids) -> str:
    """app.tenant_ids as tenant_context writes it."""
    return ",".join(map(str, normalize_tenant_ids(tenant_ids)))


class Reference:
    """A raw psycopg connection of the runtime role (benchmarks.database.connect)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def run(
        self,
        tenant_ids,
        statements: Sequence[Statement],
        *,
        settings: dict[str, str] | None = None,
    ) -> list[list[tuple]]:
        """One transaction: set the tenants (and `settings`), run `statements`, commit.

        Returns each statement's rows.
        """
        with self.conn.transaction(), self.conn.cursor() as cursor:
            self.set_scope(cursor, tenant_ids, settings)
            results = []
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall() if cursor.description else [])
            return results

    @staticmethod
    def set_scope(cursor, tenant_ids, settings: dict[str, str] | None = None) -> None:
        """The tenants (and `settings`) for the current transaction, in one round trip."""
        pairs = [(TENANT_IDS_SETTING, tenant_ids_text(tenant_ids)), *(settings or {}).items()]
        setter = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(pairs))
        cursor.execute(setter, [value for pair in pairs for value in pair])

    def rows(self, tenant_ids, statements: Sequence[Statement], **kwargs) -> int:
        return sum(len(rows) for rows in self.run(tenant_ids, statements, **kwargs))


def _is_context_statement(sql: str, params) -> bool:
    values = params.values() if isinstance(params, dict) else (params or ())
    return any(name in sql or name in values for name in _CONTEXT_SETTINGS)


def own_statements(call: Callable[[], object]) -> list[Statement]:
    """The statements `call` sends through Django, but those of tenant_context itself."""
    captured: list[Statement] = []

    def record(execute, sql, params, many, context):
        if not _is_context_statement(sql, params):
            captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        call()
    return captured
