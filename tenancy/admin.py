"""Admin for users, tenants and memberships.

Rights (see tenancy.admin_roles): superusers manage everything. A staff member sees the tenants
they belong to; owners and admins of a tenant may change it and manage its memberships
(only an owner may grant, change or remove the owner role). Only superusers manage
users: a staff member sees their own user row, read-only, and may change their own
password through the admin's "Change password" page. Memberships are added and their
roles changed through tenancy.services.membership_set, also from the inlines of a user's
and a tenant's page.
"""

from __future__ import annotations

from typing import ClassVar

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.db.models import Q
from django.http import Http404

from core.admin_labels import LabelledRowsFormSet
from core.services import model_update
from tenancy import admin_audit  # noqa: F401  (registers the audit logs)
from tenancy.admin_base import AuditHistoryMixin, TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import (
    TENANT_MANAGER_ROLES,
    TenantListFilter,
    is_autocomplete,
    is_superuser,
    member_users,
    tenant_roles,
    tenants_with_role,
)
from tenancy.models import Membership, MembershipRole, Tenant, User
from tenancy.services import membership_set, tenant_create

# Tenant roles replace Django's groups and permissions, which this user model does not have.
if admin.site.is_registered(Group):
    admin.site.unregister(Group)


class UserCreationAdminForm(AdminUserCreationForm):
    """Django's user creation form (password set and validated) for the email login."""

    class Meta:
        model = User
        fields = ("email", "name")
        field_classes: dict[str, type[forms.Field]] = {}


class UserChangeAdminForm(UserChangeForm):
    """Django's user change form (read-only password hash) for the email login."""

    class Meta:
        model = User
        fields = "__all__"
        field_classes: dict[str, type[forms.Field]] = {}


class MembershipInlineForm(forms.ModelForm):
    """An inline membership row: its tenant and user are fixed once it exists.

    membership_set keys on (tenant, user), so pointing a row at another user would add a
    membership rather than move this one: remove the row and add a new one instead.
    """

    def clean(self):
        cleaned_data = super().clean()
        if not self.instance._state.adding:
            for name in ("tenant", "user"):
                if name in self.changed_data:
                    self.add_error(name, "Remove this membership and add a new one instead.")
        return cleaned_data


def save_membership_formset(formset) -> None:
    """Save a membership inline: adds and role changes go through membership_set.

    Removals delete the row (tenancy.services has no removal service).
    """
    memberships = formset.save(commit=False)  # also fills new/changed/deleted_objects
    for membership in formset.deleted_objects:
        membership.delete()
    for membership in memberships:
        membership_set(tenant=membership.tenant, user=membership.user, role=membership.role)


class MembershipInlineSaving(admin.ModelAdmin):
    """For a ModelAdmin with a membership inline: saves it through save_membership_formset."""

    def save_formset(self, request, form, formset, change):
        if formset.model is Membership:
            save_membership_formset(formset)
        else:
            super().save_formset(request, form, formset, change)


class UserMembershipInline(admin.TabularInline):
    """A user's memberships; the inline's rights come from User.has_perm (superusers)."""

    model = Membership
    form = MembershipInlineForm
    formset = LabelledRowsFormSet  # each row's role and Delete box named (core.admin_labels)
    fk_name = "user"
    extra = 0
    autocomplete_fields = ("tenant",)
    readonly_fields = ("created_at",)


