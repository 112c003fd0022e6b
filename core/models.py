"""Abstract models every table builds on (docs/architecture.md).

The tenant-owned one is tenancy.models.TenantOwnedModel: its foreign key names the
tenants table, which core, importing no app, does not know.
"""

import re
from typing import Any

import pgtrigger
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput

from core.ids import uuid7
from core.validators import validate_finite, validate_json_value, validate_storable


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


# A JSON string, or an unterminated one up to the end: possessive, so no text makes the
# search backtrack or start over from every later quote.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_text_too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests brackets deeper than `limit` outside its strings.

    Counted without parsing, and iteratively: Python's json.loads recurses and raises
    RecursionError on text nested a thousand levels deep.
    """
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > limit:
            return True
    return False


class JSONFormField(forms.JSONField):
    """The admin's JSON input: text nested too deeply, or a number too long, is a field error.

    Both would escape Django's forms.JSONField (RecursionError, and the ValueError of
    Python's limit on integer digits) as a server error. Values it parses (NaN and
    Infinity too: json.loads reads them) are then checked by the model field.
    """

    def _parse(self, value: str) -> object:
        if json_text_too_deep(value, settings.JSON_MAX_DEPTH):
            raise ValidationError(
                "The value is nested deeper than JSON_MAX_DEPTH (%(limit)s levels).",
                code="invalid_json_value",
                params={"limit": settings.JSON_MAX_DEPTH},
            )
        try:
            return super().to_python(value)
        except ValueError as error:  # an integer longer than Python converts
            raise ValidationError(
                "The value holds a number too long to read.", code="invalid_json_value"
            ) from error

    # Any, as in forms.JSONField: the parsed value is whatever JSON holds, not the str
    # of the CharField it subclasses.
    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str):
            return super().to_python(value)
        return self._parse(value)

    def bound_data(self, data: object, initial: object) -> object:
        if (
            not self.disabled
            and isinstance(data, str)
            and json_text_too_deep(data, settings.JSON_MAX_DEPTH)
        ):
            return InvalidJSONInput(data)
        try:
            return super().bound_data(data, initial)
        except ValueError:  # an integer longer than Python converts
            return InvalidJSONInput(data)


class JSONField(models.JSONField):
    """The JSON field of every app: finite numbers, bounded depth and size (docs/services.md).

    core.validators.validate_json_value runs before Django's own check, which
    json.dumps the value and so would recurse on a deep value, and accepts NaN and
    Infinity that jsonb then refuses. full_clean() names the field in the error; the
    admin's forms get it through their model's full_clean().
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.null:
            # full_clean() skips the validation of an empty value in a blank field, and
            # None would then reach the NOT NULL column as an IntegrityError.
            self.empty_values = [value for value in self.empty_values if value is not None]

    def validate(self, value: object, model_instance: models.Model | None) -> None:
        validate_json_value(value)
        super().validate(value, model_instance)

    def formfield(
        self,
        form_class: type[forms.Field] | None = None,
        choices_form_class: type[forms.ChoiceField] | None = None,
        **kwargs: Any,
    ) -> forms.Field | None:
        return super().formfield(
            form_class=form_class or JSONFormField,
            choices_form_class=choices_form_class,
            **kwargs,
        )


class BaseModel(models.Model):
    """UUIDv7 primary key and creation time."""

    id = models.UUIDField(primary_key=True, default=uuid7, db_default=UUIDv7(), editable=False)
    created_at = models.DateTimeField(db_default=TransactionNow(), editable=False)

    class Meta:
        abstract = True
        get_latest_by = "created_at"

    def clean_fields(self, exclude=None):
        """Each field's own validation, and refusal of values PostgreSQL cannot store.

        NUL characters and unpaired surrogates in any field (text, JSON, arrays) raise a
        ValidationError naming the field from every full_clean(), instead of the driver's
        DataError mid-write (core.validators). So do NaN and infinities in a float field:
        double precision takes them, but they pass every range validator and then fail
        the range constraints (NaN sorts above every number in PostgreSQL).
        """
        errors: dict[str, list] = {}
        exclude = set(exclude or ())
        # Float fields first: Django's own cleaning calls float(), which raises an
        # OverflowError, not a ValidationError, for an integer beyond a double's range.
        for field in self._meta.concrete_fields:
            if isinstance(field, models.FloatField) and field.name not in exclude:
                try:
                    validate_finite(getattr(self, field.attname))
                except ValidationError as error:
                    errors[field.name] = error.error_list
                    exclude.add(field.name)
        try:
            super().clean_fields(exclude)
        except ValidationError as error:
            errors = error.update_error_dict(errors)
        for field in self._meta.concrete_fields:
            # A field that failed its own validation may be a value too deep to walk again.
            if (exclude and field.name in exclude) or field.name in errors:
                continue
            value = getattr(self, field.attname)
            try:
                validate_storable(value)
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
