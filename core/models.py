"""Abstract models every table builds on (DESIGN.md section 4).

The tenant-owned one is tenancy.models.TenantOwnedModel: its foreign key names the
tenants table, which core, importing no app, does not know.
"""

import pgtrigger
from django.core.exceptions import ValidationError
from django.db import models

from core.ids import uuid7
from core.validators import validate_storable


class UUIDv7(models.Func):
    """PostgreSQL 18's `uuidv7()`, the database default for raw SQL and COPY inserts."""

    function = "uuidv7"
    template = "%(function)s()"
    output_field = models.UUIDField()


class TransactionNow(models.Func):
    """PostgreSQL's `now()`, the transaction's start time.

    The same clock as the updated_at trigger, so a row changed in the transaction that
    created it never shows updated_at before created_at (Django's Now() is
    statement_timestamp()).
    """

    template = "now()"
    output_field = models.DateTimeField()


def updated_at_trigger() -> pgtrigger.Trigger:
    """BEFORE UPDATE trigger keeping `updated_at` true for ORM, bulk and raw SQL writes."""
    return pgtrigger.Trigger(
        name="set_updated_at",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        func="NEW.updated_at = now(); RETURN NEW;",
    )


class BaseModel(models.Model):
    """UUIDv7 primary key and creation time."""

    id = models.UUIDField(primary_key=True, default=uuid7, db_default=UUIDv7(), editable=False)
    created_at = models.DateTimeField(db_default=TransactionNow(), editable=False)

    class Meta:
        abstract = True
        get_latest_by = "created_at"

    def clean_fields(self, exclude=None):
        """Each field's own validation, and refusal of text PostgreSQL cannot store.

        NUL characters and unpaired surrogates in any field (text, JSON, arrays) raise a
        ValidationError naming the field from every full_clean(), instead of the driver's
        DataError mid-write (core.validators).
        """
        errors: dict[str, list] = {}
        try:
            super().clean_fields(exclude)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        for field in self._meta.concrete_fields:
            if exclude and field.name in exclude:
                continue
            try:
                validate_storable(getattr(self, field.attname))
            except ValidationError as error:
                errors.setdefault(field.name, []).extend(error.error_list)
        if errors:
            raise ValidationError(errors)


class TimestampedModel(BaseModel):
    """A row that changes: `updated_at` is maintained by a database trigger."""

    updated_at = models.DateTimeField(db_default=TransactionNow(), editable=False)

    class Meta(BaseModel.Meta):
        abstract = True
        triggers = [updated_at_trigger()]


def related_label(instance: models.Model, field_name: str) -> str:
    """A foreign key's object as text if it is loaded already, else its id: never a query.

    For `__str__`, which the shell, the log and the admin call anywhere, outside any tenant
    context too: there row-level security hides the related row, and a lazy load would
    raise DoesNotExist (or cost a query per row of a list).
    """
    field = instance._meta.get_field(field_name)
    if not isinstance(field, models.ForeignObject):
        raise TypeError(f"{field_name} is not a foreign key of {type(instance).__name__}")
    if field.is_cached(instance):
        return str(getattr(instance, field_name))
    return f"{field_name} {getattr(instance, field.attname)}"
