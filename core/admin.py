"""Admin building blocks that know no app: cheap changelists for big tables, and displays.

- Counting: EstimatedCountPaginator and LargeTableAdminMixin keep COUNT(*) off tables with
  millions of rows (docs/operations.md); DeferringChangeList leaves vectors and long
  text unread.
- Filters: RecentValuesListFilter and UUIDValueListFilter filter big tables without a
  DISTINCT over them; AnnotationFlagFilter filters on a yes/no the admin annotates.
- Displays: short previews of long text, foreign keys as links, vectors as a summary,
  the "built on changed sources" badge.

The tenant-scoped ModelAdmin every app's admin builds on, and the role helpers behind
it, are in tenancy (tenancy.admin_base, tenancy.admin_roles): they know the tenant and
membership models, which core, importing no app, does not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import ClassVar, TypedDict, cast

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist
from django.core.paginator import InvalidPage, Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.functions import Left
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

TIMESTAMP_FIELDS: tuple[str, ...] = ("id", "created_at", "updated_at")


# --- Links to rows ---------------------------------------------------------------------


def admin_change_url(model: type[Model], pk) -> str:
    """The admin change page of one row (of a registered model)."""
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(pk)])


def change_link(model: type[Model], pk, label: str) -> SafeString:
    """A link to a row's admin change page; its own rights decide what the page shows."""
    return format_html('<a href="{}">{}</a>', admin_change_url(model, pk), label)


# --- Counting big tables ---------------------------------------------------------------


def planner_row_estimate(queryset: QuerySet) -> int:
    """The planner's estimate of how many rows `queryset` returns (EXPLAIN, no execution).

    For an unfiltered table this is pg_class.reltuples scaled to the table's current
    size; with filters (and the row-level security policy) it is the planner's
    selectivity estimate. Cheap whatever the table size.
    """
    probe = queryset.order_by().values("pk")
    sql, params = probe.query.get_compiler(using=queryset.db).as_sql()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """A paginator for big tables: no COUNT(*), and no row read beyond the page shown.

    `page(number)` reads the page with one row more (LIMIT per_page + 1): that is the
    page query the changelist needs anyway, and the extra row says whether more follow.
    If none do, the count is exact (the rows before the page and on it); if some do, it
    is the planner's estimate (`planner_row_estimate`), never less than the rows seen,
    and `count_is_estimated` says so. Asked before any page, `count` reads the first.
    The page keeps the rows it read: showing it sends no other query. A page past the
    true end is an EmptyPage, as in Django's Paginator.
    """

    count_is_estimated = False
    _read: tuple[int, list] | None = None  # (page number, its rows and the one after)

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return super().count
        return self._read_page(1)

    def page(self, number):
        if not isinstance(self.object_list, QuerySet):
            return super().page(number)
        if "count" not in self.__dict__:
            # validate_number below needs the count: reading this page settles it.
            self.__dict__["count"] = self._read_page(self._requested(number))
        page = super().page(number)
        if self._read is not None and self._read[0] == page.number:
            # A QuerySet still (callers may read its SQL), holding the rows already read:
            # a slice of self.object_list, checked above to be a QuerySet.
            rows = cast(QuerySet, page.object_list)
            rows._result_cache = self._read[1][: self.per_page]
            rows._prefetch_done = True  # type: ignore[attr-defined]  # not in the stubs
        return page

    def _requested(self, number) -> int:
        try:
            return max(1, int(number))
        except (TypeError, ValueError):
            return 1  # super().page() refuses it with Django's own error

    def _read_page(self, number: int) -> int:
        """Read page `number` and one row more; return the count that follows from it."""
        offset = (number - 1) * self.per_page
        rows = list(self.object_list[offset : offset + self.per_page + 1])
        self._read = (number, rows)
        if len(rows) <= self.per_page:
            return offset + len(rows)
        self.count_is_estimated = True
        # Only called once count() or page() found object_list to be a QuerySet.
        return max(offset + len(rows), planner_row_estimate(cast(QuerySet, self.object_list)))


