"""Database refusals the caller could have avoided, turned into validation errors."""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError

# The SQLSTATE with which a trigger refuses a write that the caller could have avoided
# (a new row for a deleted project): `RAISE EXCEPTION '<what to fix>' USING ERRCODE =
# WRITE_REFUSED_SQLSTATE, COLUMN = '<field>'`. Class 55, "object not in prerequisite
# state", and a code of its own, so no other error is taken for one.
WRITE_REFUSED_SQLSTATE = "55D01"


def write_refusal(error: BaseException) -> ValidationError | None:
    """The ValidationError naming the field that a trigger's refusal names, if `error` is one.

    tenancy.context turns a refusal into it as the refused block leaves its savepoint, so
    every service raises it, whichever statement the trigger refused.
    """
    cause = error.__cause__ if isinstance(error, DatabaseError) else None
    diag = getattr(cause, "diag", None)
    if diag is None or diag.sqlstate != WRITE_REFUSED_SQLSTATE:
        return None
    return ValidationError({diag.column_name or NON_FIELD_ERRORS: diag.message_primary})
