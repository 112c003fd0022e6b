"""What the agents services share: full_clean() with the model's CHECKs, errors per field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import CheckConstraint, Model


def clean(
    instance: Model,
    *,
    exclude: Iterable[str] = (),
    errors: Mapping[str, str] | None = None,
) -> None:
    """full_clean(), the model's CHECK constraints and the given errors, raised per field.

    The model's constraints and field validators are the one statement of each range
    (a score's 0..100, a rank's >= 1, usage's >= 0): a failed CHECK is reported on the
    fields its condition names, checked on the cleaned (converted) values, so "-1" is
    caught like -1. A constraint on a field that already has an error is skipped. Unique
    constraints are left to the database (validate_constraints=False covers them too): a
    Python pre-check of a unique key would race. Runs inside the tenant's context:
    foreign key validation reads the related rows.
    """
    exclude = set(exclude)
    # Messages, joined by full_clean's ValidationErrors (update_error_dict).
    collected: dict[str, list[Any]] = {
        field: [message] for field, message in (errors or {}).items()
    }
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        collected = error.update_error_dict(collected)
    model = type(instance)
    for constraint in model._meta.constraints:
        if not isinstance(constraint, CheckConstraint):
            continue
        fields = constraint.condition.referenced_base_fields
        if fields & (exclude | set(collected)):
            continue
        try:
            constraint.validate(model, instance, exclude=exclude)
        except ValidationError as error:
            for field in sorted(fields):
                collected.setdefault(field, []).extend(error.messages)
    if collected:
        raise ValidationError(collected)
