"""A status change along a lifecycle that the database's transition triggers also guard.

Executions (agents.services.transitions) and change proposals (agents.services.proposals) move
the same way: one conditional UPDATE from a status that may precede the new one, so two
concurrent moves cannot both succeed, and a refused move says where the row stands.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model


def move_status(
    row: Model,
    *,
    tenant_id: uuid.UUID,
    to: str,
    transitions: Iterable[tuple[str, str]],
    changes: dict[str, Any],
    noun: str,
) -> None:
    """Move `row` to status `to` if `transitions` allow it from its current one.

    Runs inside the tenant's context. `changes` are the other columns to write;
    expressions (the database clock) are evaluated by PostgreSQL. A refusal is a
    ValidationError on `status` naming the `noun`; otherwise `row` is refreshed.
    """
    predecessors = sorted(old for old, new in transitions if new == to)
    rows = type(row)._default_manager.filter(tenant_id=tenant_id, pk=row.pk)
    if not rows.filter(status__in=predecessors).update(status=to, **changes):
        current = rows.values_list("status", flat=True).first()
        raise ValidationError(
            {
                "status": f"Cannot move the {noun} from {current or 'nowhere'} to {to}; "
                f"only from {' or '.join(predecessors)}."
            }
        )
    row.refresh_from_db()
