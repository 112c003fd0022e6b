"""What the agents services share: full_clean() with range checks, errors per field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model


def clean(
    instance: Model,
    *,
    minimums: Mapping[str, float] | None = None,
    maximums: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    errors: Mapping[str, str] | None = None,
) -> None:
    """full_clean() plus range checks and the given errors, raised together per field.

    Ranges are checked on the cleaned (converted) values, so "-1" is caught like -1.
    Constraints and uniqueness are left to the database (validate_constraints=False): a
    Python pre-check of a unique key would race, and the CHECKs hold anyway. Runs inside
    the tenant's context: foreign key validation reads the related rows.
    """
    # Messages, joined by full_clean's ValidationErrors (update_error_dict).
    collected: dict[str, list[Any]] = {
        field: [message] for field, message in (errors or {}).items()
    }
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        collected = error.update_error_dict(collected)
    for field, minimum in (minimums or {}).items():
        value = getattr(instance, field)
        if field not in collected and value is not None and value < minimum:
            collected[field] = [f"{field} must be at least {minimum}."]
    for field, maximum in (maximums or {}).items():
        value = getattr(instance, field)
        if field not in collected and value is not None and value > maximum:
            collected[field] = [f"{field} must be at most {maximum}."]
    if collected:
        raise ValidationError(collected)
