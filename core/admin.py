"""Shared admin building blocks: tenant-scoped ModelAdmins and cheap changelists for big tables.

Tenant isolation in the admin (DESIGN.md section 7) has two layers. The request runs in a
transaction that `tenancy.middleware.TenantContextMiddleware` scopes to the user's tenants
(`request.tenant_ids`), so row-level security already hides other tenants' rows. On top of
that the ModelAdmins below decide, per tenant, from the user's membership role:

- a superuser sees and may do everything;
- any member (viewer and up) may view the tenant's rows;
- `edit_roles` (editor and up by default) may add, change and delete them;
- a staff user with no membership sees empty changelists and no row.

Foreign-key choices and autocomplete results are limited the same way. core imports no
app: the tenant model is reached through the `tenant` field, and the user's roles through
the `memberships` relation of the user model.

    @admin.register(Thing)
    class ThingAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
        list_display = (...)
        list_filter = (TenantListFilter, ...)
        list_select_related = ("tenant", ...)

Rows that services add: `create_object` calls the service, and a ValidationError it
raises comes back as errors on the add form (TenantOwnedAdmin.changeform_view), not as a
server error. Record tables that only services write use RecordAdminMixin, rows that
history depends on HistoryRecordMixin. Foreign keys in a changelist are links to the
related row (with_foreign_key_links).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Iterable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import flatten_fieldsets, quote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import InvalidPage, Paginator
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.db.models.functions import Left
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

# Membership roles (tenancy.models.MembershipRole; kept as strings because core imports no
# app, and a test checks they match).
ROLE_OWNER = "owner"
ROLE_ADMIN = "admin"
ROLE_EDITOR = "editor"
ROLE_VIEWER = "viewer"
ALL_ROLES = frozenset({ROLE_OWNER, ROLE_ADMIN, ROLE_EDITOR, ROLE_VIEWER})
# Who may write content rows (projects, versions, documents, chunks, executions, exports).
CONTENT_EDITOR_ROLES = frozenset({ROLE_OWNER, ROLE_ADMIN, ROLE_EDITOR})
# Who may manage a tenant and its memberships.
TENANT_MANAGER_ROLES = frozenset({ROLE_OWNER, ROLE_ADMIN})

TIMESTAMP_FIELDS = ("id", "created_at", "updated_at")
# Who added a row: always the user who adds it in the admin, never a form's choice.
CREATOR_FIELD = "created_by"


# --- Who may do what -------------------------------------------------------------------


def tenant_roles(request: HttpRequest) -> dict[uuid.UUID, str]:
    """The user's role in each tenant of the request's scope (cached on the request).

    Only tenants in `request.tenant_ids` count: the middleware leaves out inactive
    tenants, and so does the admin.
    """
    cached = getattr(request, "_admin_tenant_roles", None)
    if cached is not None:
        return cached
    user = request.user
    scope = list(getattr(request, "tenant_ids", None) or [])
    roles: dict[uuid.UUID, str] = {}
    if user.is_authenticated and user.is_active and scope:
        roles = dict(user.memberships.filter(tenant_id__in=scope).values_list("tenant_id", "role"))
    request._admin_tenant_roles = roles
    return roles


def tenants_with_role(request: HttpRequest, roles: Collection[str]) -> list[uuid.UUID]:
    """Ids of the tenants in which the user holds one of `roles`."""
    return [tenant_id for tenant_id, role in tenant_roles(request).items() if role in roles]


def has_tenant_role(request: HttpRequest, tenant_id, roles: Collection[str]) -> bool:
    """Whether the user may act in `tenant_id` with one of `roles`; superusers always may."""
    if is_superuser(request):
        return True
    return tenant_id is not None and tenant_roles(request).get(tenant_id) in roles


def is_superuser(request: HttpRequest) -> bool:
    user = request.user
    return user.is_active and user.is_superuser


def on_own_pages(request: HttpRequest, opts) -> bool:
    """Whether the request is one of the model's own admin pages (not another's delete page).

    A delete elsewhere (a project's) asks each admin about the rows it cascades to; this
    tells such a cascade from a delete of the row itself. Without a resolved URL, assume
    the row's own pages: the stricter answer.
    """
    match = getattr(request, "resolver_match", None)
    own = f"{opts.app_label}_{opts.model_name}_"
    return match is None or (match.url_name or "").startswith(own)


def is_autocomplete(request: HttpRequest) -> bool:
    """Whether the request is the admin's autocomplete view (asking on behalf of a field)."""
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name == "autocomplete"


def member_users(tenant_ids: Iterable[uuid.UUID]) -> QuerySet:
    """Users holding a membership in any of the tenants."""
    user_model = get_user_model()
    members = user_model.objects.filter(memberships__tenant_id__in=list(tenant_ids))
    return user_model.objects.filter(pk__in=members.values("pk"))


def has_tenant_field(model: type[Model]) -> bool:
    return any(field.name == "tenant" and field.is_relation for field in model._meta.fields)


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
            # A QuerySet still (callers may read its SQL), holding the rows already read.
            page.object_list._result_cache = self._read[1][: self.per_page]
            page.object_list._prefetch_done = True
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
        return max(offset + len(rows), planner_row_estimate(self.object_list))


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
            not paginator.count_is_estimated and paginator.count <= self.list_max_show_all
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

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ("-id",)

    def get_changelist(self, request, **kwargs):
        return LargeTableChangeList


class HistoryRecordMixin:
    """For rows that history depends on: not deleted on their own, only with their owner.

    Other rows point at them or read them back (a version's hash chain, the sources and
    errors of an execution, an audit of what was exported or decided), so their own pages
    and the changelist offer no delete; `deletable_alone` names the states in which a row
    still may go by itself (a queued execution that never ran). They still go with the
    row they belong to: deleting a project cascades to them, and the admin's delete
    confirmation asks this admin about each, so outside this model's own pages a row may
    be deleted by whoever may edit its tenant. Row-level security applies either way.
    Mix in before TenantOwnedAdmin.
    """

    def deletable_alone(self, obj) -> bool:
        return False

    def has_delete_permission(self, request, obj=None):
        if obj is None:
            return False  # no bulk delete on the changelist
        if on_own_pages(request, self.opts) and not self.deletable_alone(obj):
            return False
        return has_tenant_role(request, self.tenant_id_of(obj), self.edit_roles)


class RecordAdminMixin(HistoryRecordMixin):
    """For tables that are a record (provenance) written only by services: read-only.

    Nobody adds or changes such rows in the admin, nor deletes them on their own pages
    (HistoryRecordMixin). Mix in before TenantOwnedAdmin.
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- What a changelist shows -----------------------------------------------------------

# Previews of long text in lists: one line that fits a column of a 1400-pixel screen.
PREVIEW_LENGTH = 80


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


# --- Tenant-scoped ModelAdmin ----------------------------------------------------------


class TenantListFilter(admin.SimpleListFilter):
    """Filter by tenant, offering only the tenants the user works in.

    Django's RelatedFieldListFilter would list every tenant's name, and
    RelatedOnlyFieldListFilter scans the whole table for distinct tenant ids.
    """

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        tenant_model = model_admin.model._meta.get_field("tenant").related_model
        tenants = tenant_model.objects.order_by("name")
        if not is_superuser(request):
            tenants = tenants.filter(pk__in=tenant_roles(request).keys())
        return [(str(tenant.pk), str(tenant)) for tenant in tenants]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(tenant_id=uuid.UUID(value))
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error


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
        if self.value():
            values.add(self.value())
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


class CreateRefused(Exception):
    """The service behind an add form refused the row (carries its ValidationError)."""

    def __init__(self, error: ValidationError):
        super().__init__(error)
        self.error = error


def add_refusal_errors(form: forms.BaseForm, error: ValidationError) -> None:
    """Put a service's ValidationError on the form: on the fields it names, else on top."""
    if hasattr(error, "error_dict"):
        for name, errors in error.error_dict.items():
            form.add_error(name if name in form.fields else None, ValidationError(errors))
    else:
        form.add_error(None, error)


class TenantOwnedAdminForm(forms.ModelForm):
    """Refuses a related row (project, document, ...) of another tenant than the row's own.

    The composite foreign keys would refuse it too, but as a database error, not a form
    error. `request` is set by TenantOwnedAdmin.get_form.

    Foreign-key choices are the rows a row may newly point at (TenantOwnedAdmin.
    foreign_key_choices: no soft-deleted project). A row being changed may keep the one it
    already points at, so editing a document of a since-deleted project still saves.
    """

    request: HttpRequest | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance._state.adding:
            return
        for model_field in self.instance._meta.concrete_fields:
            field = self.fields.get(model_field.name)
            current = getattr(self.instance, model_field.attname)
            if (
                model_field.is_relation
                and isinstance(field, forms.ModelChoiceField)
                and current is not None
            ):
                related = field.queryset.model
                kept = related._base_manager.filter(**{field.to_field_name or "pk": current})
                field.queryset = field.queryset | kept

    def clean(self):
        cleaned_data = super().clean()
        tenant = cleaned_data.get("tenant")
        tenant_id = tenant.pk if tenant is not None else getattr(self.instance, "tenant_id", None)
        if tenant_id is None:
            return cleaned_data
        for name, value in list(cleaned_data.items()):
            related_tenant_id = getattr(value, "tenant_id", None)
            if name != "tenant" and related_tenant_id and related_tenant_id != tenant_id:
                self.add_error(name, "This belongs to another tenant than the row.")
        refusal = getattr(self.request, "_admin_create_refusal", None)
        if refusal is not None:
            # The second pass of TenantOwnedAdmin.changeform_view: the service said no.
            add_refusal_errors(self, refusal)
        return cleaned_data


class TenantOwnedAdmin(admin.ModelAdmin):
    """Base ModelAdmin for a tenant-owned model: querysets, choices and rights by tenant role.

    Subclasses tune `edit_roles` (who may add/change/delete), `tenant_field` ("pk" for
    the tenant model itself), `manager_name` (e.g. a manager that includes soft-deleted
    rows), `change_readonly_fields` (fields fixed once the row exists), `add_fields`
    (what the add form asks for when a service computes the rest), `list_defer` (columns
    the changelist does not read) and `uuid_search_fields` (UUID columns that a search
    term which is a UUID matches exactly, through their indexes). Override
    `create_object` to add rows through the app's create service, and
    `restrict_to_tenants` / `has_view_permission` for rows shared by all tenants (a
    template without a tenant). `change_sections` are headed groups of read-only
    displays (admin methods: a diff, a step tree) shown below the row on its change page.
    `limit_choices` narrows what other rows' foreign keys may point at (form choices and
    autocomplete), e.g. live projects only. A `created_by` column is read-only and set
    to the user who adds the row.
    """

    form = TenantOwnedAdminForm
    tenant_field = "tenant"
    view_roles: Collection[str] = ALL_ROLES
    edit_roles: Collection[str] = CONTENT_EDITOR_ROLES
    manager_name: str | None = None
    readonly_fields = TIMESTAMP_FIELDS
    change_readonly_fields: tuple[str, ...] = ("tenant",)
    add_fields: tuple[str, ...] | None = None
    autocomplete_fields = ("tenant",)
    list_defer: tuple[str, ...] = ()
    uuid_search_fields: tuple[str, ...] = ("id",)
    change_sections: tuple[tuple[str, tuple[str, ...]], ...] = ()
    list_per_page = 50

    def tenant_id_of(self, obj) -> uuid.UUID | None:
        if self.tenant_field == "pk":
            return obj.pk
        return getattr(obj, f"{self.tenant_field}_id")

    # Rows ---------------------------------------------------------------------------

    def get_queryset(self, request):
        manager = (
            getattr(self.model, self.manager_name)
            if self.manager_name
            else self.model._default_manager
        )
        queryset = manager.get_queryset()
        if is_autocomplete(request):
            # Asked for the choices of another row's foreign key.
            queryset = self.limit_choices(queryset)
        ordering = self.get_ordering(request)
        if ordering:
            queryset = queryset.order_by(*ordering)
        return self.restrict_to_tenants(request, queryset, self.view_roles)

    def limit_choices(self, queryset: QuerySet) -> QuerySet:
        """The rows of `queryset` that another row's foreign key may newly point at."""
        return queryset

    def restrict_to_tenants(
        self, request: HttpRequest, queryset: QuerySet, roles: Collection[str]
    ) -> QuerySet:
        """`queryset` limited to the tenants where the user holds one of `roles`."""
        if is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.tenant_field}__in": tenants_with_role(request, roles)})

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Another tenant's row and a missing row look the same (Django would redirect).
            raise Http404(f"No {self.opts.verbose_name} with that id.")
        return obj

    def get_changelist(self, request, **kwargs):
        return DeferringChangeList

    def get_list_display(self, request):
        return with_foreign_key_links(self, request, super().get_list_display(request))

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if self.uuid_search_fields and term:
            try:
                value = uuid.UUID(term)
            except ValueError:
                pass
            else:
                return queryset.filter(
                    Q.create([(name, value) for name in self.uuid_search_fields], connector=Q.OR)
                ), False
        return super().get_search_results(request, queryset, search_term)

    # Rights -------------------------------------------------------------------------

    def has_view_permission(self, request, obj=None):
        if obj is None:
            # Any staff member gets the changelist; get_queryset decides what is in it.
            return request.user.is_active and request.user.is_staff
        return has_tenant_role(request, self.tenant_id_of(obj), self.view_roles)

    def has_add_permission(self, request):
        return is_superuser(request) or bool(tenants_with_role(request, self.edit_roles))

    def has_change_permission(self, request, obj=None):
        if obj is None:
            return is_superuser(request) or bool(tenants_with_role(request, self.edit_roles))
        return has_tenant_role(request, self.tenant_id_of(obj), self.edit_roles)

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    # Forms --------------------------------------------------------------------------

    def has_creator(self) -> bool:
        return any(field.name == CREATOR_FIELD for field in self.model._meta.fields)

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        if self.has_creator() and CREATOR_FIELD not in readonly:
            readonly += (CREATOR_FIELD,)
        if obj is not None:
            fixed = (*self.change_readonly_fields, *self._change_section_fields())
            readonly += tuple(f for f in dict.fromkeys(fixed) if f not in readonly)
        return readonly

    def _change_section_fields(self) -> tuple[str, ...]:
        return tuple(name for _, names in self.change_sections for name in names)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not self.change_sections:
            return fieldsets
        sectioned = set(self._change_section_fields())
        main = [name for name in flatten_fieldsets(fieldsets) if name not in sectioned]
        return [
            (None, {"fields": main}),
            *((title, {"fields": names}) for title, names in self.change_sections),
        ]

    def get_fields(self, request, obj=None):
        if obj is None:
            fields = self.add_fields if self.add_fields is not None else super().get_fields(request)
            # save_model sets it: nothing to ask for or show yet.
            return [name for name in fields if name != CREATOR_FIELD]
        return super().get_fields(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # modelform_factory made a new class for this call: safe to give it the request.
        form.request = request
        return form

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "queryset" not in kwargs:
            kwargs["queryset"] = self.foreign_key_choices(db_field, request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def foreign_key_choices(self, db_field, request) -> QuerySet:
        """What a foreign key may point at: rows of the tenants the user may write in.

        The related model's default manager hides what nothing may newly point at (a
        soft-deleted project), and its admin's `limit_choices` narrows further (a version
        of a deleted project); TenantOwnedAdminForm lets a changed row keep its current one.
        """
        related = db_field.related_model
        queryset = related._default_manager.all()
        related_admin = self.admin_site._registry.get(related)
        if isinstance(related_admin, TenantOwnedAdmin):
            queryset = related_admin.limit_choices(queryset)
        if is_superuser(request):
            return queryset
        writable = tenants_with_role(request, self.edit_roles)
        if db_field.name == self.tenant_field:
            return queryset.filter(pk__in=writable)
        if has_tenant_field(related):
            return queryset.filter(tenant_id__in=writable)
        if related is get_user_model():
            return queryset.filter(
                Q(pk__in=member_users(writable).values("pk")) | Q(pk=request.user.pk)
            )
        return queryset

    def get_changeform_initial_data(self, request):
        initial = {}
        writable = tenants_with_role(request, self.edit_roles)
        if self.tenant_field != "pk" and len(writable) == 1:
            initial[self.tenant_field] = writable[0]
        initial.update(super().get_changeform_initial_data(request))
        return initial

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except CreateRefused as refused:
            # changeform_view's atomic block rolled the attempt back. Validate the same
            # POST again, with the service's reasons added to the form, and show it.
            request._admin_create_refusal = refused.error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        if self.has_creator():
            # Whoever adds the row, whatever the POST says (the field is read-only).
            setattr(obj, CREATOR_FIELD, request.user)
        try:
            created = self.create_object(request, obj, form)
        except ValidationError as error:
            raise CreateRefused(error) from error
        if created is not obj:
            # The admin logs and redirects with `obj`: make it the row the service wrote.
            for field in obj._meta.concrete_fields:
                if field.attname in created.__dict__:
                    setattr(obj, field.attname, created.__dict__[field.attname])
            obj._state.adding = False
            obj._state.db = created._state.db

    def create_object(self, request: HttpRequest, obj: Model, form) -> Model:
        """Write a new row from the validated add form; may return another instance."""
        obj.save()
        return obj

    # Actions ------------------------------------------------------------------------

    def writable(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """The part of a selection the user may change (for custom bulk actions)."""
        return self.restrict_to_tenants(request, queryset, self.edit_roles)

    def apply_to_selection(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable[[Model], object],
        done: str,
    ) -> None:
        """Run `service(row)` on each selected row the user may change, reporting refusals.

        A service refuses with ValidationError (a wrong status, say); the other rows
        still go through.
        """
        succeeded, refused = 0, []
        for row in self.writable(request, queryset):
            try:
                service(row)
            except ValidationError as error:
                refused.append(f"{row}: {' '.join(error.messages)}")
            else:
                succeeded += 1
        self.message_user(request, f"{done}: {succeeded}.")
        if refused:
            self.message_user(request, "Refused: " + " | ".join(refused), level=messages.WARNING)
