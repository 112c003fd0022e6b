"""Names for the form controls Django's admin renders without a label.

Assistive technology reads a control's name from its <label>; two of the admin's own
renderings give none, which axe-core reports as critical (tests/core/test_browser.py):

- A date and time field (AdminSplitDateTime) shows "Date:" and "Time:" as bare text
  before its two inputs. LabelledSplitDateTime renders the same text as their labels;
  LABELLED_FORMFIELDS makes it the widget of every DateTimeField in a ModelAdmin.
- A tabular inline names its columns in the table's header only, so each row's inputs
  (and its Delete box) have no name. LabelledRowsFormSet gives each of them its field's
  label as aria-label.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.widgets import AdminSplitDateTime
from django.db import models
from django.forms import BaseInlineFormSet, Form


class LabelledSplitDateTime(AdminSplitDateTime):
    """The admin's date and time inputs, each with its "Date:" / "Time:" as a label."""

    template_name = "admin/core/split_datetime.html"


# For a ModelAdmin's formfield_overrides: merged over the admin's own defaults.
LABELLED_FORMFIELDS: dict[type[models.Field], dict[str, Any]] = {
    models.DateTimeField: {"widget": LabelledSplitDateTime},
}


class LabelledRowsFormSet(BaseInlineFormSet):
    """An inline formset whose rows' inputs are named by their column's label."""

    def add_fields(self, form: Form, index: int | None) -> None:
        super().add_fields(form, index)  # adds the row's Delete box, among others
        for field in form.fields.values():
            if not field.widget.is_hidden and field.label:
                field.widget.attrs.setdefault("aria-label", str(field.label))
