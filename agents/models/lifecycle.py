"""The SQL of a status lifecycle's transition trigger, built from its allowed transitions.

Executions and change proposals declare their lifecycle as a set of (old, new) statuses;
the database refuses every other change with a trigger built from these two pieces, and
the services move along the same set with agents.services.lifecycle.move_status. The
builder lives with the models, not beside move_status, because the models' Meta.triggers
need it at import time and agents.services imports the models.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models


def transition_allowed_sql(
    transitions: Iterable[tuple[models.TextChoices, models.TextChoices]],
) -> str:
    """A row trigger's condition: OLD.status -> NEW.status is one of `transitions`."""
    return " OR ".join(
        f"(OLD.status = '{old.value}' AND NEW.status = '{new.value}')"
        for old, new in sorted(transitions)
    )


def transition_refused_sql(noun: str) -> str:
    """The RAISE that refuses a status change, naming the `noun`'s row and both statuses."""
    return (
        f"RAISE EXCEPTION '{noun} %: status cannot change from % to %', "
        "OLD.id, OLD.status, NEW.status USING ERRCODE = 'integrity_constraint_violation';"
    )
