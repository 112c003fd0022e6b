"""The write every app's services share: a plain update of a row's own fields.

HackSoft's styleguide keeps the same `model_update` in its common services: an
entity's update service (or the admin's change form, for a model whose edits follow no
rule beyond the model's own validators and constraints) states which fields change,
and this validates and writes exactly those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import Model

M = TypeVar("M", bound=Model)


def model_update(*, instance: M, data: Mapping[str, Any]) -> M:
    """Set `data` (field name -> value) on `instance`, full_clean() them, save only them.

    Validation covers the given fields, and the constraints on them, as the model states
    them; save(update_fields=...) leaves every other column as the database has it, so a
    concurrent change to another field is not written back. Nothing given, nothing
    written. Runs inside the row's tenant context (row-level security).
    """
    if not data:
        return instance
    for name, value in data.items():
        setattr(instance, name, value)
    exclude = [field.name for field in instance._meta.fields if field.name not in data]
    with transaction.atomic():
        instance.full_clean(exclude=exclude)
        instance.save(update_fields=list(data))
    return instance
