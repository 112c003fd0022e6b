"""Sections of a change page that list the rows of other models pointing at the row, and
panels that other apps add to a page (PagePanel).

A project's page (documents.admin.projects.ProjectAdmin) is the hub of its versions, runs,
conversation, evaluations and exports: each section shows the latest few rows, how many
there are, and links to the related changelist filtered to the row ("see all") and, where
the user may add one, to a prefilled add form. The apps to the right of documents add
their own sections, so documents imports neither agents nor exports.

Rows come through the related model's own admin (`get_queryset`): they are the rows the
user may see on that changelist, under row-level security too, and a section whose model
the user may not view is left out. Counts are exact up to EXACT_COUNT_LIMIT and the
planner's estimate beyond ("about N").

A PagePanel is freer: a titled block of HTML an app to the right renders for the row (a
version's page shows the run that wrote it and what that run read, a knowledge
document's page the outputs built on it), so the page's app imports nothing of theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from core.admin import admin_change_url, planner_row_estimate

LATEST = 10
# One row's related rows are read through an index on their foreign key: counting a
# thousand of them is cheap, counting a million is not.
EXACT_COUNT_LIMIT = 1000

# The related model: its columns' functions receive rows of it.
RowModel = TypeVar("RowModel", bound=Model)


@dataclasses.dataclass(frozen=True)
class RelatedRows(Generic[RowModel]):
    """The latest rows of `model` whose foreign key `field` points at the page's row.

    `columns` are (heading, row -> value) pairs; the first column links to the row's own
    page. `filters` are further lookups (root steps only), applied to the rows and to the
    "see all" link alike; `prepare` adds what the columns read (select_related) or narrows
    the rows in ways a URL cannot say (one per document type). `add_label` offers an add
    form with the foreign key (and the tenant) filled in. `only_when_rows` leaves the
    section out while it has none (a warning list: outputs built on changed sources).
    """

    title: str
    model: type[RowModel]
    field: str
    columns: tuple[tuple[str, Callable[[RowModel], object]], ...]
    order_by: tuple[str, ...] = ("-id",)
    filters: Mapping[str, object] = dataclasses.field(default_factory=dict)
    prepare: Callable[[QuerySet], QuerySet] | None = None
    add_label: str | None = None
    limit: int = LATEST
    only_when_rows: bool = False

    def context(self, request: HttpRequest, site: admin.AdminSite, obj: Model) -> dict | None:
        """What templates/admin/core/related_rows.html shows, or None if the user may not."""
        model_admin = site._registry.get(self.model)
        if model_admin is None or not model_admin.has_view_permission(request):
            return None
        queryset = (
            model_admin.get_queryset(request)
            .filter(**{self.field: obj.pk}, **self.filters)
            .order_by(*self.order_by)
        )
        if self.prepare is not None:
            queryset = self.prepare(queryset)
        count, count_is_estimated = _count(queryset)
        if self.only_when_rows and not count:
            return None
        rows = list(queryset[: self.limit])
        opts = self.model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        see_all = {f"{self.field}__id__exact": obj.pk, **self.filters}
        add_url = None
        if self.add_label and model_admin.has_add_permission(request):
            add = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
            initial = {self.field: obj.pk, "tenant": getattr(obj, "tenant_id", None)}
            add_url = f"{add}?{urlencode({k: v for k, v in initial.items() if v is not None})}"
        return {
            "title": self.title,
            "count": count,
            "count_is_estimated": count_is_estimated,
            "headings": [heading for heading, _ in self.columns],
            "rows": [
                {"url": admin_change_url(self.model, row.pk), "cells": self._cells(row)}
                for row in rows
            ],
            "changelist_url": f"{changelist}?{urlencode(see_all)}",
            "add_url": add_url,
            "add_label": self.add_label,
        }

    def _cells(self, row: RowModel) -> list[object]:
        return [value(row) for _, value in self.columns]


def _count(queryset: QuerySet) -> tuple[int, bool]:
    """(how many rows, whether that is the planner's estimate)."""
    seen = queryset[: EXACT_COUNT_LIMIT + 1].count()
    if seen <= EXACT_COUNT_LIMIT:
        return seen, False
    return max(planner_row_estimate(queryset), seen), True


def related_sections(
    request: HttpRequest, site: admin.AdminSite, obj: Model, sections: list[RelatedRows[Any]]
) -> list[dict]:
    """The context of each section the user may see, in order."""
    contexts = (section.context(request, site, obj) for section in sections)
    return [context for context in contexts if context is not None]


@dataclasses.dataclass(frozen=True)
class PagePanel:
    """A titled block of a change page that another app renders for the page's row.

    `render(request, obj)` returns the block's HTML, or None to leave the panel out (the
    user may not see its rows). It reads what it shows itself, in a bounded number of
    queries: the page's own queries do not grow with the panels' rows.
    """

    title: str
    render: Callable[[HttpRequest, Any], SafeString | None]


def rendered_panels(request: HttpRequest, obj: Model, panels: list[PagePanel]) -> list[dict]:
    """What templates/admin/core/page_panels.html shows: each panel the user may see."""
    rendered = ((panel.title, panel.render(request, obj)) for panel in panels)
    return [{"title": title, "html": html} for title, html in rendered if html is not None]
