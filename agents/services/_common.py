"""What the agents services share: full_clean() with the model's CHECKs, errors per field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import CheckConstraint, Model, Q


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
        # Every CHECK of the apps is a Q, which names its fields; a condition written as a
        # bare expression names none, so its failure is reported on the whole row.
        condition = constraint.condition
        fields = condition.referenced_base_fields if isinstance(condition, Q) else set()
        if fields & (exclude | set(collected)):
            continue
        try:
            # Django 5.2 has CheckConstraint.validate(); django-stubs 5.2.9 omits
            # BaseConstraint.validate() and its subclasses' overrides.
            constraint.validate(model, instance, exclude=exclude)  # type: ignore[attr-defined]
        except ValidationError as error:
            for field in sorted(fields) or [NON_FIELD_ERRORS]:
                collected.setdefault(field, []).extend(error.messages)
    if collected:
        raise ValidationError(collected)
