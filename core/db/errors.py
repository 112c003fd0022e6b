"""Database refusals the caller could have avoided, turned into validation errors."""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError

# The SQLSTATE with which a trigger refuses a write that the caller could have avoided
# (a new row for a deleted project): `RAISE EXCEPTION '<what to fix>' USING ERRCODE =
# WRITE_REFUSED_SQLSTATE, COLUMN = '<field>'`. Class 55, "object not in prerequisite
# state", and a code of its own, so no other error is taken for one.
WRITE_REFUSED_SQLSTATE = "55D01"


FOREIGN_KEY_VIOLATION_SQLSTATE = "23503"
# The composite keys between tenant tables: <table>_<field>_tenant_fk
# (core.db.operations.AddTenantForeignKey).
TENANT_KEY_SUFFIX = "_tenant_fk"


def write_refusal(error: BaseException) -> ValidationError | None:
    """The ValidationError naming the field of a refused write, if `error` is one.

    Two refusals are the caller's to fix: a trigger's (a new row for a deleted project),
    which names its field, and a composite tenant key's (a parent that is gone, say a
    project purged while a proposal for it was being written), whose field is in the
    key's name. tenancy.context turns them into the ValidationError as the refused block
    leaves its savepoint, so every service raises it, whichever statement was refused.
    """
    cause = error.__cause__ if isinstance(error, DatabaseError) else None
    diag = getattr(cause, "diag", None)
    if diag is None:
        return None
    if diag.sqlstate == WRITE_REFUSED_SQLSTATE:
        return ValidationError({diag.column_name or NON_FIELD_ERRORS: diag.message_primary})
    key, table = diag.constraint_name or "", diag.table_name or ""
    if (
        diag.sqlstate == FOREIGN_KEY_VIOLATION_SQLSTATE
        and key.startswith(f"{table}_")
        and key.endswith(TENANT_KEY_SUFFIX)
    ):
        field = key[len(table) + 1 : -len(TENANT_KEY_SUFFIX)]
        return ValidationError(
            {field: f"The {field.replace('_', ' ')} does not exist in this tenant (any more)."}
        )
    return None