class DeferringChangeList(ChangeList):
    """A changelist that leaves the admin's `list_defer` columns (vectors, long text) unread."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        deferred = getattr(self.model_admin, "list_defer", ())
        return queryset.defer(*deferred) if deferred else queryset


class LargeTableChangeList(DeferringChangeList):
    """A changelist whose only read of the table is its page (EstimatedCountPaginator).

    Django's ChangeList counts first, and when everything fits on one page reads the
    whole result again without a LIMIT; here the page read settles both. "Show all" is
    offered only for a result known to be small: an estimate may be far off.
    """

    def get_results(self, request):
        paginator = self.model_admin.get_paginator(request, self.queryset, self.list_per_page)
        try:
            page = paginator.page(self.page_num)
        except InvalidPage as error:
            raise IncorrectLookupParameters(error) from error
        self.result_count = paginator.count
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = (
            not (isinstance(paginator, EstimatedCountPaginator) and paginator.count_is_estimated)
            and paginator.count <= self.list_max_show_all
        )
        self.multi_page = paginator.count > self.list_per_page
        show_all = self.show_all and self.can_show_all and self.multi_page
        self.result_list = self.queryset._clone() if show_all else page.object_list
        self.paginator = paginator


class LargeTableAdminMixin:
    """Changelist settings for tables with millions of rows (chunks, versions, executions).

    No COUNT(*) over the table and no read beyond the page (LargeTableChangeList, no
    full result count, no facet counts), newest first through the primary-key index
    (UUIDv7 ids are time-ordered), and no date_hierarchy: its year/month links scan the
    whole table; use a DateFieldListFilter instead, which only adds a WHERE clause.
    Text searches go through trigram indexes (`<column>__trigram_icontains`, core.lookups)
    or exact matches (`<column>__exact`), never a bare `icontains` that scans the table.
    """

    paginator: ClassVar[type[Paginator]] = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering: ClassVar[list[str] | tuple[str, ...] | None] = ("-id",)

    def get_changelist(self, request, **kwargs):
        return LargeTableChangeList


# --- What a changelist shows -----------------------------------------------------------

# Previews of long text in lists: one line that fits a column of a 1400-pixel screen.
PREVIEW_LENGTH = 80


class ContentHead(TypedDict):
    """A row annotated with preview_head("content") as `content_head` (for mypy)."""

    content_head: str | None


def preview_head(field: str) -> Left:
    """Annotation reading only the start of a text column: enough for `preview_text`."""
    return Left(field, PREVIEW_LENGTH + 1)


def preview_text(text: str | None) -> str:
    """`text` (or its head) on one line, cut to PREVIEW_LENGTH characters with an ellipsis."""
    if not text:
        return ""
    line = " ".join(text[:PREVIEW_LENGTH].split())
    return f"{line}…" if len(text) > PREVIEW_LENGTH else line


def foreign_key_column(model_admin: admin.ModelAdmin, request: HttpRequest, field) -> Callable:
    """A changelist column showing foreign key `field` as a link to the related row's page.

    The link is there when the user may view that row (a member sees only their own user
    page, say); otherwise the row's name as text. The related row comes from the
    changelist's select_related, as it did for the plain column.
    """
    related_admin = model_admin.admin_site._registry.get(field.related_model)

    @admin.display(description=field.verbose_name, ordering=field.name)
    def column(obj):
        if getattr(obj, field.attname) is None:
            return None  # the changelist's empty value
        related = getattr(obj, field.name)
        if related_admin is None or not related_admin.has_view_permission(request, related):
            return str(related)
        return change_link(field.related_model, related.pk, str(related))

    column.__name__ = field.name  # the column's CSS class, as for the plain field
    return column


def with_foreign_key_links(model_admin: admin.ModelAdmin, request: HttpRequest, list_display):
    """`list_display` with its foreign-key columns as links (foreign_key_column).

    The column that links to the row itself (`list_display_links`, by default the first)
    stays as it is: a link inside a link would be neither.
    """
    row_links = model_admin.list_display_links or list(list_display)[:1]
    columns = []
    for name in list_display:
        field = None
        if isinstance(name, str) and name not in row_links:
            try:
                field = model_admin.model._meta.get_field(name)
            except FieldDoesNotExist:
                pass
        is_link = field is not None and field.many_to_one
        columns.append(foreign_key_column(model_admin, request, field) if is_link else name)
    return columns


def vector_summary(dimensions: int | None, head: Iterable[float] | None) -> str:
    """`1536 dimensions: [0.0123, -0.0456, ...]`: enough to recognise a vector, not all of it.

    Takes the dimension and the first few numbers (SQL `vector_dims` and `subvector`), so
    the full vector need not leave the database.
    """
    if dimensions is None:
        return "—"
    numbers = [f"{float(number):.4f}" for number in (head if head is not None else [])]
    more = ", …" if dimensions > len(numbers) else ""
    return f"{dimensions} dimensions: [{', '.join(numbers)}{more}]"


# --- Filters for big tables ------------------------------------------------------------


class RecentValuesListFilter(admin.SimpleListFilter):
    """Filter on a text column, offering the values of the newest rows only.

    Django's AllValuesFieldListFilter runs SELECT DISTINCT over the whole table on every
    changelist. This one reads the column of the newest `sample_size` rows the user may
    see (backwards through the primary-key index: UUIDv7 ids are time-ordered) and offers
    their distinct values, plus the selected one; any other value still filters when given
    in the URL. Subclasses set `title`, `parameter_name` and, if it differs from the
    parameter, `field_name`.
    """

    field_name: str | None = None
    parameter_name: str  # every subclass names it (Django's own filter requires it)
    sample_size = 100

    @property
    def column(self) -> str:
        return self.field_name or self.parameter_name

    def lookups(self, request, model_admin):
        recent = (
            model_admin.get_queryset(request)
            .order_by("-pk")
            .values_list(self.column, flat=True)[: self.sample_size]
        )
        values = {str(value) for value in recent if value not in (None, "")}
        if selected := self.value():
            values.add(selected)
        return [(value, value) for value in sorted(values)]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.column: value}) if value else queryset


class UUIDValueListFilter(admin.SimpleListFilter):
    """`?<parameter_name>=<uuid>` on one UUID column, set by links (a run's "all steps").

    It offers no list of values (that would be a DISTINCT over a big table): it shows in
    the sidebar only while set, saying what the list is limited to and offering "All" to
    clear it. Subclasses set `title`, `parameter_name` and, if it differs, `field_name`.
    """

    field_name: str | None = None

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(**{self.field_name or self.parameter_name: uuid.UUID(value)})
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error


class AnnotationFlagFilter(admin.SimpleListFilter):
    """Yes or no on a boolean the admin's get_queryset annotates, named `parameter_name`
    (an EXISTS over an indexed table: "built on changed sources"). The values are "True"
    and "False", so a RelatedRows section's `filters={name: True}` links here too."""

    yes = "Yes"
    no = "No"

    def lookups(self, request, model_admin):
        return [("True", self.yes), ("False", self.no)]

    def queryset(self, request, queryset):
        value = self.value()
        if value not in ("True", "False"):
            return queryset
        return queryset.filter(**{self.parameter_name: value == "True"})


SOURCES_CHANGED = "changed"  # short: the lists fit 1400 pixels; the column says "sources"


def sources_changed_badge(changed: bool, title: str = "") -> SafeString | str:
    """The badge of an output built on sources that changed since (agents' stale-source
    flags: an execution, the version its run wrote, an export holding it); "—" if not."""
    if not changed:
        return "—"
    return format_html(
        '<span class="status-badge sources-changed" title="{}">{}</span>', title, SOURCES_CHANGED
    )
