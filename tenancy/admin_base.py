"""The ModelAdmin every tenant-owned model's admin builds on: rows, choices and rights by role.

Who may do what is tenancy.admin_roles. Foreign-key choices and autocomplete results are
limited the same way as the rows.

    @admin.register(Thing)
    class ThingAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
        list_display = (...)
        list_filter = (TenantListFilter, ...)
        list_select_related = ("tenant", ...)

Rows that services add: `create_object` calls the service, and a ValidationError it
raises comes back as errors on the add form (TenantOwnedAdmin.changeform_view), not as a
server error. Edits go through `update_object` the same way: the model's update service,
or core.services.model_update on the fields the form changed. Record tables that only
services write use RecordAdminMixin, rows that history depends on HistoryRecordMixin,
rows nobody may touch ReadOnlyAdminMixin.
Foreign keys in a changelist are links to the related row
(core.admin.with_foreign_key_links).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any, ClassVar
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, Q, QuerySet
from django.db.models.options import Options
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import reverse

from core.admin import TIMESTAMP_FIELDS, DeferringChangeList, with_foreign_key_links
from core.admin_labels import LABELLED_FORMFIELDS
from core.db.audit import GLOBAL_AUDITED_TABLES
from core.services import model_update
from tenancy.admin_roles import (
    ALL_ROLES,
    CONTENT_EDITOR_ROLES,
    has_tenant_field,
    has_tenant_role,
    is_autocomplete,
    is_superuser,
    member_users,
    on_own_pages,
    tenants_with_role,
)
from tenancy.models import AuditEvent, GlobalAuditEvent

# Who added a row: always the user who adds it in the admin, never a form's choice.
CREATOR_FIELD = "created_by"


def audit_history_url(model, pk) -> str:
    """The audit events of one row: the filtered log of its chain."""
    table = model._meta.db_table
    events = GlobalAuditEvent if table in GLOBAL_AUDITED_TABLES else AuditEvent
    url = reverse(f"admin:tenancy_{events._meta.model_name}_changelist")
    return f"{url}?{urlencode({'table_name': table, 'row_id': str(pk)})}"


class ReadOnlyAdminMixin:
    """Rows nobody adds, changes or deletes in the admin, not even with their tenant's
    other rows (an audit event, a retention run, an erasure receipt, a logged search):
    triggers, services and retention write and remove them, and the database refuses the
    runtime role most of that anyway. Compare RecordAdminMixin, which lets a row go with
    its owner."""

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditHistoryMixin:
    """The change page's "History" button opens the row's audit events instead of
    Django's admin log, which misses every write made outside the admin."""

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        if obj is None or not self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        return HttpResponseRedirect(audit_history_url(type(obj), obj.pk))


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

    # TenantOwnedAdmin's, which this is mixed into.
    opts: Options
    edit_roles: Collection[str]
    tenant_id_of: Callable[[Model], uuid.UUID | None]

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


class CreateRefused(Exception):
    """The service behind an add or change form refused the row (carries its
    ValidationError)."""

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
                and field.queryset is not None
                and current is not None
            ):
                related = field.queryset.model
                kept = related._base_manager.filter(**{field.to_field_name or "pk": current})
                field.queryset = field.queryset | kept

    def clean(self):
        super().clean()
        cleaned_data = self.cleaned_data
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


class TenantOwnedAdmin(AuditHistoryMixin, admin.ModelAdmin):
    """Base ModelAdmin for a tenant-owned model: querysets, choices and rights by tenant role.

    Subclasses tune `edit_roles` (who may add/change/delete), `tenant_field` ("pk" for
    the tenant model itself), `manager_name` (e.g. a manager that includes soft-deleted
    rows), `change_readonly_fields` (fields fixed once the row exists), `add_fields`
    (what the add form asks for when a service computes the rest), `list_defer` (columns
    the changelist does not read) and `uuid_search_fields` (UUID columns that a search
    term which is a UUID matches exactly, through their indexes). Override
    `create_object` to add rows through the app's create service, `update_object` to
    change them through its update service, and
    `restrict_to_tenants` / `has_view_permission` for rows shared by all tenants (a
    template without a tenant). `change_sections` are headed groups of read-only
    displays (admin methods: a diff, a step tree) shown below the row on its change page.
    `limit_choices` narrows what other rows' foreign keys may point at (form choices and
    autocomplete), e.g. live projects only. A `created_by` column is read-only and set
    to the user who adds the row.
    """

    form = TenantOwnedAdminForm
    # Date and time inputs with labels (core.admin_labels).
    formfield_overrides = LABELLED_FORMFIELDS
    tenant_field = "tenant"
    view_roles: Collection[str] = ALL_ROLES
    edit_roles: Collection[str] = CONTENT_EDITOR_ROLES
    manager_name: str | None = None
    readonly_fields: ClassVar[tuple[str, ...]] = TIMESTAMP_FIELDS
    change_readonly_fields: tuple[str, ...] = ("tenant",)
    add_fields: tuple[str, ...] | None = None
    autocomplete_fields: ClassVar[tuple[str, ...]] = ("tenant",)
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
            if set(ALL_ROLES) <= set(self.view_roles):
                # Any staff member gets the changelist; get_queryset decides what is in it.
                return request.user.is_active and request.user.is_staff
            # A list for some roles only (an audit log, retention): the others are refused
            # it (403, and no menu entry) rather than shown an empty list.
            return is_superuser(request) or bool(tenants_with_role(request, self.view_roles))
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
        form.request = request  # type: ignore[attr-defined]  # TenantOwnedAdminForm declares it
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
        initial: dict[str, object] = {}
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
            try:
                self.update_object(request, obj, form)
            except ValidationError as error:
                raise CreateRefused(error) from error
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

    def update_object(self, request: HttpRequest, obj: Model, form) -> Model:
        """Write the change form's edits: the fields it changed, through core's
        model_update. An admin whose model has an update service calls that instead."""
        columns = {field.name for field in obj._meta.concrete_fields}
        edited = [name for name in form.changed_data if name in columns]
        return model_update(instance=obj, data={name: getattr(obj, name) for name in edited})

    # Actions ------------------------------------------------------------------------

    def writable(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """The part of a selection the user may change (for custom bulk actions)."""
        return self.restrict_to_tenants(request, queryset, self.edit_roles)

    def apply_to_selection(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable[[Any], object],  # takes a row of this admin's model
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