@admin.register(User)
class UserAdmin(AuditHistoryMixin, MembershipInlineSaving, DjangoUserAdmin):
    fieldsets = (
        (None, {"fields": ("id", "email", "password")}),
        ("Profile", {"fields": ("name", "profile_data")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser")}),
        ("Important dates", {"fields": ("last_login", "created_at", "updated_at")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "name", "usable_password", "password1", "password2"),
            },
        ),
    )
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    list_display = ("email", "name", "is_active", "is_staff", "is_superuser", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser")
    search_fields = ("email", "name")
    ordering = ("email",)
    filter_horizontal = ()
    readonly_fields = ("id", "last_login", "created_at", "updated_at")
    date_hierarchy = "created_at"
    inlines = (UserMembershipInline,)

    def get_inlines(self, request, obj):
        # Memberships come after the user exists, like the rest of the change form.
        return self.inlines if obj is not None else ()

    def save_model(self, request, obj, form, change):
        # Edits go through the plain update service: only the fields the form changed are
        # validated and written. A new user is Django's form save (the password hashed);
        # a password change has its own view and form.
        if not change:
            return super().save_model(request, obj, form, change)
        fields = {field.name for field in User._meta.concrete_fields}
        model_update(
            instance=obj,
            data={name: form.cleaned_data[name] for name in form.changed_data if name in fields},
        )

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if is_superuser(request):
            return queryset
        return queryset.filter(self._visible_to_staff(request))

    @staticmethod
    def _visible_to_staff(request) -> Q:
        """A staff member's own row; for autocomplete, also the members of their tenants.

        An owner or admin choosing the user of a new membership also finds an existing
        user by typing their exact email: inviting needs no directory of all users.
        """
        visible = Q(pk=request.user.pk)
        if not is_autocomplete(request):
            return visible
        visible |= Q(pk__in=member_users(tenant_roles(request).keys()).values("pk"))
        source = (request.GET.get("app_label"), request.GET.get("model_name"))
        term = request.GET.get("term", "").strip()
        if (
            source == ("tenancy", "membership")
            and request.GET.get("field_name") == "user"
            and term
            and tenants_with_role(request, TENANT_MANAGER_ROLES)
        ):
            visible |= Q(pk__in=User.objects.with_email(term).values("pk"))
        return visible

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No user with that id.")
        return obj

    def has_view_permission(self, request, obj=None):
        if is_superuser(request):
            return True
        return request.user.is_staff and (obj is None or obj.pk == request.user.pk)

    def has_add_permission(self, request):
        return is_superuser(request)

    def has_change_permission(self, request, obj=None):
        return is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)


class TenantMembershipInline(admin.TabularInline):
    """A tenant's members; superusers only (User.has_perm), others use the Membership admin."""

    model = Membership
    form = MembershipInlineForm
    formset = LabelledRowsFormSet  # each row's role and Delete box named (core.admin_labels)
    fk_name = "tenant"
    extra = 0
    autocomplete_fields = ("user",)
    readonly_fields = ("created_at",)


@admin.register(Tenant)
class TenantAdmin(MembershipInlineSaving, TenantOwnedAdmin):
    tenant_field = "pk"
    edit_roles = TENANT_MANAGER_ROLES
    change_readonly_fields = ()
    autocomplete_fields: ClassVar[tuple[str, ...]] = ()
    list_display = ("name", "slug", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    ordering = ("name",)
    inlines = (TenantMembershipInline,)
    add_fields = ("name", "slug", "settings")

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        # Deactivating a tenant locks its members out: an operator's decision.
        return readonly if is_superuser(request) else (*readonly, "is_active")

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def create_object(self, request, obj, form):
        return tenant_create(name=obj.name, slug=obj.slug, settings=obj.settings)

    def has_add_permission(self, request):
        # A new tenant has no members yet, so only a superuser could reach it.
        return is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)


class MembershipAdminForm(TenantOwnedAdminForm):
    def clean(self):
        cleaned_data = super().clean()
        tenant = cleaned_data.get("tenant") or getattr(self.instance, "tenant", None)
        if (
            cleaned_data.get("role") == MembershipRole.OWNER
            and tenant is not None
            # Without the admin's request nobody is known to be an owner.
            and (
                self.request is None
                or (
                    not is_superuser(self.request)
                    and tenant_roles(self.request).get(tenant.pk) != MembershipRole.OWNER
                )
            )
        ):
            self.add_error("role", "Only an owner of the tenant may grant the owner role.")
        return cleaned_data


@admin.register(Membership)
class MembershipAdmin(TenantOwnedAdmin):
    form = MembershipAdminForm
    edit_roles = TENANT_MANAGER_ROLES
    list_display = ("user", "tenant", "role", "created_at")
    # The membership opens from its role; user and tenant open theirs.
    list_display_links = ("role",)
    list_filter = ("role", TenantListFilter)
    search_fields = ("user__email", "user__name", "tenant__name", "tenant__slug")
    uuid_search_fields = ("id", "tenant_id", "user_id")
    autocomplete_fields = ("tenant", "user")
    change_readonly_fields = ("tenant", "user")
    list_select_related = ("user", "tenant")
    ordering = ("tenant__name", "user__email")

    def has_change_permission(self, request, obj=None):
        if not super().has_change_permission(request, obj):
            return False
        # Only an owner may touch an owner's membership.
        return (
            obj is None
            or obj.role != MembershipRole.OWNER
            or is_superuser(request)
            or tenant_roles(request).get(obj.tenant_id) == MembershipRole.OWNER
        )

    def create_object(self, request, obj, form):
        return membership_set(tenant=obj.tenant, user=obj.user, role=obj.role)

    def update_object(self, request, obj, form):
        # The role is all that changes here (tenant and user are read-only).
        return membership_set(tenant=obj.tenant, user=obj.user, role=obj.role)

    def foreign_key_choices(self, db_field, request):
        if db_field.name == "user":
            # Any existing user may be added to a tenant; the autocomplete only offers
            # members and exact-email matches (UserAdmin._visible_to_staff).
            return User.objects.all()
        return super().foreign_key_choices(db_field, request)
